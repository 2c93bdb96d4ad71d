"""Refunds through the Midtrans simulator (real HTTP), offline refunds, concurrency, the command."""

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from entitlements.models import Entitlement
from notifications.models import Notification
from payments.models import AuditEntry, Order, PaymentAttempt, Refund
from payments.services.refunds import RefundRefused, refund_request
from payments.tests.payment_support import sim_attempt_create

pytestmark = pytest.mark.django_db(transaction=True)

OS = Order.Status
A = PaymentAttempt.Status


def paid(sim, method: str = "gopay") -> PaymentAttempt:
    """An order paid at the simulator with `method`, the notification applied."""
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id, method=method)
    sim.deliver()
    attempt.refresh_from_db()
    assert attempt.order.status == OS.PAID
    return attempt


def state(attempt: PaymentAttempt) -> tuple:
    order = Order.objects.get(pk=attempt.order_id)
    attempt.refresh_from_db()
    entitlement = Entitlement.objects.filter(order_id=order.pk).values_list("status", flat=True).first()
    return order.status, order.refunded_amount, attempt.status, entitlement


def everything() -> tuple:
    return (
        sorted(Order.objects.values_list("id", "status", "refunded_amount", "needs_review")),
        sorted(PaymentAttempt.objects.values_list("midtrans_order_id", "status", "refunded_amount")),
        sorted(Refund.objects.values_list("refund_key", "status", "amount")),
        sorted(Entitlement.objects.values_list("order_id", "status")),
        AuditEntry.objects.count(),
        Notification.objects.count(),
    )


def sim_refunds(sim, attempt) -> list:
    return sim.transaction(attempt.midtrans_order_id).refunds


def test_full_refund_is_requested_then_confirmed_by_the_notification_and_the_bank(sim, settings):
    # given a card payment
    settings.MIDTRANS_SIMULATOR_TIME_COMPRESSION = 1000  # the bank confirms 60 ms after the refund
    attempt = paid(sim)

    # when an operator refunds it
    outcome = refund_request(
        order_id=attempt.order_id, reason="customer_request", note="asked by email", operator="siti"
    )

    # then Midtrans has it, and it is requested until Midtrans confirms it
    refund = outcome.refund
    assert refund.status == Refund.Status.REQUESTED and refund.midtrans_accepted_at is not None
    assert refund.amount == 99000 and refund.refund_key == f"{attempt.midtrans_order_id}-R1"
    assert [r["refund_key"] for r in sim_refunds(sim, attempt)] == [refund.refund_key]
    assert state(attempt) == (OS.PAID, 0, A.PAID, "active")

    # when Midtrans' refund notification arrives
    sim.deliver()

    # then the order is refunded, access revoked, the customer told by email and WhatsApp
    refund.refresh_from_db()
    assert refund.status == Refund.Status.CONFIRMED
    assert state(attempt) == (OS.REFUNDED, 99000, A.REFUNDED, "revoked")
    messages = Notification.objects.filter(reference=attempt.order_id, template="refund_processed")
    assert sorted(messages.values_list("channel", flat=True)) == ["email", "whatsapp"]
    email = messages.get(channel="email")
    assert "Rp99.000" in email.body_text and "tidak aktif lagi" in email.body_text
    # audited with the operator and the reason
    requested = AuditEntry.objects.get(action="refund_requested")
    assert requested.actor == "siti" and requested.new_value["reason"] == "customer_request"
    assert requested.new_value["note"] == "asked by email"

    # and when the bank confirms (Midtrans' second notification), the refund says so, nothing else changes
    sim.status_body(attempt.midtrans_order_id)  # makes the due confirmation go out
    sim.deliver()
    refund.refresh_from_db()
    assert refund.bank_confirmed_at is not None
    assert AuditEntry.objects.filter(action="refund_bank_confirmed").count() == 1
    assert messages.count() == 2
    assert len(sim_refunds(sim, attempt)) == 1


