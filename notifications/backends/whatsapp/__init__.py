"""WhatsApp through a pluggable provider chosen by WHATSAPP_BACKEND: meta, fonnte, console, locmem.

Recipients are stored in E.164 (+6281234567890); each backend converts them to the
form its provider wants.
"""

from django.conf import settings

from notifications.backends import PermanentError


def e164_digits(recipient: str) -> str:
    """+6281234567890 -> 6281234567890 (Meta and Fonnte both want the country code without '+')."""
    return recipient.removeprefix("+")


def whatsapp_send(*, notification) -> str:
    name = settings.WHATSAPP_BACKEND
    if name == "meta":
        from notifications.backends.whatsapp import meta as backend
    elif name == "fonnte":
        from notifications.backends.whatsapp import fonnte as backend
    elif name == "console":
        from notifications.backends.whatsapp import console as backend
    elif name == "locmem":
        from notifications.backends.whatsapp import locmem as backend
    else:
        raise PermanentError(f"WHATSAPP_BACKEND={name!r} is not one of meta, fonnte, console, locmem")
    return backend.send(notification=notification)
