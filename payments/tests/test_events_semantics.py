"""Each Midtrans status, sent as a signed notification, does exactly what the design says.

These run with MIDTRANS_CONFIRM_WITH_STATUS_API off, so the notification itself is the
status applied; confirmation against the status API has its own tests.
"""

import itertools
import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from entitlements.models import Entitlement
from notifications.models import Notification
from payments.models import AuditEntry, Order, PaymentAttempt, PaymentEvent
from payments.tests.factories import OrderFactory, PaymentAttemptFactory
from payments.tests.midtrans_payloads import midtrans_body

pytestmark = pytest.mark.django_db

OS = Order.Status
A = PaymentAttempt.Status


@pytest.fixture(autouse=True)
def _apply_notifications_directly(settings):
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = False
    settings.ALERT_EMAILS = ["ops@buatfilm.test"]


def outbox(order):
    """(template, channel) of the messages enqueued for the order, customers and operators."""
    return sorted(Notification.objects.filter(reference=order.pk).values_list("template", "channel"))


def alerts(order):
    return list(
        Notification.objects.filter(reference=order.pk, template="operator_alert").values_list("subject", flat=True)
    )


def send(body: dict, path: str = "/webhooks/midtrans"):
    return Client(enforce_csrf_checks=True).post(path, data=json.dumps(body), content_type="application/json")


def make_attempt(*, order_status=OS.PENDING_PAYMENT, attempt_status=A.OPEN, number=1, order=None, **order_kwargs):
    order = order or OrderFactory(status=order_status, **order_kwargs)
    return PaymentAttemptFactory(order=order, number=number, status=attempt_status)


def state(attempt):
    attempt.refresh_from_db()
    attempt.order.refresh_from_db()
    return attempt.order.status, attempt.status


def entitlements(order):
    return list(Entitlement.objects.filter(order_id=order.pk).values_list("status", flat=True))


def test_settlement_marks_paid_grants_access_and_records_everything():
    # given
    attempt = make_attempt()

    # when
    response = send(midtrans_body(attempt.midtrans_order_id, "settlement", transaction_id="trx-1"))

    # then
    assert response.status_code == 200 and response.json() == {"status": "ok", "result": "applied"}
    assert state(attempt) == (OS.PAID, A.PAID)
    order = attempt.order
    assert order.paid_at is not None and not order.needs_review
    assert (attempt.transaction_id, attempt.payment_type, attempt.va_number, attempt.fraud_status) == (
        "trx-1",
        "bank_transfer",
        "12345678901",
        "accept",
    )
    assert attempt.transaction_status == "settlement"
    assert entitlements(order) == ["active"]
    entitlement = Entitlement.objects.get(order_id=order.pk)
    assert (entitlement.email, entitlement.course_code) == (order.customer_email, order.package.course_code)
    event = PaymentEvent.objects.get()
    assert (event.result, event.attempt_id, event.source) == ("applied", attempt.pk, "webhook")
    assert event.processed_at is not None and event.payload["transaction_id"] == "trx-1"
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"order_status_changed", "attempt_status_changed", "entitlement_granted"} <= actions
    order_audit = AuditEntry.objects.get(action="order_status_changed")
    assert (order_audit.actor, order_audit.object_id) == ("webhook", order.pk)
    assert (order_audit.old_value["status"], order_audit.new_value["status"]) == ("PENDING_PAYMENT", "PAID")
    assert outbox(order) == [("payment_received", "email"), ("payment_received", "whatsapp")]


def test_capture_with_fraud_accept_is_paid():
    attempt = make_attempt()

    send(midtrans_body(attempt.midtrans_order_id, "capture", payment_type="credit_card", fraud_status="accept"))

    assert state(attempt) == (OS.PAID, A.PAID)
    assert entitlements(attempt.order) == ["active"]


def test_capture_with_challenge_is_held_not_paid():
    attempt = make_attempt()

    response = send(
        midtrans_body(attempt.midtrans_order_id, "capture", payment_type="credit_card", fraud_status="challenge")
    )

    assert response.status_code == 200
    assert state(attempt) == (OS.PENDING_PAYMENT, A.CHALLENGE)
    assert attempt.order.needs_review and "challenge" in attempt.order.review_reason
    assert len(alerts(attempt.order)) == 1
    assert attempt.order.paid_at is None
    assert entitlements(attempt.order) == []


