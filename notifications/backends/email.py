"""Email through Django's email backends (EMAIL_URL: SMTP in production, console/file/memory elsewhere).

SMTP replies are classified by their code: 4xx and network trouble are transient,
5xx (including refused recipients) permanent. The SMTP backend's socket timeout is
EMAIL_TIMEOUT, so no call waits forever.
"""

import smtplib
import ssl

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.message import make_msgid

from notifications.backends import PermanentError, TransientError


def _classify_code(code: int, text: str) -> Exception:
    if 400 <= code < 500:
        return TransientError(f"SMTP {code}: {text}")
    return PermanentError(f"SMTP {code}: {text}")


def _reply_text(raw) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def email_send(*, notification) -> str:
    message_id = make_msgid(domain="buatfilm.notifications")
    message = EmailMultiAlternatives(
        subject=notification.subject,
        body=notification.body_text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[notification.recipient],
        headers={"Message-ID": message_id, "X-Notification-Id": str(notification.pk)},
        connection=get_connection(fail_silently=False, timeout=settings.EMAIL_TIMEOUT),
    )
    if notification.body_html:
        message.attach_alternative(notification.body_html, "text/html")
    try:
        sent = message.send(fail_silently=False)
    except smtplib.SMTPRecipientsRefused as exc:
        # {recipient: (code, reply)}; a 4xx here is greylisting or a full mailbox: try again.
        code, reply = next(iter(exc.recipients.values()), (550, b"recipient refused"))
        raise _classify_code(code, f"recipient refused: {_reply_text(reply)}") from exc
    except smtplib.SMTPResponseException as exc:  # sender refused, DATA refused, auth failed, ...
        raise _classify_code(exc.smtp_code, _reply_text(exc.smtp_error)) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentError(f"SMTP server does not support a required extension: {exc}") from exc
    except (smtplib.SMTPException, TimeoutError, ConnectionError, ssl.SSLError, OSError) as exc:
        raise TransientError(f"SMTP unavailable: {type(exc).__name__}: {exc}") from exc
    if sent != 1:
        raise TransientError("the email backend reported no message sent")
    return message_id.strip("<>")