def test_partial_then_full_refund(sim):
    attempt = paid(sim, method="gopay")

    first = refund_request(order_id=attempt.order_id, amount=40000, reason="not_delivered", operator="siti")
    sim.deliver()
    assert state(attempt) == (OS.PARTIALLY_REFUNDED, 40000, A.PARTIALLY_REFUNDED, "active")

    # "all that remains" is the other 59.000
    second = refund_request(order_id=attempt.order_id, reason="customer_request", operator="siti")
    sim.deliver()

    assert second.refund.amount == 59000
    assert state(attempt) == (OS.REFUNDED, 99000, A.REFUNDED, "revoked")
    assert [r.status for r in Refund.objects.order_by("pk")] == ["confirmed", "confirmed"]
    assert first.refund.refund_key != second.refund.refund_key
    # one message per refund, each with its own amount
    emails = Notification.objects.filter(template="refund_processed", channel="email").order_by("id")
    assert ["Rp40.000" in e.body_text for e in emails] == [True, False]
    assert "Rp59.000" in emails[1].body_text


def test_refund_over_the_remaining_amount_is_refused_and_changes_nothing(sim):
    attempt = paid(sim)
    refund_request(order_id=attempt.order_id, amount=90000, reason="other", operator="siti")
    sim.deliver()
    before = everything(), len(sim.api_calls("refund"))

    with pytest.raises(RefundRefused, match=r"Rp 10.000 is more than what remains refundable .* \(Rp 9.000\)"):
        refund_request(order_id=attempt.order_id, amount=10000, reason="other", operator="siti")

    assert (everything(), len(sim.api_calls("refund"))) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reason": "because"}, "Unknown refund reason 'because'"),
        ({"amount": 0}, "above 0"),
        ({"amount": -5}, "above 0"),
        ({"reference": "TRX-1"}, "only for an offline refund"),
        ({"offline": True}, "needs the reference"),
        ({"order_id": "BF-NOPE"}, "No order 'BF-NOPE'"),
        ({"attempt": "BF-OTHER-1"}, "has no payment 'BF-OTHER-1'"),
    ],
)
def test_bad_refund_input_is_refused_clearly_and_changes_nothing(sim, kwargs, message):
    attempt = paid(sim)
    before = everything(), len(sim.api_calls("refund"))
    args = {"order_id": attempt.order_id, "reason": "other", "operator": "siti"} | kwargs

    with pytest.raises(RefundRefused, match=message):
        refund_request(**args)

    assert (everything(), len(sim.api_calls("refund"))) == before


def test_an_unpaid_order_cannot_be_refunded(sim):
    attempt = sim_attempt_create()
    before = everything()
    with pytest.raises(RefundRefused, match="has no payment to refund"):
        refund_request(order_id=attempt.order_id, reason="other", operator="siti")
    assert everything() == before


def test_a_virtual_account_payment_is_refunded_offline_with_the_same_effects(sim):
    # given a BCA virtual account payment, which Midtrans cannot refund
    attempt = paid(sim, method="bca_va")
    before = everything()
    with pytest.raises(RefundRefused, match="Midtrans cannot refund bank_transfer payments"):
        refund_request(order_id=attempt.order_id, reason="customer_request", operator="siti")
    assert everything() == before

    # when the operator sends the money by hand and records it
    outcome = refund_request(
        order_id=attempt.order_id,
        reason="customer_request",
        operator="siti",
        offline=True,
        reference="BCA-TRF-20261204-001",
    )

    # then: confirmed at once, no Midtrans call, the same effects as a Midtrans refund
    assert outcome.refund.status == Refund.Status.CONFIRMED
    assert outcome.refund.offline_reference == "BCA-TRF-20261204-001"
    assert sim.api_calls("refund") == []
    assert state(attempt) == (OS.REFUNDED, 99000, A.REFUNDED, "revoked")
    assert Notification.objects.filter(template="refund_processed").count() == 2
    change = AuditEntry.objects.get(action="order_status_changed", new_value__status="REFUNDED")
    assert change.actor == "siti"
    assert AuditEntry.objects.get(action="refund_requested").new_value["reference"] == "BCA-TRF-20261204-001"
    # and a later sweep reading "settlement" at Midtrans does not undo it
    call_command("reconcile_payments", "--order", attempt.order_id, stdout=StringIO())
    assert state(attempt) == (OS.REFUNDED, 99000, A.REFUNDED, "revoked")


