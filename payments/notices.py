"""What the customer and the operators are told about an order, and when.

Every function here is called INSIDE the caller's transaction.atomic(), next to the
state change that causes the message: the outbox rows commit (or roll back) with it.
One dedupe key per (order, event, channel), so duplicate or concurrent webhooks
enqueue each message once. Rendering happens here, once; notifications stores the
result and knows nothing of orders.

A message that cannot be enqueued (a malformed phone number, say) is logged as an
error and skipped: it must never abort the payment transaction around it. A message
that cannot be rendered (a broken template, a COURSE_ACCESS_URL with an unknown
placeholder) is a configuration error and does raise: the transaction rolls back and
the event is kept for a retry, rather than a paid customer silently never getting the
access link. The start-up checks (buatfilm/checks.py, E014/E015) render every message
once with sample data, so such a configuration refuses to start instead.
"""

import hashlib
import logging

from django.conf import settings
from django.urls import NoReverseMatch, reverse

from common.money import rupiah_format
from entitlements.services import access_link_build
from notifications.models import Notification
from notifications.rendering import email_render, whatsapp_render
from notifications.services import NotificationInputError, OutboxMessage, alert_enqueue, notification_enqueue_many
from payments.models import PaymentEvent

logger = logging.getLogger(__name__)

EMAIL = Notification.Channel.EMAIL
WHATSAPP = Notification.Channel.WHATSAPP

# Midtrans' bank codes as customers know them.
_BANK_LABELS = {
    "bca": "BCA",
    "bni": "BNI",
    "bri": "BRI",
    "cimb": "CIMB Niaga",
    "permata": "Permata",
    "mandiri": "Mandiri",
    "danamon": "Danamon",
    "bsi": "BSI",
    "seabank": "SeaBank",
}


def _dedupe_key(order_id: str, event: str, channel: str) -> str:
    return f"order:{order_id}:{event}:{channel}"


def _order_context(order) -> dict:
    return {
        "customer_name": order.customer_name,
        "order_id": order.id,
        "package_name": order.package.name,
        "amount": rupiah_format(order.amount),
        "expires_at": order.expires_at,
    }


def _message(*, order_id: str, **fields) -> OutboxMessage | None:
    """The message, or None (logged) when its input is bad: a malformed phone number must not
    cost the customer the email, nor abort the payment transaction."""
    try:
        return OutboxMessage(reference=order_id, **fields)
    except NotificationInputError as exc:
        extra = {"order_id": order_id, "template": fields["template"], "channel": fields["channel"]}
        logger.error("notice_skipped", extra=extra | {"error": str(exc)})
        return None


def _email(*, order_id: str, template: str, event: str, recipient: str, context: dict) -> OutboxMessage | None:
    rendered = email_render(template=template, context=context)
    return _message(
        order_id=order_id,
        channel=EMAIL,
        template=template,
        recipient=recipient,
        subject=rendered.subject,
        body_text=rendered.body_text,
        body_html=rendered.body_html,
        dedupe_key=_dedupe_key(order_id, event, EMAIL),
    )


def _whatsapp(
    *, order_id: str, template: str, event: str, recipient: str, context: dict, params: list
) -> OutboxMessage | None:
    return _message(
        order_id=order_id,
        channel=WHATSAPP,
        template=template,
        recipient=recipient,
        subject="",
        body_text=whatsapp_render(template=template, context=context),
        dedupe_key=_dedupe_key(order_id, event, WHATSAPP),
        template_params=tuple(str(p) for p in params),
    )


def _enqueue(*messages: OutboxMessage | None) -> None:
    # One INSERT for all of a notice's messages, and one kick after the commit.
    notification_enqueue_many(messages=[m for m in messages if m is not None])


def _bank_label(attempt) -> str:
    """The bank of the attempt's virtual account, from the latest Midtrans payload that names it.

    Looked up by Midtrans order id, not the event's foreign key: the webhook calls this while
    the event that brought the number is still being linked to its attempt."""
    events = PaymentEvent.objects.filter(midtrans_order_id=attempt.midtrans_order_id).order_by("-received_at")
    for event in events[:5]:
        for payload in (event.confirmed_payload or {}, event.payload or {}):
            for entry in payload.get("va_numbers") or []:
                if isinstance(entry, dict) and entry.get("va_number") == attempt.va_number and entry.get("bank"):
                    return _BANK_LABELS.get(str(entry["bank"]).lower(), str(entry["bank"]).upper())
            if payload.get("permata_va_number") == attempt.va_number:
                return _BANK_LABELS["permata"]
            if payload.get("bill_key") == attempt.va_number:
                return _BANK_LABELS["mandiri"]
    return ""


def notice_payment_instructions(*, order, attempt) -> None:
    """Email + WhatsApp: how to pay. Sent when the order becomes payable (the payment link),
    and once more when a pending notification brings a virtual account number."""
    va_number = attempt.va_number or ""
    event = f"payment_instructions:{attempt.number}" + (":va" if va_number else "")
    context = _order_context(order) | {
        "payment_url": attempt.redirect_url,
        "va_number": va_number,
        "bank": _bank_label(attempt) if va_number else "",
    }
    how_to_pay = (
        " ".join(filter(None, ["Virtual Account", context["bank"], va_number])) if va_number else attempt.redirect_url
    )
    template = "payment_instructions"
    _enqueue(
        _email(order_id=order.id, template=template, event=event, recipient=order.customer_email, context=context),
        _whatsapp(
            order_id=order.id,
            template=template,
            event=event,
            recipient=order.customer_phone,
            context=context,
            params=[order.customer_name, order.id, context["amount"], how_to_pay],
        ),
    )


