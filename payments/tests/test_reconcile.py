"""Reconciliation against the Midtrans simulator over real HTTP: nothing settled stays lost,
nothing past its window stays payable."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from entitlements.models import Entitlement
from notifications.models import Notification
from payments.models import AuditEntry, Order, PaymentAttempt, PaymentEvent
from payments.services.reconcile import reconcile_run
from payments.tests.midtrans_payloads import midtrans_body
from payments.tests.payment_support import (
    attempt_create,
    payment_state,
    refreshed,
    sim_attempt_create,
    webhook_post,
)

pytestmark = pytest.mark.django_db(transaction=True)

OS = Order.Status
A = PaymentAttempt.Status


def make_stale(attempt, minutes=10):
    PaymentAttempt.objects.filter(pk=attempt.pk).update(updated_at=timezone.now() - timedelta(minutes=minutes))


def make_due(attempt):
    Order.objects.filter(pk=attempt.order_id).update(expires_at=timezone.now() - timedelta(minutes=1))


def run_command(*args) -> str:
    out = StringIO()
    call_command("reconcile_payments", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_sweep_finds_a_settled_payment_whose_notifications_were_all_lost(sim):
    # given: paid at Midtrans, no notification ever arrived
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    make_stale(attempt)

    # when
    output = run_command()

    # then
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    assert Entitlement.objects.get(order_id=attempt.order_id).status == "active"
    assert f"order {attempt.order_id} PENDING_PAYMENT -> PAID" in output
    event = PaymentEvent.objects.get()
    assert (event.source, event.result) == ("reconcile", "applied")
    assert AuditEntry.objects.get(action="order_status_changed").actor == "reconcile-command"
    assert Notification.objects.filter(reference=attempt.order_id, template="payment_received").count() == 2


def test_fresh_attempts_are_left_alone(sim):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)

    report = reconcile_run()

    assert report.checked == 0
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.OPEN)


def test_pending_attempt_past_the_window_is_expired_at_midtrans_then_locally(sim):
    attempt = sim_attempt_create()
    sim.choose(attempt.midtrans_order_id)
    make_due(attempt)

    output = run_command()

    assert sim.transaction(attempt.midtrans_order_id).transaction_status == "expire"
    assert refreshed(attempt) == (OS.EXPIRED, A.EXPIRED)
    assert "expired at Midtrans" in output
    assert Notification.objects.filter(reference=attempt.order_id, template="order_expired").count() == 1
    # A late payment cannot start any more: the simulator refuses to settle it.
    with pytest.raises(Exception, match="settlement"):
        sim.trigger(attempt.midtrans_order_id, "settlement")


def test_unstarted_attempt_past_the_window_has_its_snap_session_cancelled(sim):
    attempt = sim_attempt_create()
    make_due(attempt)

    run_command()

    assert sim.transaction(attempt.midtrans_order_id).token_canceled_at is not None
    assert refreshed(attempt) == (OS.EXPIRED, A.EXPIRED)
    assert PaymentEvent.objects.get().payload["status_message"].startswith("expired by reconciliation")


def test_order_past_the_window_that_was_paid_is_paid_not_expired(sim):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    make_due(attempt)

    run_command()

    assert sim.transaction(attempt.midtrans_order_id).transaction_status == "settlement"
    assert refreshed(attempt) == (OS.PAID, A.PAID)


def test_order_past_the_window_without_live_attempts_expires():
    attempt = attempt_create(attempt_status=A.FAILED, expires_at=timezone.now() - timedelta(minutes=1))

    report = reconcile_run()

    assert refreshed(attempt) == (OS.EXPIRED, A.FAILED)
    assert any("PENDING_PAYMENT -> EXPIRED" in line for line in report.changes)


def test_event_left_unprocessed_by_a_503_is_applied_by_the_sweep(sim, live_server, settings):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    body = sim.notifications(attempt.midtrans_order_id)[-1].payload
    sim.faults(down=True)
    assert webhook_post(live_server.url, body).status_code == 503
    sim.faults_reset()
    from django.core.cache import cache

    cache.clear()  # the breaker the failure counted towards
    settings.RECONCILE_EVENT_GRACE_SECONDS = 0

    report = reconcile_run()

    assert refreshed(attempt) == (OS.PAID, A.PAID)
    assert PaymentEvent.objects.get(transaction_status="settlement").result == "applied"
    assert report.errors == []


def test_orphan_is_matched_once_its_attempt_exists(sim, live_server, settings):
    # given: a signed settlement for a Midtrans id we do not know yet
    orphan_id = "BF-20261122-LATE0001-1"
    assert webhook_post(live_server.url, midtrans_body(orphan_id, "settlement")).json()["result"] == "orphan"
    assert reconcile_run().checked == 0  # still unknown: not even asked about

    # when: the attempt appears (and Midtrans has it settled)
    order = attempt_create().order
    attempt = PaymentAttempt.objects.create(order=order, number=2, midtrans_order_id=orphan_id, amount=order.amount)
    from payments import midtrans

    midtrans.snap_create(payload={"transaction_details": {"order_id": orphan_id, "gross_amount": order.amount}})
    sim.pay(orphan_id)
    report = reconcile_run()

    # then
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    event = PaymentEvent.objects.get(midtrans_order_id=orphan_id, source="webhook")
    assert (event.result, event.attempt_id) == ("applied", attempt.pk)
    assert any("orphan event" in line for line in report.changes)


def test_dry_run_reads_and_reports_but_changes_nothing(sim):
    paid = sim_attempt_create()
    sim.pay(paid.midtrans_order_id)
    make_stale(paid)
    due = sim_attempt_create()
    sim.choose(due.midtrans_order_id)
    make_due(due)
    before = payment_state(), PaymentEvent.objects.count(), Notification.objects.count()

    output = run_command("--dry-run")

    assert (payment_state(), PaymentEvent.objects.count(), Notification.objects.count()) == before
    assert sim.transaction(due.midtrans_order_id).transaction_status == "pending"
    assert f"[dry-run] {paid.midtrans_order_id}: applied" in output
    assert "would close it at Midtrans" in output
    assert "dry_run=yes" in output


def test_order_option_syncs_only_that_order_even_when_fresh(sim):
    one = sim_attempt_create()
    other = sim_attempt_create()
    sim.pay(one.midtrans_order_id)
    sim.pay(other.midtrans_order_id)

    run_command("--order", one.order_id)

    assert refreshed(one) == (OS.PAID, A.PAID)
    assert refreshed(other) == (OS.PENDING_PAYMENT, A.OPEN)


def test_order_sync_picks_up_a_refund_made_in_the_dashboard(sim):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id, method="gopay")
    run_command("--order", attempt.order_id)
    sim.trigger(attempt.midtrans_order_id, "refund")  # notification never delivered

    run_command("--order", attempt.order_id)

    assert refreshed(attempt) == (OS.REFUNDED, A.REFUNDED)
    assert Entitlement.objects.get(order_id=attempt.order_id).status == "revoked"


def test_since_limits_the_sweep(sim):
    old = sim_attempt_create()
    sim.pay(old.midtrans_order_id)
    make_stale(old)
    PaymentAttempt.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))

    run_command("--since", (timezone.now() - timedelta(days=1)).isoformat())
    assert refreshed(old) == (OS.PENDING_PAYMENT, A.OPEN)

    run_command("--since", (timezone.now() - timedelta(days=4)).date().isoformat())
    assert refreshed(old) == (OS.PAID, A.PAID)


@pytest.mark.parametrize("args", [["--since", "yesterday"], ["--order", "BF-NOPE"]])
def test_bad_arguments_are_a_clear_error_and_change_nothing(args):
    attempt = attempt_create(expires_at=timezone.now() - timedelta(minutes=1), attempt_status=A.FAILED)
    before = payment_state()

    with pytest.raises(CommandError):
        run_command(*args)

    assert payment_state() == before
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.FAILED)


def test_midtrans_down_stops_the_sweep_and_changes_nothing(sim):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    make_stale(attempt)
    sim.faults(down=True)
    before = payment_state()

    with pytest.raises(CommandError, match="unavailable"):
        run_command()

    assert payment_state() == before


def test_periodic_task_runs_the_sweep_and_is_scheduled_every_five_minutes(sim, settings):
    from payments.tasks import payments_reconcile

    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    make_stale(attempt)

    result = payments_reconcile.apply().get()

    assert result["checked"] >= 1 and result["errors"] == 0
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    entry = settings.CELERY_BEAT_SCHEDULE["payments-reconcile"]
    assert (entry["task"], entry["schedule"]) == ("payments.reconcile", 300)
    assert payments_reconcile.apply().get()["changed"] == 0  # safe to run twice


def test_replay_command_by_id_reapplies_without_double_effects(sim, live_server):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    body = sim.notifications(attempt.midtrans_order_id)[-1].payload
    assert webhook_post(live_server.url, body).status_code == 200
    event = PaymentEvent.objects.get(transaction_status="settlement")
    out = StringIO()

    call_command("replay_payment_events", "--id", str(event.pk), stdout=out)

    assert "replayed=1 failed=0" in out.getvalue()
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    assert Entitlement.objects.count() == 1
    assert AuditEntry.objects.filter(action="order_status_changed").count() == 1


def test_replay_of_an_unknown_id_is_an_error():
    with pytest.raises(CommandError, match="No payment event"):
        call_command("replay_payment_events", "--id", "999999")
