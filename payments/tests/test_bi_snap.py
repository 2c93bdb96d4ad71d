"""BI-SNAP channels (DANA; the Danamon, BSI, SeaBank and Saqu virtual accounts): Midtrans'
status API answers them with the transaction id in `order_id`, and a BSI notification may
carry it there too (midtrans-php #113, #121). Against the simulator over real HTTP, on
PostgreSQL: a settlement is PAID on its webhook call, an orphan named by a transaction id is
matched, and a body naming a different transaction is still refused."""

import pytest

from entitlements.models import Entitlement
from notifications.models import Notification
from payments.models import EventResult, Order, PaymentAttempt, PaymentEvent
from payments.services.reconcile import reconcile_run
from payments.tests.midtrans_payloads import midtrans_body
from payments.tests.payment_support import refreshed, sim_attempt_create, webhook_post

pytestmark = pytest.mark.django_db(transaction=True)

OS = Order.Status
A = PaymentAttempt.Status


def _paid_messages(order_id: str) -> list:
    return list(Notification.objects.filter(template="payment_received", dedupe_key__startswith=f"order:{order_id}:"))


@pytest.mark.parametrize("method", ["dana", "danamon_va", "seabank_va", "saqu_va"])
def test_bi_snap_settlement_is_paid_on_its_webhook_call(sim, method):
    # given: the customer chose a BI-SNAP channel; its pending notification was applied
    attempt = sim_attempt_create()
    sim.choose(attempt.midtrans_order_id, method)
    sim.deliver()
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.PENDING)
    tx = sim.transaction(attempt.midtrans_order_id)
    # (the simulator answers the status API as Midtrans does for these channels)
    assert sim.status_body(attempt.midtrans_order_id)["order_id"] == tx.transaction_id

    # when: Midtrans settles it and the settlement notification arrives
    sim.trigger(attempt.midtrans_order_id, "settlement")
    sim.deliver()

    # then: paid on the webhook call itself, no sweep needed
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    assert attempt.transaction_id == tx.transaction_id
    assert [n.last_http_status for n in sim.notifications(attempt.midtrans_order_id)] == [200, 200]
    settled = PaymentEvent.objects.get(transaction_status="settlement")
    assert settled.result == EventResult.APPLIED
    assert settled.confirmed_payload["order_id"] == tx.transaction_id
    assert not PaymentEvent.objects.exclude(error="").exists()  # nothing deferred as "unconfirmed"
    assert Entitlement.objects.filter(order_id=attempt.order_id, status="active").count() == 1


def test_bsi_notification_named_by_transaction_id_is_matched_by_the_sweep(sim, settings):
    settings.RECONCILE_STALE_MINUTES = 0
    # given: a BSI VA paid; both notifications carry the transaction id as order_id
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id, method="bsi_va")
    tx = sim.transaction(attempt.midtrans_order_id)
    assert [n.payload["order_id"] for n in sim.notifications(attempt.midtrans_order_id)] == [tx.transaction_id] * 2

    # when: they arrive before the attempt knows its transaction id
    sim.deliver()

    # then: kept as orphans (answered 200), nothing paid yet
    assert [n.last_http_status for n in sim.notifications(attempt.midtrans_order_id)] == [200, 200]
    assert set(PaymentEvent.objects.values_list("result", flat=True)) == {EventResult.ORPHAN}
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.OPEN)

    # when: the sweep reads the open attempt by our own order id
    report = reconcile_run()

    # then: it learns the transaction id, applies the settlement and matches the orphans
    assert report.errors == []
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    assert attempt.transaction_id == tx.transaction_id
    assert not PaymentEvent.objects.filter(result=EventResult.ORPHAN).exists()
    orphans = PaymentEvent.objects.filter(midtrans_order_id=tx.transaction_id)
    assert orphans.count() == 2 and all(e.attempt_id == attempt.pk for e in orphans)
    assert Entitlement.objects.filter(order_id=attempt.order_id).count() == 1
    assert sorted(n.channel for n in _paid_messages(attempt.order_id)) == ["email", "whatsapp"]