def test_partial_offline_refund_keeps_access(sim):
    attempt = paid(sim, method="bca_va")
    refund_request(
        order_id=attempt.order_id, amount=20000, reason="other", operator="siti", offline=True, reference="T-1"
    )
    assert state(attempt) == (OS.PARTIALLY_REFUNDED, 20000, A.PARTIALLY_REFUNDED, "active")
    refund_request(order_id=attempt.order_id, reason="other", operator="siti", offline=True, reference="T-2")
    assert state(attempt) == (OS.REFUNDED, 99000, A.REFUNDED, "revoked")


def test_a_card_payment_is_not_recorded_as_offline(sim):
    attempt = paid(sim)
    before = everything()
    with pytest.raises(RefundRefused, match="which Midtrans refunds"):
        refund_request(order_id=attempt.order_id, reason="other", operator="siti", offline=True, reference="X")
    assert everything() == before


def test_timeout_then_retry_refunds_once(sim, settings):
    # given a card payment, and a Midtrans that answers the refund after our read timeout
    attempt = paid(sim)
    settings.MIDTRANS_READ_TIMEOUT = 0.5
    sim.faults(latency_ms=1500)

    # when the operator refunds: the call times out
    first = refund_request(order_id=attempt.order_id, reason="customer_request", operator="siti")
    assert first.refund.status == Refund.Status.REQUESTED and first.refund.midtrans_accepted_at is None
    assert "did not answer" in first.message
    sim.faults_reset()

    # and a second operator trying a different refund meanwhile is refused
    with pytest.raises(RefundRefused, match="still waiting"):
        refund_request(order_id=attempt.order_id, amount=1000, reason="other", operator="andi")

    # when the operator asks again for the same refund (Midtrans did refund it, late)
    _wait_for(lambda: len(sim_refunds(sim, attempt)) == 1 and len(sim.api_calls("refund")) == 1)
    again = refund_request(order_id=attempt.order_id, reason="customer_request", operator="siti")

    # then the same refund (same key) was retried; Midtrans knew the key ("Duplicate refund ID"),
    # so it is already requested and a status read confirmed it: one refund at Midtrans, one
    # row here, the order refunded
    assert again.resumed and again.refund.pk == first.refund.pk
    assert again.refund.midtrans_accepted_at is not None
    assert len(sim.api_calls("refund")) == 2
    assert [r["refund_key"] for r in sim_refunds(sim, attempt)] == [first.refund.refund_key]
    assert Refund.objects.count() == 1
    # the late notifications change nothing more and tell the customer once
    sim.deliver()
    assert Refund.objects.get().status == Refund.Status.CONFIRMED
    assert state(attempt) == (OS.REFUNDED, 99000, A.REFUNDED, "revoked")
    assert Notification.objects.filter(template="refund_processed", channel="email").count() == 1


def test_gateway_timeout_then_retry_refunds_once(sim, settings):
    # given Midtrans' gateway gives up before the refund is made (504)
    attempt = paid(sim)
    sim.faults(timeout=True, timeout_seconds=0.1)
    first = refund_request(order_id=attempt.order_id, reason="customer_request", operator="siti")
    assert first.refund.status == Refund.Status.REQUESTED and sim_refunds(sim, attempt) == []
    sim.faults_reset()

    # when retried, the refund is made once, with the same key
    again = refund_request(order_id=attempt.order_id, reason="customer_request", operator="siti")
    sim.deliver()

    assert again.resumed
    assert [r["refund_key"] for r in sim_refunds(sim, attempt)] == [first.refund.refund_key]
    assert state(attempt) == (OS.REFUNDED, 99000, A.REFUNDED, "revoked")


def test_midtrans_refusal_fails_the_refund_and_moves_no_money(sim):
    # given a payment Midtrans already refunded fully in its dashboard, unknown to us
    attempt = paid(sim)
    sim.trigger(attempt.midtrans_order_id, "refund")  # notification not delivered

    outcome = refund_request(order_id=attempt.order_id, amount=5000, reason="other", operator="siti")

    assert outcome.refund.status == Refund.Status.FAILED
    assert "No money was moved" in outcome.message
    assert AuditEntry.objects.filter(action="refund_failed").count() == 1


