"""Channel backends: one module per outside party, each with timeouts on every call.

A backend's `send(notification)` returns the provider's message id, or raises
TransientError (try again later, optionally not before `retry_after` seconds) or
PermanentError (retrying cannot help: the message becomes a dead letter).
"""


class DeliveryError(Exception):
    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class TransientError(DeliveryError):
    """The provider may accept the same message later (timeouts, 4xx SMTP, 429, 5xx)."""


class PermanentError(DeliveryError):
    """The provider will never accept this message as it is (5xx SMTP, refused recipient, bad number)."""


def channel_send(*, notification) -> str:
    """Send one rendered message through its channel's configured backend; return the provider's id."""
    from notifications.backends import email, whatsapp

    if notification.channel == "email":
        return email.email_send(notification=notification)
    if notification.channel == "whatsapp":
        return whatsapp.whatsapp_send(notification=notification)
    raise PermanentError(f"unknown channel {notification.channel!r}")
