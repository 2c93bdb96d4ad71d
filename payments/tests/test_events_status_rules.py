"""How a Midtrans status body is read: fraud_status on captures, and (with confirmation off)
the status_code the signature covers checked against the transaction_status it does not."""

import json

import pytest
from django.test import Client

from entitlements.models import Entitlement
from notifications.models import Notification
from payments.models import Order, PaymentAttempt
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
    ("fraud_status", "expected"),
    [("challenge", (OS.PENDING_PAYMENT, A.CHALLENGE)), ("deny", (OS.PENDING_PAYMENT, A.FAILED))],
)
def test_capture_with_a_fraud_verdict_other_than_accept_is_not_paid(attempt, fraud_status, expected):
    # given
    body = midtrans_body(attempt.midtrans_order_id, "capture", payment_type="credit_card", fraud_status=fraud_status)

    # when
    send(body)

    # then
    assert state(attempt) == expected
    assert Entitlement.objects.count() == 0