def test_pending_makes_the_order_payable_and_stores_the_va_number():
    attempt = make_attempt(order_status=OS.CREATED, attempt_status=A.INITIATED)

    send(midtrans_body(attempt.midtrans_order_id, "pending", va_number="80777000123"))

    assert state(attempt) == (OS.PENDING_PAYMENT, A.PENDING)
    assert attempt.va_number == "80777000123"
    assert entitlements(attempt.order) == []
    assert outbox(attempt.order) == [("payment_instructions", "email"), ("payment_instructions", "whatsapp")]


@pytest.mark.parametrize("midtrans_status", ["deny", "cancel", "failure"])
def test_failure_fails_the_attempt_but_the_order_stays_payable_while_it_has_time(midtrans_status):
    attempt = make_attempt(attempt_status=A.PENDING)

    response = send(midtrans_body(attempt.midtrans_order_id, midtrans_status))

    assert response.status_code == 200
    assert state(attempt) == (OS.PENDING_PAYMENT, A.FAILED)
    assert entitlements(attempt.order) == []


def test_failure_after_the_payment_window_fails_the_order():
    attempt = make_attempt(attempt_status=A.PENDING, expires_at=timezone.now() - timedelta(minutes=1))

    send(midtrans_body(attempt.midtrans_order_id, "deny"))

    assert state(attempt) == (OS.FAILED, A.FAILED)


@pytest.mark.parametrize("status_code", ["407", "202"])
def test_expire_expires_the_attempt_and_the_order(status_code):
    attempt = make_attempt(attempt_status=A.PENDING)

    response = send(midtrans_body(attempt.midtrans_order_id, "expire", status_code=status_code))

    assert response.status_code == 200
    assert state(attempt) == (OS.EXPIRED, A.EXPIRED)
    assert outbox(attempt.order) == [("order_expired", "email")]


def test_expire_keeps_the_order_open_while_another_attempt_is_live():
    first = make_attempt(attempt_status=A.PENDING)
    make_attempt(order=first.order, number=2, attempt_status=A.OPEN)

    send(midtrans_body(first.midtrans_order_id, "expire"))

    assert state(first) == (OS.PENDING_PAYMENT, A.EXPIRED)


@pytest.mark.parametrize("earlier", ["expire", "deny"])
def test_late_success_after_expired_or_failed_is_paid_with_an_alert(earlier):
    attempt = make_attempt(attempt_status=A.PENDING, expires_at=timezone.now() - timedelta(minutes=1))
    send(midtrans_body(attempt.midtrans_order_id, earlier))
    assert state(attempt)[0] in (OS.EXPIRED, OS.FAILED)

    response = send(midtrans_body(attempt.midtrans_order_id, "settlement"))

    assert response.status_code == 200
    assert state(attempt) == (OS.PAID, A.PAID)
    assert attempt.order.needs_review and "Late payment" in attempt.order.review_reason
    assert entitlements(attempt.order) == ["active"]
    assert any("Late payment" in subject for subject in alerts(attempt.order))
    assert ("payment_received", "email") in outbox(attempt.order)


def test_stale_pending_after_settlement_is_recorded_and_ignored():
    attempt = make_attempt()
    send(midtrans_body(attempt.midtrans_order_id, "settlement"))
    paid_at = Order.objects.get(pk=attempt.order_id).paid_at

    response = send(midtrans_body(attempt.midtrans_order_id, "pending"))

    assert response.status_code == 200 and response.json()["result"] == "stale"
    assert state(attempt) == (OS.PAID, A.PAID)
    assert attempt.transaction_status == "settlement"
    assert attempt.order.paid_at == paid_at
    assert PaymentEvent.objects.filter(result="stale").count() == 1


def test_deny_after_settlement_is_a_reversal_not_paid_access_revoked():
    attempt = make_attempt()
    send(midtrans_body(attempt.midtrans_order_id, "settlement"))

    response = send(midtrans_body(attempt.midtrans_order_id, "deny"))

    assert response.status_code == 200
    assert state(attempt) == (OS.FAILED, A.REVERSED)
    assert attempt.order.paid_at is None
    assert attempt.order.needs_review and "reversal" in attempt.order.review_reason
    assert entitlements(attempt.order) == ["revoked"]
    assert any("reversed" in subject for subject in alerts(attempt.order))


