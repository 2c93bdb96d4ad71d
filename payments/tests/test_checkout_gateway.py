"""Gateway trouble: Snap 5xx, down, timeout or an open circuit -> 503 payment_gateway_unavailable
with Retry-After; the order is kept, and every way of retrying opens a new attempt on it.
Faults are injected into the Midtrans simulator, which is reached over real HTTP.
"""

import threading
import time

import pytest
import requests
from rest_framework.test import APIClient

from notifications.models import Notification
from payments import midtrans
from payments.models import AuditEntry, IdempotencyRecord, Order, OrderStatus, PaymentAttempt
from payments.tests.checkout_support import checkout_body, launch_package_ensure, snap_calls

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api(midtrans_sim):
    launch_package_ensure()
    client = APIClient()
    client.sim = midtrans_sim
    yield client
    midtrans_sim.faults_reset()


def checkout(api, body, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return api.post("/api/checkout/", body, format="json", **headers)


def assert_gateway_unavailable(response):
    assert response.status_code == 503, response.content
    error = response.json()["error"]
    assert error["code"] == "payment_gateway_unavailable"
    assert error["message"] and error["fields"] == {}
    assert int(response["Retry-After"]) >= 1


def test_snap_5xx_answers_503_and_keeps_the_order(api):
    # given
    api.sim.faults(fail_next=1)

    # when
    response = checkout(api, checkout_body(), key="k-5xx")

    # then
    assert_gateway_unavailable(response)
    order = Order.objects.get()
    attempt = PaymentAttempt.objects.get()
    assert order.status == OrderStatus.CREATED
    assert (attempt.status, attempt.snap_token) == ("failed", "")
    assert "MidtransServerError" in attempt.last_error
    # nothing told to the customer yet, and the 503 was not stored for replay
    assert not Notification.objects.filter(reference=order.id).exists()
    record = IdempotencyRecord.objects.get(key="k-5xx")
    assert (record.state, record.response_status, record.order_id, record.locked_until) == (
        "in_progress",
        None,
        order.id,
        None,
    )


def test_retry_with_same_key_resumes_the_same_order_with_a_new_attempt(api):
    body = checkout_body()
    api.sim.faults(fail_next=1)
    assert_gateway_unavailable(checkout(api, body, key="k-retry"))
    order_id = Order.objects.get().id

    response = checkout(api, body, key="k-retry")

    assert response.status_code == 201, response.content
    assert "Idempotent-Replayed" not in response
    data = response.json()
    assert data["order_id"] == order_id and data["reused"] is False
    assert Order.objects.count() == 1
    attempts = list(PaymentAttempt.objects.order_by("number").values_list("number", "status"))
    assert attempts == [(1, "failed"), (2, "open")]
    assert Order.objects.get().status == OrderStatus.PENDING_PAYMENT
    assert api.sim.transaction(f"{order_id}-2").request_payload["transaction_details"]["gross_amount"] == 99000
    # now it is stored: a third call replays it
    replay = checkout(api, body, key="k-retry")
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == data


def test_retry_with_the_pay_endpoint_opens_a_new_attempt(api):
    api.sim.faults(fail_next=1)
    assert_gateway_unavailable(checkout(api, checkout_body()))
    order_id = Order.objects.get().id

    response = api.post(f"/api/orders/{order_id}/pay/", {}, format="json")

    assert response.status_code == 201
    assert response.json()["order_id"] == order_id
    assert response.json()["status"] == "PENDING_PAYMENT"
    assert PaymentAttempt.objects.get(number=2).status == "open"
    assert Order.objects.count() == 1


def test_checking_out_again_without_key_reuses_the_kept_order(api):
    body = checkout_body()
    api.sim.faults(fail_next=1)
    assert_gateway_unavailable(checkout(api, body))

    response = checkout(api, body)

    assert response.status_code == 200
    assert response.json()["reused"] is True
    assert Order.objects.count() == 1
    assert response.json()["payment"]["token"] == PaymentAttempt.objects.get(number=2).snap_token


def test_gateway_down_with_html_page_is_503(api):
    api.sim.faults(down=True)
    assert_gateway_unavailable(checkout(api, checkout_body()))
    assert "MidtransServerError" in PaymentAttempt.objects.get().last_error


def test_gateway_timeout_is_503(api, settings):
    # given a Snap that holds the request longer than our read timeout
    settings.MIDTRANS_READ_TIMEOUT = 0.3
    api.sim.faults(timeout=True, timeout_seconds=1.0)

    # when
    response = checkout(api, checkout_body())

    # then
    assert_gateway_unavailable(response)
    assert "MidtransTimeout" in PaymentAttempt.objects.get().last_error
    assert Order.objects.get().status == OrderStatus.CREATED
    # let the simulator finish its held request before the database is flushed
    deadline = time.monotonic() + 5
    while snap_calls() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)


