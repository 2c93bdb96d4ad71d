"""A captured notification replayed with extra fields: Midtrans signs only order_id,
status_code and gross_amount, so every other field is free to change. Deduplication goes by
what a notification means, not by its raw body."""

import json

import pytest

from entitlements.models import Entitlement
from notifications.models import Notification
from payments.models import EventResult, Order, PaymentAttempt, PaymentEvent
from payments.services.events import dedup_key_of, meaning_of
from payments.tests.midtrans_payloads import midtrans_body
from payments.tests.payment_support import refreshed, sim_attempt_create

OS = Order.Status
A = PaymentAttempt.Status


def _post(client, body: dict):
    # In-process (Django's test client): 300 requests to the live server would each hold a
    # database connection on their own server thread. The status API is still real HTTP.
    return client.post("/webhooks/midtrans", data=json.dumps(body), content_type="application/json")


@pytest.mark.django_db(transaction=True)
def test_300_replays_with_an_extra_field_each_make_no_row_and_no_status_call(sim, client):
    # given: a genuine settlement, delivered and applied
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id, method="bca_va")
    sim.deliver()
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    genuine = sim.notifications(attempt.midtrans_order_id)[-1].payload
    events_before = PaymentEvent.objects.count()
    status_calls_before = len(sim.api_calls("status"))
    messages_before = Notification.objects.count()

    # when: it is replayed 300 times, each copy with one extra (unsigned) field
    answers = [_post(client, {**genuine, f"extra_{i}": str(i)}) for i in range(300)]

    # then: each answered 200 as a duplicate; no new row, no status call, no second effect
    assert {(a.status_code, a.json()["result"]) for a in answers} == {(200, EventResult.DUPLICATE)}
    assert PaymentEvent.objects.count() == events_before
    assert PaymentEvent.objects.filter(transaction_status="settlement").count() == 1
    assert len(sim.api_calls("status")) == status_calls_before
    assert Notification.objects.count() == messages_before
    assert Entitlement.objects.filter(order_id=attempt.order_id).count() == 1


@pytest.mark.django_db(transaction=True)
def test_each_distinct_meaning_is_recorded_once_with_at_most_one_status_call(sim, client):
    # given: an attempt waiting for money
    attempt = sim_attempt_create()
    sim.choose(attempt.midtrans_order_id, "bca_va")
    sim.deliver()
    status_calls_before = len(sim.api_calls("status"))
    events_before = PaymentEvent.objects.count()
    body = midtrans_body(attempt.midtrans_order_id, "pending")
    variants = [
        {**body, "fraud_status": "challenge"},
        {**body, "transaction_id": "5c1f4d1e-0000-4000-8000-000000000001"},
        {**body, "settlement_time": "2026-11-22 10:06:00"},
    ]

    # when: each variant is sent three times, with noise that means nothing
    for variant in variants:
        for i in range(3):
            assert _post(client, {**variant, "status_message": f"noise {i}"}).status_code == 200

    # then: one row and one status call per distinct meaning
    assert PaymentEvent.objects.count() == events_before + len(variants)
    assert len(sim.api_calls("status")) == status_calls_before + len(variants)


def test_meaning_ignores_unsigned_extras_and_case_but_not_what_decides():
    body = midtrans_body("BF-20261122-7K3QX9AB-1", "settlement")
    key = dedup_key_of(source="webhook", payload=body)

    same = [
        {**body, "extra": "x", "status_message": "other", "merchant_id": "G0"},
        {**body, "transaction_status": "SETTLEMENT", "fraud_status": " Accept "},
        {k: v for k, v in body.items() if k not in {"va_numbers", "currency", "transaction_time"}},
    ]
    assert {dedup_key_of(source="webhook", payload=b) for b in same} == {key}

    different = [
        {**body, "order_id": "BF-20261122-7K3QX9AB-2"},
        {**body, "transaction_id": "another"},
        {**body, "transaction_status": "deny"},
        {**body, "status_code": "202"},
        {**body, "gross_amount": "99000"},
        {**body, "fraud_status": "deny"},
        {**body, "settlement_time": "2026-11-22 10:06:00"},
        {**body, "refund_amount": "1000.00"},
        {**body, "refunds": [{"refund_key": "rf-1", "refund_amount": "1000.00"}]},
    ]
    keys = {dedup_key_of(source="webhook", payload=b) for b in different}
    assert len(keys) == len(different) and key not in keys
    assert dedup_key_of(source="reconcile", payload=body) != key


def test_refund_entries_mean_their_keys_amounts_and_bank_confirmation_not_their_order_or_times():
    body = midtrans_body("BF-20261122-7K3QX9AB-1", "partial_refund", refund_amount="30000.00")
    first = {"refund_chargeback_id": 1, "refund_key": "rf-1", "refund_amount": "10000.00"}
    second = {"refund_chargeback_id": 2, "refund_key": "rf-2", "refund_amount": "20000.00"}
    confirmed = {**first, "bank_confirmed_at": "2026-11-22 11:00:00"}

    listed = meaning_of({**body, "refunds": [first, second]})
    reordered = meaning_of({**body, "refunds": [second, {**first, "created_at": "2026-11-22 10:30:00"}]})
    other_amount = meaning_of({**body, "refunds": [first, {**second, "refund_amount": "25000.00"}]})
    bank_confirmed = meaning_of({**body, "refunds": [confirmed, second]})
    confirmed_at_another_time = meaning_of(
        {**body, "refunds": [{**confirmed, "bank_confirmed_at": "2026-11-22 12:00:00"}, second]}
    )

    assert listed == reordered
    assert listed != other_amount
    assert bank_confirmed != listed  # Midtrans' second refund notification is not a duplicate
    assert bank_confirmed == confirmed_at_another_time


@pytest.mark.django_db(transaction=True)
def test_edited_copies_past_the_cap_are_not_stored_and_a_real_settlement_still_pays(sim, client, settings):
    settings.WEBHOOK_EVENTS_PER_ORDER_ID_MAX = 5
    # given: an attempt waiting for money, its pending notification applied
    attempt = sim_attempt_create()
    sim.choose(attempt.midtrans_order_id, "bca_va")
    sim.deliver()
    pending = sim.notifications(attempt.midtrans_order_id)[-1].payload

    # when: 30 copies arrive, each with an edited (unsigned) transaction id
    for i in range(30):
        assert _post(client, {**pending, "transaction_id": f"edited-{i}"}).status_code == 200

    # then: storage for that order id stops at the cap; nothing was applied from them
    assert PaymentEvent.objects.filter(midtrans_order_id=attempt.midtrans_order_id).count() == 5
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.PENDING)

    # when: the money arrives and Midtrans' own settlement notification comes in
    sim.trigger(attempt.midtrans_order_id, "settlement")
    sim.deliver()

    # then: paid on that call, from the status API's answer, recorded once
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    assert sim.notifications(attempt.midtrans_order_id)[-1].last_http_status == 200
    assert PaymentEvent.objects.filter(transaction_status="settlement", result=EventResult.APPLIED).count() == 1
    assert PaymentEvent.objects.filter(midtrans_order_id=attempt.midtrans_order_id).count() == 6
    assert Entitlement.objects.filter(order_id=attempt.order_id).count() == 1
