"""A discount use is held by a live or paid order, as a seat is: given back when the order
expires, fails or is cancelled; a late payment is honoured even when the code ran out."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from payments.models import DiscountCode, Order, PaymentAttempt
from payments.services.discounts import discount_problem
from payments.services.events import order_expire
from payments.tests.factories import DiscountCodeFactory, OrderFactory, PaymentAttemptFactory
from payments.tests.midtrans_payloads import midtrans_body

pytestmark = pytest.mark.django_db

OS = Order.Status
A = PaymentAttempt.Status


@pytest.fixture(autouse=True)
def _apply_notifications_directly(settings):
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = False


def send(body: dict):
    return Client().post("/webhooks/midtrans", data=json.dumps(body), content_type="application/json")


def order_with(code: DiscountCode, **kw) -> Order:
    # A use was counted when the order was created (as checkout does).
    DiscountCode.objects.filter(pk=code.pk).update(times_used=code.times_used + 1)
    code.refresh_from_db()
    order = OrderFactory(discount_code=code, status=OS.PENDING_PAYMENT, **kw)
    PaymentAttemptFactory(order=order, status=A.OPEN)
    return order


def uses(code: DiscountCode) -> int:
    code.refresh_from_db()
    return code.times_used


def test_an_expired_order_gives_its_use_back():
    code = DiscountCodeFactory(max_uses=1)
    order = order_with(code, expires_at=timezone.now() - timedelta(minutes=1))
    order.attempts.update(status=A.EXPIRED)
    assert discount_problem(discount=code, package=order.package) is not None  # used up

    order_expire(order_id=order.pk, actor="reconcile")

    assert uses(code) == 0
    assert discount_problem(discount=code, package=order.package) is None  # another customer may use it


def test_a_failed_or_expired_payment_gives_the_use_back_and_a_paid_one_keeps_it():
    code = DiscountCodeFactory(max_uses=5)
    expiring = order_with(code)
    paying = order_with(code)
    assert uses(code) == 2

    send(midtrans_body(expiring.attempts.get().midtrans_order_id, "expire"))
    send(midtrans_body(paying.attempts.get().midtrans_order_id, "settlement"))

    expiring.refresh_from_db()
    assert expiring.status == OS.EXPIRED
    assert uses(code) == 1


def test_a_late_payment_is_honoured_even_when_the_code_has_run_out():
    # given an order that expired (its use given back), then the last use went to someone else
    code = DiscountCodeFactory(max_uses=1)
    late = order_with(code)
    attempt = late.attempts.get()
    send(midtrans_body(attempt.midtrans_order_id, "expire"))
    assert uses(code) == 0
    order_with(code, customer_email="lain@example.com")
    assert uses(code) == 1

    # when the money for the expired order arrives after all
    response = send(midtrans_body(attempt.midtrans_order_id, "settlement"))

    # then the sale stands at its discounted price, and both orders hold a use
    late.refresh_from_db()
    assert response.status_code == 200 and late.status == OS.PAID and late.needs_review
    assert uses(code) == 2


def test_a_bank_reversal_gives_the_use_back():
    code = DiscountCodeFactory(max_uses=3)
    order = order_with(code)
    mid = order.attempts.get().midtrans_order_id
    send(midtrans_body(mid, "settlement"))
    assert uses(code) == 1

    send(midtrans_body(mid, "deny", status_code="202"))

    order.refresh_from_db()
    assert order.status == OS.FAILED and uses(code) == 0
