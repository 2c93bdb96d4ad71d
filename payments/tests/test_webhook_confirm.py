"""The webhook against the Midtrans simulator over real HTTP (live_server, PostgreSQL):
the status API is asked and its word is what gets applied."""

import time

import pytest
import requests
from django.core.management import call_command
from django.db import connections

from entitlements.models import Entitlement
from payments import midtrans
from payments.models import AuditEntry, Order, PaymentAttempt, PaymentEvent
from payments.tests.midtrans_payloads import midtrans_body
from payments.tests.payment_support import (
    events_by_result,
    payment_state,
    refreshed,
    sim_attempt_create,
    webhook_post,
)

pytestmark = pytest.mark.django_db(transaction=True)

OS = Order.Status
A = PaymentAttempt.Status


def test_trigger_command_settlement_end_to_end_marks_paid(sim):
    # given: a customer chose BCA VA on the simulator's page
    attempt = sim_attempt_create()
    sim.choose(attempt.midtrans_order_id, "bca_va")
    sim.deliver()
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.PENDING)
    assert attempt.va_number == sim.transaction(attempt.midtrans_order_id).va_number

    # when: Midtrans settles it (the simulator's trigger command sends the signed notification)
    call_command("midtrans_sim", attempt.midtrans_order_id, "settlement")

    # then
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    assert Entitlement.objects.get(order_id=attempt.order_id).status == "active"
    notification = sim.notifications(attempt.midtrans_order_id)[-1]
    assert notification.last_http_status == 200
    event = PaymentEvent.objects.get(transaction_status="settlement")
    assert event.confirmed_payload["transaction_status"] == "settlement"
    assert event.confirmed_payload["status_message"] == "Success, transaction is found"  # from GET status
    assert len(sim.api_calls("status")) >= 2


def test_status_api_wins_over_a_validly_signed_notification(sim, live_server):
    attempt = sim_attempt_create()
    sim.choose(attempt.midtrans_order_id)
    sim.deliver()

    # A settlement notification signed with the right key, while Midtrans says "pending".
    response = webhook_post(live_server.url, midtrans_body(attempt.midtrans_order_id, "settlement"))

    assert response.status_code == 200
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.PENDING)
    assert not Entitlement.objects.exists()
    event = PaymentEvent.objects.get(transaction_status="settlement")
    assert event.confirmed_payload["transaction_status"] == "pending"
    assert event.result == "duplicate"


def test_tampered_amount_in_a_signed_notification_loses_to_the_status_api(sim):
    attempt = sim_attempt_create()

    call_command("midtrans_sim", attempt.midtrans_order_id, "settlement", "--amount", "1000")

    assert refreshed(attempt) == (OS.PAID, A.PAID)
    settled = PaymentEvent.objects.filter(gross_amount="1000.00").get()
    assert settled.confirmed_payload["gross_amount"] == "99000.00"


def test_status_api_unreachable_answers_503_keeps_the_event_and_the_sweep_applies_it(sim, live_server):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    body = sim.notifications(attempt.midtrans_order_id)[-1].payload
    sim.faults(down=True)
    before = payment_state()

    started = time.monotonic()
    response = webhook_post(live_server.url, body)
    elapsed = time.monotonic() - started

    assert response.status_code == 503 and response.headers["Retry-After"]
    assert elapsed < 5.0  # Midtrans' patience; never a hang
    assert payment_state() == before
    event = PaymentEvent.objects.get(transaction_status="settlement")
    assert (event.result, event.processed_at) == ("received", None)
    assert "status API" in event.error

    # Midtrans' retry after the outage is applied.
    sim.faults_reset()
    midtrans_circuit_reset()
    assert webhook_post(live_server.url, body).status_code == 200
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    assert PaymentEvent.objects.get(pk=event.pk).result == "applied"


def midtrans_circuit_reset():
    from django.core.cache import cache

    cache.clear()
    assert midtrans.circuit_state()["state"] == "closed"


def test_open_circuit_answers_503_at_once_without_calling_midtrans(sim, live_server, settings):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    body = sim.notifications(attempt.midtrans_order_id)[-1].payload
    settings.MIDTRANS_BREAKER_FAILURES = 1
    settings.MIDTRANS_BREAKER_COOLDOWN = 300
    sim.faults(down=True)
    assert webhook_post(live_server.url, body).status_code == 503  # opens the breaker
    sim.faults_reset()
    assert midtrans.circuit_state()["state"] == "open"
    calls = len(sim.api_calls("status"))

    response = webhook_post(live_server.url, body)

    assert response.status_code == 503
    assert len(sim.api_calls("status")) == calls
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.OPEN)


def test_no_free_call_slot_answers_503_without_calling_midtrans_and_the_retry_applies_it(sim, live_server, settings):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    body = sim.notifications(attempt.midtrans_order_id)[-1].payload
    calls = len(sim.api_calls("status"))
    # every Midtrans call slot of the process held by calls in flight to a slow Midtrans
    settings.MIDTRANS_MAX_CONCURRENT_CALLS = 1
    slots = midtrans._call_slots(midtrans.CORE)
    assert slots.acquire(blocking=False)
    try:
        response = webhook_post(live_server.url, body)
    finally:
        slots.release()

    # Midtrans retries a 503 (reference §3); nothing was applied and the status API was not asked
    assert response.status_code == 503
    assert len(sim.api_calls("status")) == calls
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.OPEN)
    assert not Entitlement.objects.exists()

    # Midtrans' retry, with a slot free, is confirmed and applied
    assert webhook_post(live_server.url, body).status_code == 200
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    assert Entitlement.objects.filter(order_id=attempt.order_id).count() == 1