def test_partial_refunds_accumulate_without_double_counting_a_repeat():
    attempt = make_attempt()
    send(midtrans_body(attempt.midtrans_order_id, "settlement"))
    first = midtrans_body(
        attempt.midtrans_order_id,
        "partial_refund",
        refund_amount="20000.00",
        refunds=[{"refund_chargeback_id": 1, "refund_amount": "20000.00", "reason": "promo"}],
    )

    send(first)
    send(first)  # Midtrans repeats a notification
    assert state(attempt) == (OS.PARTIALLY_REFUNDED, A.PARTIALLY_REFUNDED)
    assert (attempt.refunded_amount, attempt.order.refunded_amount) == (20000, 20000)

    second = midtrans_body(
        attempt.midtrans_order_id,
        "partial_refund",
        refund_amount="30000.00",
        refunds=[
            {"refund_chargeback_id": 1, "refund_amount": "20000.00"},
            {"refund_chargeback_id": 2, "refund_amount": "10000.00"},
        ],
    )
    send(second)
    send(second)

    assert state(attempt) == (OS.PARTIALLY_REFUNDED, A.PARTIALLY_REFUNDED)
    assert (attempt.refunded_amount, attempt.order.refunded_amount) == (30000, 30000)
    assert entitlements(attempt.order) == ["active"]  # partial refund keeps access by default


def test_partial_refund_revokes_access_when_configured(settings):
    settings.PARTIAL_REFUND_REVOKES_ACCESS = True
    attempt = make_attempt()
    send(midtrans_body(attempt.midtrans_order_id, "settlement"))

    send(midtrans_body(attempt.midtrans_order_id, "partial_refund", refund_amount="10000.00"))

    assert state(attempt) == (OS.PARTIALLY_REFUNDED, A.PARTIALLY_REFUNDED)
    assert entitlements(attempt.order) == ["revoked"]


def test_full_refund_after_a_partial_one_refunds_and_revokes():
    attempt = make_attempt()
    send(midtrans_body(attempt.midtrans_order_id, "settlement"))
    send(midtrans_body(attempt.midtrans_order_id, "partial_refund", refund_amount="20000.00"))

    send(midtrans_body(attempt.midtrans_order_id, "refund", refund_amount="99000.00"))

    assert state(attempt) == (OS.REFUNDED, A.REFUNDED)
    assert (attempt.refunded_amount, attempt.order.refunded_amount) == (99000, 99000)
    assert entitlements(attempt.order) == ["revoked"]
    refund_mails = Notification.objects.filter(reference=attempt.order_id, template="refund_processed", channel="email")
    assert refund_mails.count() == 2  # the partial one, then the full one (each by WhatsApp too)


def test_chargeback_revokes_access():
    attempt = make_attempt(attempt_status=A.PENDING)
    send(midtrans_body(attempt.midtrans_order_id, "capture", payment_type="credit_card"))

    send(midtrans_body(attempt.midtrans_order_id, "chargeback", payment_type="credit_card"))

    assert state(attempt) == (OS.CHARGEBACK, A.CHARGEBACK)
    assert attempt.order.needs_review
    assert any("Chargeback" in subject for subject in alerts(attempt.order))
    assert entitlements(attempt.order) == ["revoked"]


def test_second_successful_attempt_on_a_paid_order_is_a_double_payment():
    first = make_attempt()
    second = make_attempt(order=first.order, number=2)
    send(midtrans_body(first.midtrans_order_id, "settlement"))

    response = send(midtrans_body(second.midtrans_order_id, "settlement"))

    assert response.status_code == 200
    assert state(second) == (OS.PAID, A.PAID)
    assert state(first) == (OS.PAID, A.PAID)
    assert second.order.needs_review and "Double payment" in second.order.review_reason
    assert entitlements(first.order) == ["active"]
    assert any("Double payment" in subject for subject in alerts(first.order))
    assert outbox(first.order).count(("payment_received", "email")) == 1
    assert AuditEntry.objects.filter(action="order_status_changed", object_id=first.order_id).count() == 1


def test_refund_of_the_double_payment_keeps_the_order_paid():
    first = make_attempt()
    second = make_attempt(order=first.order, number=2)
    send(midtrans_body(first.midtrans_order_id, "settlement"))
    send(midtrans_body(second.midtrans_order_id, "settlement"))

    send(midtrans_body(second.midtrans_order_id, "refund", refund_amount="99000.00"))

    assert state(second) == (OS.PAID, A.REFUNDED)
    assert second.order.refunded_amount == 0
    assert entitlements(first.order) == ["active"]


def test_orphan_notification_is_stored_and_answered_200():
    response = send(midtrans_body("BF-20261122-UNKNOWN1-1", "settlement"))

    assert response.status_code == 200 and response.json()["result"] == "orphan"
    event = PaymentEvent.objects.get()
    assert (event.result, event.attempt_id, event.midtrans_order_id) == ("orphan", None, "BF-20261122-UNKNOWN1-1")