def _wait_for(predicate, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_two_operators_refunding_at_once_end_with_one_refund(sim):
    attempt = paid(sim)
    barrier = threading.Barrier(2)
    results: list = []

    def operator(name):
        try:
            barrier.wait()
            results.append(refund_request(order_id=attempt.order_id, reason="duplicate", operator=name))
        except RefundRefused as exc:
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=operator, args=(name,)) for name in ("siti", "andi")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sim.deliver()

    refused = [r for r in results if isinstance(r, RefundRefused)]
    assert len(refused) == 1 and "still waiting" in str(refused[0])
    assert Refund.objects.count() == 1
    assert len(sim_refunds(sim, attempt)) == 1
    assert state(attempt) == (OS.REFUNDED, 99000, A.REFUNDED, "revoked")


def test_a_double_payment_is_refunded_from_the_same_action(sim):
    # given an order paid twice (the second payment flagged for review)
    first = paid(sim)
    second = sim_attempt_create(order=Order.objects.get(pk=first.order_id))
    sim.pay(second.midtrans_order_id, method="gopay")
    sim.deliver()
    order = Order.objects.get(pk=first.order_id)
    assert order.needs_review and "Double payment" in order.review_reason

    # the operator must say which payment
    with pytest.raises(RefundRefused, match="paid more than once"):
        refund_request(order_id=order.pk, reason="duplicate", operator="siti")

    # when the second payment is refunded
    refund_request(order_id=order.pk, reason="duplicate", operator="siti", attempt=second.midtrans_order_id)
    sim.deliver()

    # then that payment is refunded, the order stays paid and access stays; the customer is told
    second.refresh_from_db()
    assert second.status == A.REFUNDED
    assert state(first) == (OS.PAID, 0, A.PAID, "active")
    email = Notification.objects.get(template="refund_processed", channel="email")
    assert "Rp99.000" in email.body_text and "tidak aktif" not in email.body_text


def test_refund_order_command(sim):
    attempt = paid(sim)
    out = StringIO()
    call_command(
        "refund_order", attempt.order_id, "--amount", "9000", "--reason", "other", "--note", "goodwill", stdout=out
    )
    assert "accepted refund" in out.getvalue()
    refund = Refund.objects.get()
    assert (refund.amount, refund.note, refund.operator.startswith("shell:")) == (9000, "goodwill", True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reason", "nope"], "is not a refund reason"),
        (["--reason", "other", "--amount", "abc"], "not a whole number"),
        (["--reason", "other", "--amount", "0"], "above 0"),
        (["--reason", "other", "--offline"], "needs --reference"),
        (["--reason", "other", "--amount", "100000"], "more than what remains"),
        (["--reason", "other", "--operator", "ghost"], "No active user 'ghost'"),
    ],
)
def test_refund_order_command_refuses_bad_input_and_changes_nothing(sim, args, message):
    attempt = paid(sim)
    before = everything()
    with pytest.raises(CommandError, match=message):
        call_command("refund_order", attempt.order_id, *args, stdout=StringIO())
    assert everything() == before


def test_refund_order_command_checks_the_named_operators_permission(sim, django_user_model):
    from django.contrib.auth.models import Permission

    attempt = paid(sim)
    django_user_model.objects.create_user("andi", is_staff=True)
    before = everything()
    with pytest.raises(CommandError, match="lacks the permission 'Can refund order'"):
        call_command("refund_order", attempt.order_id, "--reason", "other", "--operator", "andi", stdout=StringIO())
    assert everything() == before

    user = django_user_model.objects.create_user("siti", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="refund_order"))
    call_command("refund_order", attempt.order_id, "--reason", "other", "--operator", "siti", stdout=StringIO())
    assert Refund.objects.get().operator == "siti"


# --- from the admin's order page --------------------------------------------------------------