def test_failure_while_applying_rolls_back_records_the_traceback_and_answers_503(sim, live_server, monkeypatch):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    body = sim.notifications(attempt.midtrans_order_id)[-1].payload
    before = payment_state()

    def broken_grant(**kwargs):
        raise RuntimeError("entitlement store exploded")

    monkeypatch.setattr("payments.services.events.entitlement_grant", broken_grant)
    response = webhook_post(live_server.url, body)

    assert response.status_code == 503
    assert payment_state() == before  # the order change rolled back with the failed grant
    event = PaymentEvent.objects.get(transaction_status="settlement")
    assert event.result == "failed" and event.processing_attempts == 1
    assert "Traceback" in event.error and "entitlement store exploded" in event.error

    # Fixed, the replay command applies it.
    monkeypatch.undo()
    call_command("replay_payment_events", "--failed")
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    assert Entitlement.objects.filter(order_id=attempt.order_id).count() == 1


def test_duplicated_and_reordered_notifications_from_the_simulator_pay_once(sim):
    attempt = sim_attempt_create()

    call_command("midtrans_sim", attempt.midtrans_order_id, "settlement", "--duplicate", "3", "--out-of-order")

    assert refreshed(attempt) == (OS.PAID, A.PAID)
    assert [n.last_http_status for n in sim.notifications(attempt.midtrans_order_id)] == [200] * 4
    assert Entitlement.objects.filter(order_id=attempt.order_id).count() == 1
    assert AuditEntry.objects.filter(action="order_status_changed", new_value__status="PAID").count() == 1
    assert events_by_result().get("applied") == 1


def test_bad_signature_from_the_simulator_is_refused_and_nothing_stored(sim):
    attempt = sim_attempt_create()
    sim.choose(attempt.midtrans_order_id)
    sim.deliver()
    before, events = payment_state(), PaymentEvent.objects.count()

    call_command("midtrans_sim", attempt.midtrans_order_id, "settlement", "--bad-signature", "--no-send")
    rows = sim.deliver()

    assert [row.last_http_status for row in rows] == [401]
    assert payment_state() == before
    assert PaymentEvent.objects.count() == events
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.PENDING)


def test_database_unavailable_answers_503(sim, live_server):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    body = sim.notifications(attempt.midtrans_order_id)[-1].payload

    # The live server's request threads connect with these settings: point them at a closed
    # port (the shared PostgreSQL itself is never touched).
    settings_dict = connections["default"].settings_dict
    saved = (settings_dict["HOST"], settings_dict["PORT"])
    settings_dict["HOST"], settings_dict["PORT"] = "127.0.0.1", "9"
    try:
        response = webhook_post(live_server.url, body)
    finally:
        settings_dict["HOST"], settings_dict["PORT"] = saved

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    # Midtrans retries; with the database back the same notification is applied.
    assert webhook_post(live_server.url, body).status_code == 200
    assert refreshed(attempt) == (OS.PAID, A.PAID)


def test_checkout_pay_notify_then_the_course_platform_sees_access(sim, live_server, settings):
    # given: a customer checks out through the public API
    from payments.tests.checkout_support import checkout_body, launch_package_ensure

    launch_package_ensure()
    settings.CHECKOUT_RATE_LIMIT = ""
    body = checkout_body()
    created = requests.post(f"{live_server.url}/api/checkout/", json=body, timeout=20)
    assert created.status_code == 201, created.text
    order_id = created.json()["order_id"]
    attempt = PaymentAttempt.objects.get(order_id=order_id)

    def access():
        return requests.get(
            f"{live_server.url}/api/entitlements/check/",
            params={"email": body["email"].upper(), "course": "ai-movie-course"},
            headers={"Authorization": f"Bearer {settings.ENTITLEMENTS_API_TOKEN}"},
            timeout=20,
        ).json()

    assert access()["active"] is False

    # when: Midtrans settles and its notifications arrive
    sim.pay(attempt.midtrans_order_id)
    sim.deliver()

    # then
    assert requests.get(f"{live_server.url}/api/orders/{order_id}/", timeout=20).json()["status"] == "PAID"
    answer = access()
    assert (answer["active"], answer["order_id"], answer["email"]) == (True, order_id, body["email"].lower())


def test_hanging_status_api_is_answered_503_well_within_midtrans_patience(sim, live_server):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    body = sim.notifications(attempt.midtrans_order_id)[-1].payload
    sim.faults(timeout=True, timeout_seconds=1.5)  # every status read hangs longer than our 1 s per try

    started = time.monotonic()
    response = webhook_post(live_server.url, body)
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert elapsed < 5.0  # WEBHOOK_STATUS_BUDGET (3 s) over all tries of the status read
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.OPEN)
    assert PaymentEvent.objects.get(transaction_status="settlement").result == "received"
    sim.faults_reset()
    # Let the simulator's hanging request threads finish before the database is torn down.
    time.sleep(max(0.0, started + 1.5 * 3 + 0.5 - time.monotonic()))
