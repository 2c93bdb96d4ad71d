"""Concurrent notifications: real threads posting to live_server, real PostgreSQL row locks.

Exactly one transition, one entitlement and one "paid" message per order, and never a 5xx.
"""

import threading

import pytest
import requests
from django.core.servers.basehttp import ThreadedWSGIServer
from django.test.testcases import LiveServerThread, _StaticFilesHandler

from entitlements.models import Entitlement
from notifications.models import Notification
from payments.models import AuditEntry, Order, PaymentAttempt, PaymentEvent
from payments.tests.midtrans_payloads import midtrans_body
from payments.tests.payment_support import attempt_create, refreshed, sim_attempt_create

pytestmark = pytest.mark.django_db(transaction=True)

OS = Order.Status
A = PaymentAttempt.Status


class _WideBacklogServer(ThreadedWSGIServer):
    # Django's server listens with a backlog of 10: 50 simultaneous connects would be refused
    # before our code even ran. gunicorn's default backlog is 2048.
    request_queue_size = 128


class _WideLiveServerThread(LiveServerThread):
    server_class = _WideBacklogServer


@pytest.fixture
def wide_live_server(transactional_db):
    """Like pytest-django's live_server (a thread per request, each with its own database
    connection), with a listen backlog that takes 50 simultaneous senders."""
    thread = _WideLiveServerThread("127.0.0.1", _StaticFilesHandler)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    yield f"http://127.0.0.1:{thread.port}"
    thread.terminate()


def post_together(url: str, bodies: list[dict]) -> list[int]:
    """Send every body from its own thread, all released at the same moment."""
    barrier = threading.Barrier(len(bodies))
    answers: list[int | str] = [0] * len(bodies)

    def send(index: int, body: dict) -> None:
        with requests.Session() as session:
            barrier.wait()
            try:
                answers[index] = session.post(f"{url}/webhooks/midtrans", json=body, timeout=60).status_code
            except requests.RequestException as exc:
                answers[index] = f"{type(exc).__name__}"

    threads = [threading.Thread(target=send, args=(i, body)) for i, body in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


def paid_transitions(order_id: str) -> int:
    return AuditEntry.objects.filter(
        action="order_status_changed", object_id=order_id, new_value__status="PAID"
    ).count()


def test_fifty_concurrent_identical_settlements_pay_once(wide_live_server, settings):
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = False
    attempt = attempt_create()
    body = midtrans_body(attempt.midtrans_order_id, "settlement")

    answers = post_together(wide_live_server, [body] * 50)

    assert answers == [200] * 50
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    assert Entitlement.objects.filter(order_id=attempt.order_id).count() == 1
    assert paid_transitions(attempt.order_id) == 1
    assert PaymentEvent.objects.count() == 1 and PaymentEvent.objects.get().result == "applied"
    assert Notification.objects.filter(reference=attempt.order_id, template="payment_received").count() == 2


def test_twenty_concurrent_settlements_confirmed_with_the_simulator_pay_once(midtrans_sim, settings):
    # Each request also calls the status API on the same server: 2 connections per request,
    # so fewer senders than above keep the shared PostgreSQL within its connection limit.
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = True
    # Enough call slots that a loaded machine sheds none with 503 (Midtrans would retry it):
    # applying once is under test here; shedding has tests of its own.
    settings.MIDTRANS_MAX_CONCURRENT_CALLS = 20
    midtrans_sim.pause_deliveries()
    attempt = sim_attempt_create()
    midtrans_sim.pay(attempt.midtrans_order_id)
    body = midtrans_sim.notifications(attempt.midtrans_order_id)[-1].payload

    answers = post_together(midtrans_sim.live_url, [body] * 20)

    assert answers == [200] * 20
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    assert Entitlement.objects.filter(order_id=attempt.order_id).count() == 1
    assert paid_transitions(attempt.order_id) == 1


def test_settlement_racing_an_expire_ends_paid_exactly_once(live_server, settings):
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = False
    attempts = [attempt_create(attempt_status=A.PENDING) for _ in range(8)]

    for attempt in attempts:
        settlement = midtrans_body(attempt.midtrans_order_id, "settlement")
        expire = midtrans_body(attempt.midtrans_order_id, "expire")
        answers = post_together(live_server.url, [settlement, expire, settlement, expire])

        assert answers == [200] * 4
        assert refreshed(attempt) == (OS.PAID, A.PAID)
        assert Entitlement.objects.filter(order_id=attempt.order_id).count() == 1
        assert paid_transitions(attempt.order_id) == 1
        assert Notification.objects.filter(reference=attempt.order_id, template="payment_received").count() == 2