def notice_paid(*, order, event: str = "paid", sale_notice: bool = True) -> None:
    """Email + WhatsApp "pembayaran diterima" with the course access link; once per order
    (and once per operator's "Resend access", which passes its own `event`). `sale_notice`
    False: no "new sale" email to the operators (the backfill for orders paid long ago)."""
    access_link = access_link_build(email=order.customer_email, course_code=order.package.course_code)
    context = _order_context(order) | {"access_link": access_link}
    template = "payment_received"
    _enqueue(
        _email(order_id=order.id, template=template, event=event, recipient=order.customer_email, context=context),
        _whatsapp(
            order_id=order.id,
            template=template,
            event=event,
            recipient=order.customer_phone,
            context=context,
            params=[order.customer_name, order.id, context["amount"], access_link],
        ),
    )
    if event == "paid" and sale_notice:
        notice_sale(order=order)


def notice_sale(*, order) -> None:
    """The optional "new sale" email to SALE_NOTICE_EMAILS; once per order and address."""
    if not settings.SALE_NOTICE_EMAILS:
        return
    context = _order_context(order) | {"admin_url": _admin_order_url(order.id)}
    rendered = email_render(template="sale_notice", context=context)
    _enqueue(
        *(
            _message(
                order_id=order.id,
                channel=EMAIL,
                template="sale_notice",
                recipient=recipient,
                subject=rendered.subject,
                body_text=rendered.body_text,
                body_html=rendered.body_html,
                dedupe_key=f"order:{order.id}:sale_notice:{hashlib.sha256(recipient.encode()).hexdigest()[:16]}",
            )
            for recipient in settings.SALE_NOTICE_EMAILS
        )
    )


def notice_sales_summary(*, summary, recipients: list[str]) -> None:
    """The daily sales summary to the owners; once per day and address."""
    context = {
        "day": summary.day,
        "orders_paid": summary.orders_paid,
        "revenue": rupiah_format(summary.revenue),
        "refunds": summary.refunds,
        "refunded": rupiah_format(summary.refunded),
        "net": rupiah_format(summary.net),
        "open_reviews": summary.open_reviews,
        "admin_url": f"{settings.PUBLIC_BASE_URL}/admin/payments/order/?review=open",
    }
    rendered = email_render(template="sales_summary", context=context)
    day = summary.day.isoformat()
    _enqueue(
        *(
            _message(
                order_id="",
                channel=EMAIL,
                template="sales_summary",
                recipient=recipient,
                subject=rendered.subject,
                body_text=rendered.body_text,
                body_html=rendered.body_html,
                dedupe_key=f"sales_summary:{day}:{hashlib.sha256(recipient.encode()).hexdigest()[:16]}",
            )
            for recipient in recipients
        )
    )


def notice_expired(*, order) -> None:
    """Email: the order expired, and where to buy again."""
    context = _order_context(order) | {"shop_url": f"{settings.PUBLIC_BASE_URL}/"}
    _enqueue(
        _email(
            order_id=order.id,
            template="order_expired",
            event="expired",
            recipient=order.customer_email,
            context=context,
        )
    )


def notice_refunded(*, order, refund=None) -> None:
    """Email + WhatsApp: a refund was processed.

    With `refund` (one of ours, confirmed): once per refund, for its amount; this also covers
    the refund of a double payment, which leaves the order's own total unchanged. Without
    (a refund made in Midtrans' dashboard): once per refunded total, so a partial then a
    full refund each tell the customer once."""
    amount = refund.amount if refund is not None else order.refunded_amount
    event = f"refund:{refund.refund_key}" if refund is not None else f"refunded:{order.refunded_amount}"
    context = _order_context(order) | {
        "refunded_amount": rupiah_format(amount),
        "fully_refunded": order.refunded_amount >= order.amount,
    }
    template = "refund_processed"
    _enqueue(
        _email(order_id=order.id, template=template, event=event, recipient=order.customer_email, context=context),
        _whatsapp(
            order_id=order.id,
            template=template,
            event=event,
            recipient=order.customer_phone,
            context=context,
            params=[order.customer_name, order.id, context["refunded_amount"]],
        ),
    )


def _admin_order_url(order_id: str) -> str:
    try:
        return settings.PUBLIC_BASE_URL + reverse("admin:payments_order_change", args=[order_id])
    except NoReverseMatch:
        return f"{settings.PUBLIC_BASE_URL}/admin/"


def notice_alert(*, order_id: str, subject: str, body: str) -> None:
    """Email the operators (ALERT_EMAILS). The same alert (order, subject, body) is sent once
    however often the cause repeats (duplicate webhooks, sweeps)."""
    logger.warning("operator_alert", extra={"order_id": order_id, "subject": subject})
    context = {"order_id": order_id, "subject": subject, "body": body, "admin_url": _admin_order_url(order_id)}
    digest = hashlib.sha256(f"{subject}\n{body}".encode()).hexdigest()[:24]
    alert_enqueue(
        template="operator_alert", context=context, dedupe_key=f"alert:{order_id}:{digest}", reference=order_id
    )