def test_bsi_settlement_for_a_learned_transaction_id_is_paid_on_its_webhook_call(sim, settings):
    settings.RECONCILE_STALE_MINUTES = 0
    # given: a BSI VA chosen; its pending notification was an orphan until the sweep learned the id
    attempt = sim_attempt_create()
    sim.choose(attempt.midtrans_order_id, "bsi_va")
    sim.deliver()
    reconcile_run()
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.PENDING)
    assert attempt.transaction_id == sim.transaction(attempt.midtrans_order_id).transaction_id

    # when: the customer pays and the settlement (named by transaction id) arrives
    sim.trigger(attempt.midtrans_order_id, "settlement")
    sim.deliver()

    # then: matched through the transaction id and paid on that call
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    settled = PaymentEvent.objects.get(transaction_status="settlement")
    assert settled.midtrans_order_id == attempt.transaction_id
    assert settled.attempt_id == attempt.pk and settled.result == EventResult.APPLIED


def test_status_body_naming_a_transaction_the_notification_does_not_name_is_refused(sim, live_server):
    # given: a DANA payment settled at Midtrans, its notifications not delivered
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id, method="dana")
    genuine = sim.notifications(attempt.midtrans_order_id)[-1].payload

    # when: a copy arrives whose (unsigned) transaction_id names another transaction
    forged = {**genuine, "transaction_id": "0b4e5c8f-0000-4000-8000-000000000000"}
    response = webhook_post(live_server.url, forged)

    # then: answered, not applied: the status API's body names a transaction nobody named
    assert response.status_code == 200 and response.json()["result"] == "unconfirmed"
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.OPEN)
    assert attempt.transaction_id == ""
    assert not Entitlement.objects.exists()
    event = PaymentEvent.objects.get()
    assert event.result == EventResult.RECEIVED and "answered for" in event.error


def test_sweep_refuses_a_body_naming_another_transaction_than_the_attempt_knows(sim, settings):
    settings.RECONCILE_STALE_MINUTES = 0
    # given: the attempt knows transaction T1; Midtrans answers a BI-SNAP body naming T2
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id, method="dana")
    PaymentAttempt.objects.filter(pk=attempt.pk).update(transaction_id="11111111-1111-4111-8111-111111111111")

    # when
    report = reconcile_run()

    # then: refused and said, nothing applied
    assert any("answered for" in error for error in report.errors)
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.OPEN)
    assert "not applied" in attempt.last_error
    assert not Entitlement.objects.exists()


def test_bi_snap_notification_without_confirmation_is_matched_by_transaction_id(sim, settings, live_server):
    # given: confirmation off; the attempt learned its transaction id from a pending notification
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = False
    attempt = sim_attempt_create()
    pending = midtrans_body(attempt.midtrans_order_id, "pending", transaction_id="7d1b9b6e-aaaa-4bbb-8ccc-000000000001")
    assert webhook_post(live_server.url, pending).status_code == 200
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.PENDING)

    # when: the settlement names the attempt by that transaction id (signed over it, as BSI does)
    body = midtrans_body("7d1b9b6e-aaaa-4bbb-8ccc-000000000001", "settlement")
    response = webhook_post(live_server.url, body)

    # then
    assert response.status_code == 200 and response.json()["result"] == "applied"
    assert refreshed(attempt) == (OS.PAID, A.PAID)


def test_unknown_transaction_id_stays_an_orphan(sim, live_server):
    # given: an attempt that knows no transaction id
    attempt = sim_attempt_create()

    # when: a signed notification names some transaction id nobody knows
    response = webhook_post(live_server.url, midtrans_body("9f9f9f9f-0000-4000-8000-00000000abcd", "settlement"))

    # then: kept as an orphan, nothing matched loosely
    assert response.status_code == 200 and response.json()["result"] == "orphan"
    assert PaymentEvent.objects.get().attempt_id is None
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.OPEN)
