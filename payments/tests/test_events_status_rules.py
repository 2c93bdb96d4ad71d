"""How a Midtrans status body is read: fraud_status on captures, and (with confirmation off)
the status_code the signature covers checked against the transaction_status it does not."""

import json

import pytest
from django.test import Client

from entitlements.models import Entitlement
from notifications.models import Notification
from payments.models import Order, PaymentAttempt, PaymentEvent
from payments.tests.factories import OrderFactory, PaymentAttemptFactory
from payments.tests.midtrans_payloads import midtrans_body

pytestmark = pytest.mark.django_db

OS, A = Order.Status, PaymentAttempt.Status


@pytest.fixture(autouse=True)
def _notification_is_the_status(settings):
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = False
    settings.ALERT_EMAILS = ["ops@buatfilm.test"]


@pytest.fixture
def attempt():
    order = OrderFactory(status=OS.PENDING_PAYMENT)
    return PaymentAttemptFactory(order=order, status=A.OPEN)


def send(body: dict):
    return Client().post("/webhooks/midtrans", data=json.dumps(body), content_type="application/json")


def state(attempt):
    attempt.refresh_from_db()
    attempt.order.refresh_from_db()
    return attempt.order.status, attempt.status


def snapshot():
    """Everything applying a status could change (operator alerts aside)."""
    return (
        list(Order.objects.values_list("id", "status", "paid_at", "needs_review", "refunded_amount")),
        list(PaymentAttempt.objects.values_list("id", "status", "transaction_id", "va_number", "fraud_status")),
        list(Entitlement.objects.values_list("order_id", "status")),
        Notification.objects.exclude(template="operator_alert").count(),
    )


def alerts():
    return list(Notification.objects.filter(template="operator_alert").values_list("subject", flat=True))


# --- capture without fraud_status (finding 10) -------------------------------------------------


def test_capture_without_fraud_status_is_paid(attempt):
    # given: a capture whose body carries no fraud_status ("accept if present", reference §3)
    body = midtrans_body(attempt.midtrans_order_id, "capture", payment_type="credit_card", fraud_status=None)
    assert "fraud_status" not in body

    # when
    response = send(body)

    # then: paid, access granted, no fraud alert or review
    assert response.status_code == 200
    assert state(attempt) == (OS.PAID, A.PAID)
    assert list(Entitlement.objects.values_list("status", flat=True)) == ["active"]
    assert not attempt.order.needs_review
    assert not Notification.objects.filter(template="operator_alert").exists()


@pytest.mark.parametrize(
    ("fraud_status", "status_code", "expected"),
    [("challenge", "201", (OS.PENDING_PAYMENT, A.CHALLENGE)), ("deny", "202", (OS.PENDING_PAYMENT, A.FAILED))],
)
def test_capture_with_a_fraud_verdict_other_than_accept_is_not_paid(attempt, fraud_status, status_code, expected):
    # given
    body = midtrans_body(
        attempt.midtrans_order_id,
        "capture",
        payment_type="credit_card",
        fraud_status=fraud_status,
        status_code=status_code,
    )

    # when
    send(body)

    # then
    assert state(attempt) == expected
    assert Entitlement.objects.count() == 0


# --- without confirmation, status_code must go with transaction_status (finding 4) -------------


def _edited(body: dict, **changes) -> dict:
    """A validly signed body with fields the signature does not cover changed afterwards."""
    return body | changes


def _paid(attempt):
    assert send(midtrans_body(attempt.midtrans_order_id, "settlement")).json()["result"] == "applied"
    assert state(attempt) == (OS.PAID, A.PAID)


