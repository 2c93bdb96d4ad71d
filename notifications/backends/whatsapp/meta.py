"""WhatsApp Cloud API (Meta Graph API): template messages.

Business-initiated messages outside the 24-hour customer-service window must be
pre-approved templates, so a message with `template_params` is sent as the template
named like the notification (e.g. `payment_received`) in WHATSAPP_META_TEMPLATE_LANGUAGE,
with the parameters as its body variables {{1}}, {{2}}, ... A message without
parameters is sent as plain text (accepted only inside the 24-hour window).

Errors are classified by Meta's error `code` first, then by the HTTP status:
https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes
"""

import requests
from django.conf import settings

from notifications.backends import PermanentError, TransientError
from notifications.backends.whatsapp import e164_digits

# Throttling, temporary outages and "try again later" answers.
TRANSIENT_CODES = {
    1,  # API unknown
    2,  # API service (temporary downtime)
    4,  # API too many calls
    17,  # API user too many calls
    341,  # application limit reached
    80007,  # WhatsApp Business Account rate limit
    130429,  # Cloud API throughput reached
    131000,  # something went wrong
    131016,  # service unavailable
    131048,  # spam rate limit hit
    131056,  # (business, consumer) pair rate limit hit
    131057,  # business account in maintenance mode
    133004,  # server temporarily unavailable
}
# The message will never go out as it is: bad token or permissions, invalid recipient
# or parameters, template missing/paused, re-engagement window closed, blocked account.
PERMANENT_CODES = {
    0,  # AuthException
    3,  # capability or permissions issue
    10,  # permission denied
    100,  # invalid parameter
    190,  # access token expired
    368,  # temporarily blocked for policy violations
    131008,  # required parameter missing
    131009,  # parameter value invalid
    131021,  # recipient cannot be sender
    131026,  # message undeliverable (no WhatsApp, old version, ...)
    131031,  # account locked
    131042,  # business eligibility payment issue
    131045,  # incorrect certificate
    131047,  # re-engagement message (outside the 24-hour window)
    131051,  # unsupported message type
    131052,  # media download error
    131053,  # media upload error
    132000,  # template parameter count mismatch
    132001,  # template does not exist
    132005,  # translated text too long
    132007,  # template format character policy violated
    132012,  # template parameter format mismatch
    132015,  # template paused
    132016,  # template disabled
    133010,  # phone number not registered
}


def _retry_after(response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _payload(notification) -> dict:
    to = e164_digits(notification.recipient)
    if notification.template_params:
        return {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": {
                "name": notification.template,
                "language": {"code": settings.WHATSAPP_META_TEMPLATE_LANGUAGE},
                "components": [
                    {"type": "body", "parameters": [{"type": "text", "text": p} for p in notification.template_params]}
                ],
            },
        }
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"preview_url": True, "body": notification.body_text},
    }


def send(*, notification) -> str:
    if not settings.WHATSAPP_META_TOKEN or not settings.WHATSAPP_META_PHONE_NUMBER_ID:
        raise PermanentError(
            "WHATSAPP_META_TOKEN and WHATSAPP_META_PHONE_NUMBER_ID must be set for WHATSAPP_BACKEND=meta"
        )
    url = f"{settings.WHATSAPP_META_API_URL.rstrip('/')}/{settings.WHATSAPP_META_PHONE_NUMBER_ID}/messages"
    try:
        response = requests.post(
            url,
            json=_payload(notification),
            headers={"Authorization": f"Bearer {settings.WHATSAPP_META_TOKEN}"},
            timeout=(min(3.05, settings.WHATSAPP_TIMEOUT), settings.WHATSAPP_TIMEOUT),
        )
    except requests.RequestException as exc:
        raise TransientError(f"Meta unreachable: {type(exc).__name__}: {exc}") from exc

    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if response.ok:
        messages = body.get("messages") or []
        if messages and isinstance(messages[0], dict) and messages[0].get("id"):
            return str(messages[0]["id"])
        raise TransientError(f"Meta answered {response.status_code} without a message id")

    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    try:
        code = int(error.get("code"))
    except (TypeError, ValueError):
        code = None
    details = (error.get("error_data") or {}).get("details", "") if isinstance(error.get("error_data"), dict) else ""
    text = (
        f"Meta HTTP {response.status_code} code {code}: {error.get('message', response.text[:200])} {details}".strip()
    )
    retry_after = _retry_after(response)
    if code in TRANSIENT_CODES:
        raise TransientError(text, retry_after=retry_after)
    if code in PERMANENT_CODES:
        raise PermanentError(text)
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientError(text, retry_after=retry_after)
    raise PermanentError(text)
