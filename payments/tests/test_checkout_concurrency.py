"""Real parallel requests (threads) against the live server on PostgreSQL, with the Midtrans
simulator answering Snap over HTTP: capacity, discount redemptions, double clicks, one key.
"""

from collections import Counter

import pytest
import requests

from payments.models import DiscountCode, IdempotencyRecord, Order, PaymentAttempt
from payments.tests.checkout_support import checkout_body, launch_package_ensure, run_parallel, snap_calls
from payments.tests.factories import DiscountCodeFactory, PackageFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def url(midtrans_sim, live_server, settings):
    launch_package_ensure()
    # Django's test server listens with a backlog of 10; fifty simultaneous connects would be
    # reset by the kernel before reaching it (gunicorn's backlog is 2048). Linux lets a
    # listening socket's backlog be raised in place.
    live_server.thread.httpd.socket.listen(128)
    settings.CHECKOUT_RATE_LIMIT = ""  # every request comes from 127.0.0.1 here
    return f"{midtrans_sim.live_url}/api/checkout/"


def post(url, body, key=None):
    headers = {"Idempotency-Key": key} if key else {}
    response = requests.post(url, json=body, headers=headers, timeout=60)
    return response.status_code, response.json(), response.headers


def outcome(result) -> str:
    status, body, _ = result
    return f"{status} {body['error']['code']}" if "error" in body else str(status)


def test_thirty_concurrent_checkouts_for_ten_seats_create_exactly_ten_orders(url):
    # given
    package = PackageFactory(id="kelas-terbatas", capacity=10)

    # when
    results = run_parallel(post, [(url, checkout_body(package_id=package.id)) for _ in range(30)])

    # then
    assert Counter(outcome(r) for r in results) == {"201": 10, "409 sold_out": 20}
    assert Order.objects.filter(package=package).count() == 10
    assert Order.objects.filter(package=package, status="PENDING_PAYMENT").count() == 10
    assert snap_calls() == 10  # sold-out requests never reached Midtrans
    assert sorted(r[1]["order_id"] for r in results if r[0] == 201) == sorted(
        Order.objects.values_list("id", flat=True)
    )


def test_fifty_concurrent_checkouts_against_ten_remaining_uses_redeem_exactly_ten(url, settings):
    # given (enough call slots that a loaded machine's slow Snap answers shed none: the
    # redemption race is under test here, not the shedding)
    settings.MIDTRANS_MAX_CONCURRENT_CALLS = 50
    DiscountCodeFactory(code="FLASH", kind="fixed", value=9000, max_uses=12, times_used=2)

    # when
    results = run_parallel(post, [(url, checkout_body(discount_code="flash")) for _ in range(50)])

    # then
    assert Counter(outcome(r) for r in results) == {"201": 10, "400 invalid_request": 40}
    assert {r[1]["error"]["fields"]["discount_code"] for r in results if r[0] == 400} == {
        "Kuota kode diskon ini sudah habis."
    }
    assert DiscountCode.objects.get(code="FLASH").times_used == 12
    assert Order.objects.filter(discount_code__code="FLASH").count() == 10
    assert {r[1]["amount"] for r in results if r[0] == 201} == {90000}


def test_concurrent_double_clicks_make_one_order_and_one_midtrans_transaction(url):
    # given one customer's form sent ten times at once, each with its own key (or none)
    body = checkout_body()
    keys = [None, None, None, "a", "b", "c", "d", "e", "f", "g"]

    # when
    results = run_parallel(post, [(url, body, key) for key in keys])

    # then
    statuses = Counter(r[0] for r in results)
    assert statuses == {201: 1, 200: 9}, [outcome(r) for r in results]
    assert {r[1]["order_id"] for r in results} == {Order.objects.get().id}
    assert all(r[1]["reused"] for r in results if r[0] == 200)
    assert len({r[1]["payment"]["token"] for r in results}) == 1
    assert PaymentAttempt.objects.count() == 1
    assert snap_calls() == 1


def test_one_key_sent_concurrently_runs_once(url, midtrans_sim):
    # given a slow Snap, so the first request is still running when the others arrive
    midtrans_sim.faults(latency_ms=700)
    body = checkout_body()

    # when
    results = run_parallel(post, [(url, body, "same-key")] * 8)

    # then
    fresh = [r for r in results if r[0] == 201 and "Idempotent-Replayed" not in r[2]]
    others = Counter(outcome(r) for r in results if r not in fresh)
    assert len(fresh) == 1
    assert set(others) <= {"409 idempotency_key_in_use", "201"}  # "201" only as a replay
    assert others["409 idempotency_key_in_use"] >= 1
    assert all(r[2].get("Idempotent-Replayed") == "true" for r in results if r[0] == 201 and r not in fresh)
    assert Order.objects.count() == 1 and snap_calls() == 1
    assert IdempotencyRecord.objects.get(key="same-key").state == "completed"
    midtrans_sim.faults_reset()
