"""POST /webhooks/midtrans: Midtrans' HTTP notification.

Thin on purpose: parse, verify, hand to payments.services.events, map the outcome to the
answer Midtrans' retry policy needs (reference §3): 200 recorded (new, duplicate, stale,
orphan); 400 malformed (2 retries); 401 bad signature (nothing stored); 503 transient
(4 retries, and the event stays recorded for the sweep), also for anything unexpected.
Never a redirect, never a 500.
"""

import json
import logging

from django.conf import settings
from django.db import DatabaseError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from common.errors import error_response
from common.metrics import webhook_outcomes_total, webhook_rejected_total
from payments import midtrans
from payments.services.events import EventDeferred, EventProcessingFailed, notification_receive

logger = logging.getLogger(__name__)

# Fields without which a notification cannot be verified or applied (all strings, verbatim).
REQUIRED_FIELDS = ("order_id", "status_code", "gross_amount", "transaction_status")
RETRY_AFTER_SECONDS = "60"


def _error(status: int, code: str, message: str, fields: dict | None = None) -> JsonResponse:
    response = error_response(status, code, message, fields)
    if status == 503:
        response["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def _reject(request, *, status: int, reason: str, code: str, message: str, order_id: str = "", fields=None):
    webhook_rejected_total.labels(reason=reason).inc()
    logger.warning(
        "webhook_rejected",
        extra={
            "reason": reason,
            "midtrans_order_id": order_id,
            "remote_addr": request.META.get("REMOTE_ADDR", ""),
            "user_agent": request.headers.get("User-Agent", "")[:200],
        },
    )
    return _error(status, code, message, fields)


@csrf_exempt
@require_POST
def midtrans_notification(request):
    response = _notification_answer(request)
    webhook_outcomes_total.labels(result=_outcome_label(response)).inc()
    return response


def _outcome_label(response) -> str:
    if response.status_code == 200:
        return json.loads(response.content).get("result", "applied")
    return "unavailable" if response.status_code == 503 else "rejected"


def _notification_answer(request):
    try:
        return _notification_handle(request)
    except Exception:
        # Anything unexpected (a bug, a library raising what we did not foresee) must not be a
        # 500: Midtrans retries a 500 once, a 503 four times, and the sweep picks up whatever
        # was recorded. The traceback goes to the log.
        logger.exception(
            "webhook_unexpected_error",
            extra={"midtrans_order_id": _claimed_order_id(request), "remote_addr": request.META.get("REMOTE_ADDR", "")},
        )
        return _error(503, "internal_error", "The notification could not be handled now; retry later.")


def _claimed_order_id(request) -> str:
    try:
        payload = json.loads(request.body)
    except Exception:
        return ""
    order_id = payload.get("order_id") if isinstance(payload, dict) else None
    return order_id[:50] if _is_text(order_id) else ""


def _notification_handle(request):
    try:
        payload = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return _reject(
            request, status=400, reason="malformed", code="invalid_request", message="Body must be a JSON object."
        )
    if not isinstance(payload, dict):
        return _reject(
            request, status=400, reason="malformed", code="invalid_request", message="Body must be a JSON object."
        )
    missing = {name: ["Required (a non-empty string)."] for name in REQUIRED_FIELDS if not _is_text(payload.get(name))}
    claimed_order_id = payload.get("order_id") if _is_text(payload.get("order_id")) else ""
    if missing:
        return _reject(
            request,
            status=400,
            reason="malformed",
            code="invalid_request",
            message="Required notification fields are missing.",
            fields=missing,
            order_id=claimed_order_id,
        )
    if not settings.MIDTRANS_SERVER_KEY:
        # Fail closed: without the key nothing can be verified, so nothing is believed.
        logger.error("webhook_no_server_key", extra={"midtrans_order_id": claimed_order_id})
        return _reject(
            request,
            status=401,
            reason="no_server_key",
            code="invalid_signature",
            message="Notifications cannot be verified.",
            order_id=claimed_order_id,
        )
    if not midtrans.signature_verify(payload=payload):
        return _reject(
            request,
            status=401,
            reason="bad_signature" if payload.get("signature_key") else "missing_signature",
            code="invalid_signature",
            message="signature_key is missing or wrong.",
            order_id=claimed_order_id,
        )

    try:
        outcome = notification_receive(payload=payload)
    except EventDeferred:
        return _error(503, "payment_gateway_unavailable", "Midtrans status could not be confirmed; retry later.")
    except EventProcessingFailed:
        return _error(503, "processing_failed", "The notification was recorded but could not be applied yet.")
    except DatabaseError:
        logger.exception("webhook_database_unavailable", extra={"midtrans_order_id": claimed_order_id})
        return _error(503, "database_unavailable", "Temporarily unable to record the notification.")
    return JsonResponse({"status": "ok", "result": str(outcome.result)})


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())
