"""Checkout against the Midtrans simulator over real HTTP (live_server): the happy path,
the Snap request field by field, reuse, already owned, sold out, the pay endpoint, expiry.
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from entitlements.models import Entitlement
from notifications.models import Notification
from payments.models import AuditEntry, Order, OrderStatus, Package, PaymentAttempt
from payments.tests.checkout_support import (
    LAUNCH_PACKAGE_ID,
    checkout_body,
    db_state,
    launch_package_ensure,
    snap_calls,
)
from payments.tests.factories import DiscountCodeFactory, OrderFactory, PackageFactory, PaymentAttemptFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api(midtrans_sim):
    launch_package_ensure()
    client = APIClient(HTTP_USER_AGENT="Mozilla/5.0 (Linux; Android 14) Test", HTTP_REFERER="https://buatfilm.id/")
    client.sim = midtrans_sim
    return client


def checkout(api, body, **headers):
    return api.post("/api/checkout/", body, format="json", **headers)


def test_checkout_creates_payable_order_and_answers_the_contract_shape(api, settings):
    # given
    body = checkout_body(name="  Siti Aminah  ", email="Siti.Aminah@Example.COM", phone="+62 812-3456-7890")

    # when
    response = checkout(api, body)

    # then
    assert response.status_code == 201, response.content
    data = response.json()
    order = Order.objects.get()
    attempt = PaymentAttempt.objects.get()
    assert set(data) == {"order_id", "status", "amount", "currency", "package", "payment", "expires_at", "reused"}
    assert data["order_id"] == order.id
    assert data["status"] == "PENDING_PAYMENT" == order.status
    assert data["amount"] == 99000 and data["currency"] == "IDR"
    assert data["package"] == {"id": LAUNCH_PACKAGE_ID, "name": "Buat Film Pakai AI"}
    assert data["payment"] == {"token": attempt.snap_token, "redirect_url": attempt.redirect_url}
    assert data["payment"]["redirect_url"].startswith(api.sim.base_url + "/snap/")
    assert data["reused"] is False
    assert data["expires_at"] == timezone.localtime(order.expires_at).isoformat()
    # stored as normalised, with the request's metadata
    assert (order.customer_name, order.customer_email, order.customer_phone) == (
        "Siti Aminah",
        "siti.aminah@example.com",
        "+6281234567890",
    )
    assert (order.client_ip, order.user_agent, order.referrer) == (
        "127.0.0.1",
        "Mozilla/5.0 (Linux; Android 14) Test",
        "https://buatfilm.id/",
    )
    window = order.expires_at - order.created_at
    assert timedelta(minutes=settings.ORDER_PAYMENT_WINDOW_MINUTES) - window < timedelta(seconds=5)
    assert (attempt.number, attempt.midtrans_order_id, attempt.status, attempt.amount) == (
        1,
        f"{order.id}-1",
        "open",
        99000,
    )
    # payment instructions enqueued with the order becoming payable
    assert Notification.objects.filter(reference=order.id, template="payment_instructions").exists()


def test_every_state_change_is_audited(api):
    response = checkout(api, checkout_body())
    order_id = response.json()["order_id"]
    order_actions = list(
        AuditEntry.objects.filter(object_type="order", object_id=order_id)
        .order_by("id")
        .values_list("action", "old_value", "new_value")
    )
    assert [a[0] for a in order_actions] == ["order_created", "order_status_changed"]
    assert order_actions[0][2]["status"] == "CREATED"
    assert (order_actions[1][1]["status"], order_actions[1][2]["status"]) == ("CREATED", "PENDING_PAYMENT")
    attempt = PaymentAttempt.objects.get(order_id=order_id)
    attempt_actions = list(
        AuditEntry.objects.filter(object_type="paymentattempt", object_id=str(attempt.pk))
        .order_by("id")
        .values_list("action", "new_value")
    )
    assert [(a, v["status"]) for a, v in attempt_actions] == [
        ("attempt_created", "initiated"),
        ("attempt_status_changed", "open"),
    ]


def test_snap_request_is_built_from_server_prices_field_by_field(api, settings):
    # given a 25% code and a client that tries to name its own price
    DiscountCodeFactory(code="HEMAT25", kind="percent", value=25)
    body = checkout_body(name="Budi Santoso", email="budi@example.com", phone="081234567890", discount_code="hemat25")
    body["amount"] = 1000
    body["price"] = 1

    # when
    response = checkout(api, body)

    # then
    assert response.status_code == 201, response.content
    order = Order.objects.get()
    payload = api.sim.transaction(f"{order.id}-1").request_payload
    assert payload["transaction_details"] == {"order_id": f"{order.id}-1", "gross_amount": 74250}
    assert isinstance(payload["transaction_details"]["gross_amount"], int)
    assert payload["item_details"] == [
        {"id": LAUNCH_PACKAGE_ID, "price": 99000, "quantity": 1, "name": "Buat Film Pakai AI", "category": "course"},
        {"id": "discount-HEMAT25", "price": -24750, "quantity": 1, "name": "Diskon HEMAT25", "category": "discount"},
    ]
    assert sum(i["price"] * i["quantity"] for i in payload["item_details"]) == 74250
    assert payload["customer_details"] == {
        "first_name": "Budi Santoso",
        "email": "budi@example.com",
        "phone": "+6281234567890",
    }
    assert payload["expiry"]["unit"] == "minute"
    assert payload["expiry"]["duration"] == settings.ORDER_PAYMENT_WINDOW_MINUTES
    assert payload["expiry"]["start_time"].endswith(" +0700")
    assert payload["callbacks"] == {"finish": f"{api.sim.live_url}/orders/{order.id}/"}
    assert payload["credit_card"] == {"secure": True}
    assert payload["custom_field1"] == order.id
    assert set(payload) == {
        "transaction_details",
        "item_details",
        "customer_details",
        "expiry",
        "credit_card",
        "callbacks",
        "custom_field1",
    }
    assert (order.list_price, order.discount_amount, order.amount) == (99000, 24750, 74250)
    assert response.json()["amount"] == 74250


def test_fixed_discount_code_is_redeemed_once(api):
    code = DiscountCodeFactory(code="POTONG20K", kind="fixed", value=20000, max_uses=5)
    response = checkout(api, checkout_body(discount_code="potong20k"))
    assert response.status_code == 201
    assert response.json()["amount"] == 79000
    code.refresh_from_db()
    assert code.times_used == 1
    assert Order.objects.get().discount_code == code


def test_live_pending_order_is_reused_not_duplicated(api):
    # given
    body = checkout_body()
    first = checkout(api, body)
    calls = snap_calls()

    # when the customer submits again (another tab, a double click without the same key)
    second = checkout(api, {**body, "name": "Budi S.", "email": body["email"].upper()})

    # then
    assert second.status_code == 200
    assert second.json()["reused"] is True
    assert second.json()["order_id"] == first.json()["order_id"]
    assert second.json()["payment"] == first.json()["payment"]
    assert Order.objects.count() == 1 and PaymentAttempt.objects.count() == 1
    assert snap_calls() == calls  # no second Midtrans transaction


def test_stale_open_order_is_expired_and_a_new_order_made(api):
    body = checkout_body()
    first_id = checkout(api, body).json()["order_id"]
    Order.objects.filter(pk=first_id).update(expires_at=timezone.now() - timedelta(minutes=1))

    response = checkout(api, body)

    assert response.status_code == 201
    assert response.json()["order_id"] != first_id
    assert Order.objects.get(pk=first_id).status == OrderStatus.EXPIRED
    assert AuditEntry.objects.filter(object_id=first_id, action="order_status_changed", new_value__status="EXPIRED")


def test_email_with_active_entitlement_gets_already_owned(api):
    # given
    Entitlement.objects.create(
        email="owner@example.com", course_code="ai-movie-course", order_id="BF-OLD-1", granted_at=timezone.now()
    )
    before = db_state()

    # when
    response = checkout(api, checkout_body(email="Owner@Example.com"))

    # then
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_owned"
    assert db_state() == before


def test_revoked_entitlement_does_not_block_buying_again(api):
    Entitlement.objects.create(
        email="again@example.com",
        course_code="ai-movie-course",
        order_id="BF-OLD-2",
        granted_at=timezone.now(),
        status="revoked",
        revoked_at=timezone.now(),
    )
    assert checkout(api, checkout_body(email="again@example.com")).status_code == 201


def test_full_package_answers_sold_out_before_any_midtrans_call(api):
    # given one seat, taken by a paid order; a live pending order would count too
    package = PackageFactory(id="kelas-kecil", capacity=2)
    OrderFactory(package=package, status=OrderStatus.PAID, paid_at=timezone.now())
    OrderFactory(package=package, status=OrderStatus.PENDING_PAYMENT)
    before = db_state()

    # when
    response = checkout(api, checkout_body(package_id="kelas-kecil"))

    # then
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "sold_out",
        "message": "Maaf, kuota paket ini sudah habis.",
        "fields": {},
    }
    assert db_state() == before
    assert snap_calls() == 0


def test_expired_and_refunded_orders_free_their_seats(api):
    package = PackageFactory(id="kelas-kecil", capacity=2)
    OrderFactory(package=package, status=OrderStatus.REFUNDED, paid_at=timezone.now())
    OrderFactory(package=package, status=OrderStatus.PENDING_PAYMENT, expires_at=timezone.now() - timedelta(hours=1))
    assert checkout(api, checkout_body(package_id="kelas-kecil")).status_code == 201
    assert checkout(api, checkout_body(package_id="kelas-kecil")).status_code == 201
    assert checkout(api, checkout_body(package_id="kelas-kecil")).status_code == 409


def test_packages_list_shows_server_prices_and_availability(api):
    PackageFactory(id="kelas-penuh", name="Kelas Penuh", price=150000, capacity=0)
    PackageFactory(id="kelas-lama", name="Kelas Lama", price=50000, is_active=False)

    response = api.get("/api/packages/")

    assert response.status_code == 200
    assert response.json() == [
        {"id": LAUNCH_PACKAGE_ID, "name": "Buat Film Pakai AI", "price": 99000, "currency": "IDR", "available": True},
        {"id": "kelas-penuh", "name": "Kelas Penuh", "price": 150000, "currency": "IDR", "available": False},
    ]


# --- GET /api/orders/{id}/ ------------------------------------------------------------------------


def test_order_status_shows_no_personal_data(api):
    created = checkout(api, checkout_body(name="Rahasia Sekali", email="rahasia@example.com")).json()

    response = api.get(f"/api/orders/{created['order_id']}/")

    assert response.status_code == 200
    data = response.json()
    assert set(data) == {
        "order_id",
        "status",
        "amount",
        "currency",
        "package",
        "created_at",
        "paid_at",
        "expires_at",
        "payment",
    }
    assert data["payment"] == created["payment"]
    assert data["paid_at"] is None
    text = response.content.decode()
    for secret in ("Rahasia", "rahasia@example.com", "6281234567890", "127.0.0.1", "Mozilla"):
        assert secret not in text


def test_order_status_hides_payment_once_not_payable(api):
    order = OrderFactory(status=OrderStatus.PAID, paid_at=timezone.now())
    PaymentAttemptFactory(order=order, status="paid", snap_token="tok", redirect_url="https://x.test/p")
    data = api.get(f"/api/orders/{order.id}/").json()
    assert data["status"] == "PAID"
    assert data["payment"] is None
    assert data["paid_at"] is not None


def test_unknown_order_is_404_in_the_error_shape(api):
    response = api.get("/api/orders/BF-20260101-NOPE2345/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert set(response.json()["error"]) == {"code", "message", "fields"}


# --- POST /api/orders/{id}/pay/ ------------------------------------------------------------------


def test_pay_returns_the_live_attempt(api):
    created = checkout(api, checkout_body()).json()
    calls = snap_calls()

    response = api.post(f"/api/orders/{created['order_id']}/pay/", {}, format="json")

    assert response.status_code == 200
    assert response.json()["payment"] == created["payment"]
    assert snap_calls() == calls


def test_pay_after_a_failed_attempt_opens_attempt_two_on_the_same_order(api):
    created = checkout(api, checkout_body()).json()
    PaymentAttempt.objects.filter(order_id=created["order_id"]).update(status="failed")

    response = api.post(f"/api/orders/{created['order_id']}/pay/", {}, format="json")

    assert response.status_code == 201
    data = response.json()
    assert data["order_id"] == created["order_id"]
    attempt = PaymentAttempt.objects.get(order_id=created["order_id"], number=2)
    assert attempt.midtrans_order_id == f"{created['order_id']}-2"
    assert data["payment"] == {"token": attempt.snap_token, "redirect_url": attempt.redirect_url}
    assert api.sim.transaction(attempt.midtrans_order_id).gross_amount == 99000
    assert Order.objects.count() == 1


def test_pay_on_paid_order_is_already_paid(api):
    order = OrderFactory(status=OrderStatus.PAID, paid_at=timezone.now())
    before = db_state()
    response = api.post(f"/api/orders/{order.id}/pay/", {}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_paid"
    assert db_state() == before


@pytest.mark.parametrize("status", ["EXPIRED", "FAILED", "CANCELLED"])
def test_pay_on_closed_order_is_order_expired(api, status):
    order = OrderFactory(status=status)
    before = db_state()
    response = api.post(f"/api/orders/{order.id}/pay/", {}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "order_expired"
    assert db_state() == before


def test_pay_after_the_window_expires_the_order(api):
    order = OrderFactory(status=OrderStatus.PENDING_PAYMENT, expires_at=timezone.now() - timedelta(seconds=1))

    response = api.post(f"/api/orders/{order.id}/pay/", {}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "order_expired"
    order.refresh_from_db()
    assert order.status == OrderStatus.EXPIRED
    assert snap_calls() == 0


def test_pay_unknown_order_is_404(api):
    response = api.post("/api/orders/BF-20260101-NOPE2345/pay/", {}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_inactive_launch_package_cannot_be_bought(api):
    Package.objects.filter(pk=LAUNCH_PACKAGE_ID).update(is_active=False)
    before = db_state()
    response = checkout(api, checkout_body())
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"package_id": "Paket ini sedang tidak dijual."}
    assert db_state() == before


def test_pay_replaces_an_attempt_whose_request_died_before_snap_answered(api):
    # given an attempt left `initiated` longer than any Snap call can take (its process died)
    order = OrderFactory(status=OrderStatus.CREATED)
    stale = PaymentAttemptFactory(order=order, status="initiated")
    PaymentAttempt.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(minutes=5))

    # when
    response = api.post(f"/api/orders/{order.id}/pay/", {}, format="json")

    # then
    assert response.status_code == 201
    stale.refresh_from_db()
    assert stale.status == "failed" and "abandoned" in stale.last_error
    assert PaymentAttempt.objects.get(order=order, number=2).status == "open"
    assert Order.objects.get(pk=order.pk).status == OrderStatus.PENDING_PAYMENT


def test_pay_while_another_request_is_calling_snap_waits_then_asks_to_retry(api, settings):
    # given another request's Snap call in flight (a fresh `initiated` attempt) and short timeouts
    settings.MIDTRANS_CONNECT_TIMEOUT = 0.1
    settings.MIDTRANS_READ_TIMEOUT = 0.2
    order = OrderFactory(status=OrderStatus.CREATED)
    PaymentAttemptFactory(order=order, status="initiated")
    before = db_state()

    # when
    response = api.post(f"/api/orders/{order.id}/pay/", {}, format="json")

    # then it waited for that call instead of opening a second transaction at Midtrans
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "payment_gateway_unavailable"
    assert response["Retry-After"] == "2"
    assert db_state() == before
