"""Fonnte (api.fonnte.com): plain text messages through a linked WhatsApp device.

Fonnte answers most failures with HTTP 200 and `{"status": false, "reason": "..."}`,
so success is `"status": true`, never the HTTP status alone. The number is sent with
its country code and `countryCode=0`, which turns off Fonnte's leading-zero rewrite.
"""

import requests
from django.conf import settings

from notifications.backends import PermanentError, TransientError
from notifications.backends.whatsapp import e164_digits

# Fonnte's reasons are free text, matched case-insensitively as phrases, never single words:
# "request invalid on disconnected device" contains "invalid" yet only needs the device
# reconnected. Transient phrases are matched FIRST, so a reason naming both wins as transient.
# The operator or Fonnte fixes these; the message waits for its next try.
TRANSIENT_REASONS = (
    "disconnect",  # "device disconnected", "request invalid on disconnected device"
    "not connected",
    "quota",  # "insufficient quota", "quota exceeded"
    "rate limit",
    "too many",
    "try again",
    "please wait",
    "timeout",
)
# Reasons that no retry can fix: the token, the target number, or our request itself.
PERMANENT_REASONS = (
    "invalid token",
    "token invalid",
    "unknown user",
    "invalid device",
    "target invalid",
    "invalid target",
    "not registered",  # the number has no WhatsApp account
    "not exist",
    "required",  # "target required", "message required": our request is malformed
)


def reason_classify(reason: str) -> str:
    """Classify a Fonnte failure reason as "transient" or "permanent".

    Unknown reasons are transient: the retry schedule is bounded, so an unknown permanent
    one still ends as a dead letter, while a wrongly permanent one would lose the message."""
    text = " ".join(reason.lower().split())
    if any(phrase in text for phrase in TRANSIENT_REASONS):
        return "transient"
    if any(phrase in text for phrase in PERMANENT_REASONS):
        return "permanent"
    return "transient"


def send(*, notification) -> str:
    if not settings.WHATSAPP_FONNTE_TOKEN:
        raise PermanentError("WHATSAPP_FONNTE_TOKEN must be set for WHATSAPP_BACKEND=fonnte")
    try:
        response = requests.post(
            settings.WHATSAPP_FONNTE_API_URL,
            data={"target": e164_digits(notification.recipient), "message": notification.body_text, "countryCode": "0"},
            headers={"Authorization": settings.WHATSAPP_FONNTE_TOKEN},
            timeout=(min(3.05, settings.WHATSAPP_TIMEOUT), settings.WHATSAPP_TIMEOUT),
        )
    except requests.RequestException as exc:
        raise TransientError(f"Fonnte unreachable: {type(exc).__name__}: {exc}") from exc

    retry_after = None
    if response.headers.get("Retry-After"):
        try:
            retry_after = float(response.headers["Retry-After"])
        except ValueError:
            retry_after = None
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientError(f"Fonnte HTTP {response.status_code}", retry_after=retry_after)
    try:
        body = response.json()
    except ValueError:
        raise TransientError(f"Fonnte HTTP {response.status_code} answered non-JSON: {response.text[:200]}") from None
    if not isinstance(body, dict):
        raise TransientError(f"Fonnte HTTP {response.status_code} answered {body!r:.200}")
    if body.get("status") is True:
        ids = body.get("id") or []
        return str(ids[0] if isinstance(ids, list) and ids else ids or body.get("requestid", ""))
    reason = str(body.get("reason") or body.get("detail") or "no reason given")
    text = f"Fonnte HTTP {response.status_code}: {reason}"
    if response.status_code in (401, 403) or reason_classify(reason) == "permanent":
        raise PermanentError(text)
    raise TransientError(text, retry_after=retry_after)