@pytest.mark.parametrize(
    ("make_body", "already_paid"),
    [
        # signed as pending (201), edited to settlement: would pay the order
        (lambda mid: _edited(midtrans_body(mid, "pending"), transaction_status="settlement"), False),
        # signed as a capture challenged by the fraud check (201), fraud verdict edited to accept
        (
            lambda mid: _edited(
                midtrans_body(mid, "capture", status_code="201", fraud_status="challenge", payment_type="credit_card"),
                fraud_status="accept",
            ),
            False,
        ),
        # signed as pending (201), edited to expire: would close a live payment
        (lambda mid: _edited(midtrans_body(mid, "pending"), transaction_status="expire"), False),
        # signed as settlement (200), edited to deny: would revoke a paying customer's access
        (lambda mid: _edited(midtrans_body(mid, "settlement"), transaction_status="deny"), True),
        # signed as settlement (200), edited to pending: harmless, still refused
        (lambda mid: _edited(midtrans_body(mid, "settlement"), transaction_status="pending"), False),
    ],
    ids=["pending-to-settlement", "challenge-to-accept", "pending-to-expire", "settlement-to-deny", "200-pending"],
)
def test_unconfirmed_body_whose_status_code_disagrees_is_recorded_and_not_applied(attempt, make_body, already_paid):
    # given
    if already_paid:
        _paid(attempt)
    body = make_body(attempt.midtrans_order_id)
    before = snapshot()

    # when
    response = send(body)

    # then: recorded as a mismatch (answered 200, like an amount mismatch), nothing applied
    assert response.status_code == 200 and response.json()["result"] == "mismatch"
    assert snapshot() == before
    event = PaymentEvent.objects.get(payload=body)
    assert (event.result, event.attempt_id) == ("mismatch", attempt.pk)
    assert "status_code" in event.error and "not covered by the signature" in event.error
    assert len(alerts()) == 1 and f"Inconsistent Midtrans notification on order {attempt.order_id}" in alerts()[0]


def test_the_same_inconsistent_body_twice_is_alerted_once(attempt):
    # given
    body = _edited(midtrans_body(attempt.midtrans_order_id, "pending"), transaction_status="settlement")
    send(body)
    before = snapshot()

    # when
    response = send(body)

    # then
    assert response.json()["result"] == "duplicate"
    assert snapshot() == before
    assert len(alerts()) == 1


@pytest.mark.parametrize(
    ("transaction_status", "status_code", "expected"),
    [
        ("settlement", "200", (OS.PAID, A.PAID)),
        ("pending", "201", (OS.PENDING_PAYMENT, A.PENDING)),
        ("deny", "202", (OS.PENDING_PAYMENT, A.FAILED)),
        ("cancel", "202", (OS.PENDING_PAYMENT, A.FAILED)),
        ("expire", "407", (OS.EXPIRED, A.EXPIRED)),
        ("expire", "202", (OS.EXPIRED, A.EXPIRED)),
    ],
)
def test_unconfirmed_body_with_the_matching_status_code_is_applied(attempt, transaction_status, status_code, expected):
    # given
    body = midtrans_body(attempt.midtrans_order_id, transaction_status, status_code=status_code)

    # when
    response = send(body)

    # then
    assert response.json()["result"] == "applied"
    assert state(attempt) == expected


def test_challenged_capture_with_status_code_201_is_held(attempt):
    # given: how Midtrans (and the simulator) send a capture held by the fraud check
    body = midtrans_body(
        attempt.midtrans_order_id, "capture", status_code="201", fraud_status="challenge", payment_type="credit_card"
    )

    # when
    send(body)

    # then
    assert state(attempt) == (OS.PENDING_PAYMENT, A.CHALLENGE)


def test_with_confirmation_on_the_status_api_decides_whatever_the_body_says(attempt, settings, monkeypatch):
    # given: confirmation on; the edited body says settlement/201, the status API says settlement/200
    from payments.services import events

    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = True
    monkeypatch.setattr(
        events, "status_confirm", lambda *, midtrans_order_id: midtrans_body(midtrans_order_id, "settlement")
    )
    body = _edited(midtrans_body(attempt.midtrans_order_id, "pending"), transaction_status="settlement")

    # when
    response = send(body)

    # then: the confirmed status is what counts
    assert response.json()["result"] == "applied"
    assert state(attempt) == (OS.PAID, A.PAID)
