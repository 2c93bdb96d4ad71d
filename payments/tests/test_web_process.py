"""The web process exactly as the Procfile starts it (gunicorn, threaded workers) on this
run's database, against a Midtrans simulator that answers slowly: the calls to Midtrans hold
only their slots, everything else is still served, and checkouts over the limit fail fast.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.conf import settings

from notifications.tests.conftest import wait_for
from notifications.tests.stubs import free_port
from payments.models import Order, PaymentAttempt
from payments.tests.checkout_support import checkout_body, launch_package_ensure, snap_calls
from payments.tests.web_process_support import procfile_web, web_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def web(midtrans_sim):
    """One web worker of 6 threads with 2 call slots per Midtrans host, calling the simulator on live_server."""
    launch_package_ensure()
    env = web_env(
        port=free_port(),
        WEB_CONCURRENCY=1,
        WEB_THREADS=6,
        MIDTRANS_MAX_CONCURRENT_CALLS=2,
        MIDTRANS_SIMULATOR="false",
        COURSE_ACCESS_URL="https://kelas.example/{course}?token={token}",
        MIDTRANS_SNAP_URL=midtrans_sim.base_url,
        MIDTRANS_API_URL=midtrans_sim.base_url,
        CHECKOUT_RATE_LIMIT="",
        # the test's Snap answers after 6 s: within the read timeout, whatever the environment says
        MIDTRANS_READ_TIMEOUT=10,
    )
    with procfile_web(env=env, name="web-process") as url:
        yield url
    midtrans_sim.faults_reset()


def test_a_slow_midtrans_holds_only_its_call_slots_and_everything_else_is_served(web, midtrans_sim):
    # given Snap answering after 6 s, and four customers checking out at once on a worker
    # with six threads, two of which may call Snap
    midtrans_sim.faults(latency_ms=6000)
    bodies = [checkout_body() for _ in range(4)]

    def checkout(body):
        response = requests.post(web + "/api/checkout/", json=body, timeout=30)
        return response.status_code, response.json(), response.headers

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(checkout, body) for body in bodies]

        # when: two have failed fast (no slot) while two are still waiting on Snap
        wait_for(lambda: sum(f.done() for f in futures) >= 2, timeout=5, message="two checkouts to be answered")
        answered = [f.result() for f in futures if f.done()]
        check = requests.get(
            web + "/api/entitlements/check/",
            params={"email": bodies[0]["email"], "course": "ai-movie-course"},
            headers={"Authorization": f"Bearer {settings.ENTITLEMENTS_API_TOKEN}"},
            timeout=5,
        )
        still_waiting = sum(not f.done() for f in futures)
        results = [f.result() for f in futures]

    # then: the course platform was answered while both calls to Midtrans were in flight
    assert check.status_code == 200 and check.json()["active"] is False
    assert still_waiting == 2
    # the two without a slot: 503 at once, the order kept, Midtrans never called for them
    assert [(status, body["error"]["code"], headers["Retry-After"]) for status, body, headers in answered] == [
        (503, "payment_gateway_unavailable", "2")
    ] * 2
    # the two with a slot: paid for once Snap answered
    assert sorted(status for status, _, _ in results) == [201, 201, 503, 503]
    assert snap_calls() == 2
    assert sorted(Order.objects.values_list("status", flat=True)) == [
        "CREATED",
        "CREATED",
        "PENDING_PAYMENT",
        "PENDING_PAYMENT",
    ]
    busy = PaymentAttempt.objects.filter(status="failed")
    assert busy.count() == 2 and all("MidtransBusy" in attempt.last_error for attempt in busy)