def test_duplicate_settlements_have_one_effect():
    attempt = make_attempt()
    body = midtrans_body(attempt.midtrans_order_id, "settlement")

    answers = [send(body).json()["result"] for _ in range(3)]

    assert answers == ["applied", "duplicate", "duplicate"]
    assert PaymentEvent.objects.count() == 1
    assert outbox(attempt.order) == [("payment_received", "email"), ("payment_received", "whatsapp")]
    assert state(attempt) == (OS.PAID, A.PAID)
    assert Entitlement.objects.count() == 1
    assert AuditEntry.objects.filter(action="order_status_changed").count() == 1


@pytest.mark.parametrize("sequence", list(itertools.permutations(["pending", "settlement", "expire"])))
def test_every_order_of_pending_settlement_expire_ends_paid_once(sequence):
    attempt = make_attempt(order_status=OS.CREATED, attempt_status=A.OPEN)

    answers = [send(midtrans_body(attempt.midtrans_order_id, status)).status_code for status in sequence]

    assert answers == [200, 200, 200]
    assert state(attempt) == (OS.PAID, A.PAID)
    assert entitlements(attempt.order) == ["active"]
    paid_transitions = AuditEntry.objects.filter(action="order_status_changed", new_value__status="PAID")
    assert paid_transitions.count() == 1
    # Settlement before the expire: the expire is stale. Expire first: a late payment, flagged.
    assert attempt.order.needs_review == (sequence.index("expire") < sequence.index("settlement"))


def test_amount_mismatch_is_flagged_and_never_paid():
    attempt = make_attempt()

    response = send(midtrans_body(attempt.midtrans_order_id, "settlement", gross_amount="1000.00"))

    assert response.status_code == 200 and response.json()["result"] == "mismatch"
    assert state(attempt) == (OS.PENDING_PAYMENT, A.OPEN)
    assert attempt.order.needs_review and "mismatch" in attempt.order.review_reason.lower()
    assert entitlements(attempt.order) == []


def test_automatic_fee_imposition_compares_the_original_amount():
    attempt = make_attempt()
    metadata = {"extra_info": {"gross_amount_info": {"original_amount": "99000.00", "fee_amount": "4000.00"}}}

    send(midtrans_body(attempt.midtrans_order_id, "settlement", gross_amount="103000.00", metadata=metadata))

    assert state(attempt) == (OS.PAID, A.PAID)


def test_fee_imposition_with_a_wrong_original_amount_is_a_mismatch():
    attempt = make_attempt()
    metadata = {"extra_info": {"gross_amount_info": {"original_amount": "9900.00"}}}

    send(midtrans_body(attempt.midtrans_order_id, "settlement", gross_amount="99000.00", metadata=metadata))

    assert state(attempt) == (OS.PENDING_PAYMENT, A.OPEN)
    assert PaymentEvent.objects.get().result == "mismatch"


@pytest.mark.parametrize(
    ("resolution", "fraud", "expected"), [("capture", "accept", "paid"), ("deny", "deny", "failed")]
)
def test_challenge_resolved_by_the_fraud_check(resolution, fraud, expected):
    attempt = make_attempt()
    send(midtrans_body(attempt.midtrans_order_id, "capture", payment_type="credit_card", fraud_status="challenge"))

    send(midtrans_body(attempt.midtrans_order_id, resolution, payment_type="credit_card", fraud_status=fraud))

    assert state(attempt)[1] == expected
    assert entitlements(attempt.order) == (["active"] if expected == "paid" else [])


def test_unknown_transaction_status_is_recorded_and_changes_nothing():
    attempt = make_attempt()

    body = midtrans_body(attempt.midtrans_order_id, "settlement")
    body["transaction_status"] = "brand_new_status"  # not covered by the signature

    response = send(body)

    assert response.status_code == 200 and response.json()["result"] == "stale"
    assert state(attempt) == (OS.PENDING_PAYMENT, A.OPEN)


def test_late_payment_when_the_customer_already_bought_again_is_flagged_as_a_second_purchase():
    # given: order 1 expired, the customer bought again (order 2, paid)
    first = make_attempt(attempt_status=A.PENDING)
    send(midtrans_body(first.midtrans_order_id, "expire"))
    second = make_attempt(customer_email=first.order.customer_email, package=first.order.package)
    send(midtrans_body(second.midtrans_order_id, "settlement"))

    # when: order 1's money arrives after all
    send(midtrans_body(first.midtrans_order_id, "settlement"))

    # then: both are paid (money arrived), and a person is told to refund one
    assert state(first) == (OS.PAID, A.PAID)
    assert f"already owns this package through order {second.order_id}" in first.order.review_reason
    assert any("Late payment" in subject for subject in alerts(first.order))