def test_open_circuit_fails_fast_without_calling_midtrans(api, settings):
    # given a breaker that opens on the first failure
    settings.MIDTRANS_BREAKER_FAILURES = 1
    settings.MIDTRANS_BREAKER_COOLDOWN = 60
    api.sim.faults(fail_next=1)
    assert_gateway_unavailable(checkout(api, checkout_body()))
    calls = snap_calls()

    # when
    response = checkout(api, checkout_body())

    # then
    assert_gateway_unavailable(response)
    assert 50 <= int(response["Retry-After"]) <= 60
    assert snap_calls() == calls
    assert "MidtransCircuitOpen" in PaymentAttempt.objects.order_by("-id").first().last_error
    assert Order.objects.count() == 2


def test_no_free_call_slot_answers_503_without_calling_midtrans_and_a_retry_resumes_the_order(api, settings):
    # given every Midtrans call slot of this process held by calls in flight to a slow Midtrans
    settings.MIDTRANS_MAX_CONCURRENT_CALLS = 1
    slots = midtrans._call_slots(midtrans.SNAP)
    assert slots.acquire(blocking=False)
    body = checkout_body()
    try:
        # when
        response = checkout(api, body, key="k-busy")
    finally:
        slots.release()

    # then
    assert_gateway_unavailable(response)
    assert response["Retry-After"] == "2"
    assert snap_calls() == 0
    order = Order.objects.get()
    attempt = PaymentAttempt.objects.get()
    assert order.status == OrderStatus.CREATED
    assert attempt.status == "failed" and "MidtransBusy" in attempt.last_error
    assert midtrans.circuit_state()["snap"]["failures"] == 0

    # and once a slot is free, the same key resumes the same order
    retried = checkout(api, body, key="k-busy")
    assert retried.status_code == 201, retried.content
    assert retried.json()["order_id"] == order.id
    assert list(PaymentAttempt.objects.order_by("number").values_list("status", flat=True)) == ["failed", "open"]


def test_pay_while_another_request_waits_on_a_slow_snap_answers_503_soon_then_the_same_token(api):
    # given a checkout whose Snap call takes 4 s (the customer then presses "pay" again)
    api.sim.faults(latency_ms=4000)
    live = api.sim.live_url
    first: dict = {}
    caller = threading.Thread(
        target=lambda: first.update(response=requests.post(f"{live}/api/checkout/", json=checkout_body(), timeout=30))
    )
    caller.start()
    try:
        deadline = time.monotonic() + 5
        while not PaymentAttempt.objects.filter(status="initiated").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        order_id = PaymentAttempt.objects.get().order_id

        # when
        second = requests.post(f"{live}/api/orders/{order_id}/pay/", json={}, timeout=30)
        waiting_when_answered = caller.is_alive()
    finally:
        caller.join()  # its request must not write into the next test's database

    # then: told to come back while the first call was still waiting, not held until it ended
    assert waiting_when_answered
    assert second.status_code == 503
    assert second.json()["error"]["code"] == "payment_gateway_unavailable"
    assert second.headers["Retry-After"] == "2"
    assert first["response"].status_code == 201
    # and coming back gives the one Snap transaction the first call opened
    again = api.post(f"/api/orders/{order_id}/pay/", {}, format="json")
    assert again.status_code == 200
    assert again.json()["payment"]["token"] == first["response"].json()["payment"]["token"]
    assert snap_calls() == 1 and PaymentAttempt.objects.count() == 1


def test_token_arriving_after_another_request_gave_up_on_the_attempt_is_not_stored(api, monkeypatch):
    # given a Snap answer that comes back only after another request marked the attempt failed
    # (as order_pay does with an attempt older than every timeout)
    real_snap_create = midtrans.snap_create

    def snap_create_then_abandoned(*, payload):
        snap = real_snap_create(payload=payload)
        PaymentAttempt.objects.filter(midtrans_order_id=payload["transaction_details"]["order_id"]).update(
            status="failed", last_error="abandoned: no Snap answer recorded"
        )
        return snap

    monkeypatch.setattr(midtrans, "snap_create", snap_create_then_abandoned)

    # when
    response = checkout(api, checkout_body(), key="k-late")

    # then the late token is dropped, the order kept for a retry, nothing sent to the customer
    assert_gateway_unavailable(response)
    assert response["Retry-After"] == "1"
    order = Order.objects.get()
    attempt = PaymentAttempt.objects.get()
    assert order.status == OrderStatus.CREATED
    assert (attempt.status, attempt.snap_token, attempt.redirect_url) == ("failed", "", "")
    assert not Notification.objects.filter(reference=order.id).exists()
    assert not AuditEntry.objects.filter(action__in=["attempt_status_changed", "order_status_changed"]).exists()
    assert IdempotencyRecord.objects.get(key="k-late").order_id == order.id
