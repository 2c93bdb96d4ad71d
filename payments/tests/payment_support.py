"""Helpers for the webhook, events and reconciliation tests."""

import json

import requests

from entitlements.models import Entitlement
from payments import midtrans
from payments.models import AuditEntry, Order, Package, PaymentAttempt, PaymentEvent
from payments.tests.factories import OrderFactory, PaymentAttemptFactory


def package_for_tests() -> Package:
    # Transactional tests (live_server) flush the launch package from the data migration.
    package, _ = Package.objects.get_or_create(
        id="ai-movie-course", defaults={"name": "Buat Film Pakai AI", "price": 99000, "course_code": "ai-movie-course"}
    )
    return package


def attempt_create(*, order_status=Order.Status.PENDING_PAYMENT, attempt_status=PaymentAttempt.Status.OPEN, **kw):
    order = kw.pop("order", None) or OrderFactory(package=package_for_tests(), status=order_status, **kw)
    number = order.attempts.count() + 1
    return PaymentAttemptFactory(order=order, number=number, status=attempt_status)


def sim_attempt_create(**kw) -> PaymentAttempt:
    """An order with an open attempt whose Snap transaction exists at the simulator (real HTTP)."""
    attempt = attempt_create(**kw)
    snap = midtrans.snap_create(
        payload={
            "transaction_details": {"order_id": attempt.midtrans_order_id, "gross_amount": attempt.amount},
            "customer_details": {"email": attempt.order.customer_email},
        }
    )
    PaymentAttempt.objects.filter(pk=attempt.pk).update(snap_token=snap.token, redirect_url=snap.redirect_url)
    attempt.refresh_from_db()
    return attempt


def webhook_post(base_url: str, body: dict, path: str = "/webhooks/midtrans", timeout: float = 20.0):
    return requests.post(
        f"{base_url}{path}",
        data=json.dumps(body),
        headers={"Content-Type": "application/json", "User-Agent": "Veritrans"},
        timeout=timeout,
    )


def payment_state() -> tuple:
    """Everything a payment event could change."""
    return (
        sorted(Order.objects.values_list("id", "status", "paid_at", "needs_review", "refunded_amount")),
        sorted(PaymentAttempt.objects.values_list("midtrans_order_id", "status", "transaction_id", "va_number")),
        sorted(Entitlement.objects.values_list("order_id", "status")),
        AuditEntry.objects.exclude(action="order_synced_from_midtrans").count(),
    )


def refreshed(attempt: PaymentAttempt) -> tuple[str, str]:
    attempt.refresh_from_db()
    attempt.order.refresh_from_db()
    return attempt.order.status, attempt.status


def events_by_result() -> dict:
    result: dict = {}
    for value in PaymentEvent.objects.values_list("result", flat=True):
        result[value] = result.get(value, 0) + 1
    return result