@pytest.fixture
def refunder(client, django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("siti", "siti@buatfilm.test", "pw-for-tests", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_order", "refund_order", "sync_order"]))
    client.force_login(user)
    return client


def test_operator_refunds_from_the_order_page_and_syncs_it(sim, refunder):
    from django.urls import reverse

    attempt = paid(sim)
    page = refunder.get(reverse("admin:payments_order_change", args=[attempt.order_id])).content.decode()
    assert "Refund" in page and "Sync from Midtrans" in page
    form = refunder.get(reverse("admin:payments_order_refund", args=[attempt.order_id])).content.decode()
    assert attempt.midtrans_order_id in form and "customer_request" in form

    response = refunder.post(
        reverse("admin:payments_order_refund", args=[attempt.order_id]),
        {"attempt": attempt.midtrans_order_id, "amount": "30000", "reason": "customer_request", "note": "kurang puas"},
        follow=True,
    )

    assert any("Midtrans accepted refund" in str(m) for m in response.context["messages"])
    assert Refund.objects.get().status == Refund.Status.REQUESTED
    # the notification is lost; the operator's "Sync from Midtrans" button confirms it
    response = refunder.post(reverse("admin:payments_order_sync", args=[attempt.order_id]), follow=True)
    assert any("PAID -> PARTIALLY_REFUNDED" in str(m) for m in response.context["messages"])
    assert Refund.objects.get().status == Refund.Status.CONFIRMED
    assert state(attempt) == (OS.PARTIALLY_REFUNDED, 30000, A.PARTIALLY_REFUNDED, "active")
    assert AuditEntry.objects.get(action="refund_requested").actor == "siti"
    page = refunder.get(reverse("admin:payments_order_change", args=[attempt.order_id])).content.decode()
    assert f"{attempt.midtrans_order_id}-R1" in page and "kurang puas" in page


def test_admin_refund_over_the_remaining_amount_is_refused_and_changes_nothing(sim, refunder):
    from django.urls import reverse

    attempt = paid(sim)
    before = everything(), len(sim.api_calls("refund"))

    response = refunder.post(
        reverse("admin:payments_order_refund", args=[attempt.order_id]),
        {"attempt": attempt.midtrans_order_id, "amount": "150000", "reason": "other"},
    )

    html = response.content.decode()
    assert response.status_code == 200 and "more than what remains refundable" in html and "Nothing was changed" in html
    assert (everything(), len(sim.api_calls("refund"))) == before


def test_the_sweep_resends_an_unanswered_refund_with_its_key_and_confirms_it(sim):
    from django.utils import timezone

    from payments.services.refunds import SWEEP_MIN_AGE_SECONDS, refunds_sweep

    # given a refund whose call timed out before Midtrans made it, and nobody retried
    attempt = paid(sim)
    sim.faults(timeout=True, timeout_seconds=0.1)
    first = refund_request(order_id=attempt.order_id, reason="customer_request", operator="siti")
    sim.faults_reset()
    Refund.objects.filter(pk=first.refund.pk).update(
        requested_at=timezone.now() - timezone.timedelta(seconds=SWEEP_MIN_AGE_SECONDS + 1)
    )

    # when the sweep runs (twice, as beat may)
    report = refunds_sweep()
    sim.deliver()
    refunds_sweep()

    # then the refund was sent again with the same key, once, and confirmed
    assert report.retried and report.retried[0].startswith(first.refund.refund_key)
    assert [r["refund_key"] for r in sim_refunds(sim, attempt)] == [first.refund.refund_key]
    assert Refund.objects.get().status == Refund.Status.CONFIRMED
    assert state(attempt) == (OS.REFUNDED, 99000, A.REFUNDED, "revoked")


def test_the_sweep_confirms_a_refund_whose_notification_was_lost(sim):
    from django.utils import timezone

    from payments.services.refunds import refunds_sweep

    attempt = paid(sim)
    refund_request(order_id=attempt.order_id, amount=10000, reason="other", operator="siti")
    Refund.objects.update(requested_at=timezone.now() - timezone.timedelta(hours=1))

    report = refunds_sweep()

    assert len(report.confirmed) == 1 and not report.retried
    assert state(attempt) == (OS.PARTIALLY_REFUNDED, 10000, A.PARTIALLY_REFUNDED, "active")
    assert len(sim.api_calls("refund")) == 1
