"""The reconciliation sweep's own rules, with Midtrans replaced at its edge (payments.midtrans):
which items it reads, in which order, what it does when Midtrans refuses or errs on one item.
The simulator-backed tests in test_reconcile.py cover the happy paths over real HTTP."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from entitlements.models import Entitlement
from notifications.models import Notification
from payments import midtrans
from payments.models import AuditEntry, EventSource, Order, PaymentAttempt, PaymentEvent
from payments.services import reconcile
from payments.services.events import event_record, payment_status_apply
from payments.tests.factories import OrderFactory, PaymentAttemptFactory
from payments.tests.midtrans_payloads import midtrans_body
from payments.tests.payment_support import payment_state, refreshed

pytestmark = pytest.mark.django_db

OS, A = Order.Status, PaymentAttempt.Status


def attempt_make(*, status=A.PENDING, order_status=OS.PENDING_PAYMENT, due=False, idle_hours=2, **kw):
    """An attempt with a Snap token; `due`: its order's payment window passed; `idle_hours`:
    how long ago it last changed (the stale sweep waits RECONCILE_STALE_MINUTES)."""
    order = OrderFactory(status=order_status, **kw)
    if due:
        Order.objects.filter(pk=order.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    attempt = PaymentAttemptFactory(order=order, status=status, snap_token=f"tok-{order.pk}")
    PaymentAttempt.objects.filter(pk=attempt.pk).update(updated_at=timezone.now() - timedelta(hours=idle_hours))
    attempt.refresh_from_db()
    return attempt


class FakeMidtrans:
    """payments.midtrans at its edge: status answers per Midtrans order id (a body, a callable
    returning one, or an exception to raise), and a log of every call."""

    def __init__(self, monkeypatch, answers: dict):
        self.answers = answers
        self.calls: list[tuple[str, str]] = []
        self.cancel_error: Exception | None = None
        monkeypatch.setattr(midtrans, "transaction_status", self.status)
        monkeypatch.setattr(midtrans, "transaction_expire", self.expire)
        monkeypatch.setattr(midtrans, "snap_cancel", self.snap_cancel)

    def status(self, *, midtrans_order_id, timeout=None):
        self.calls.append(("status", midtrans_order_id))
        answer = self.answers[midtrans_order_id]
        if isinstance(answer, Exception):
            raise answer
        return answer() if callable(answer) else answer

    def expire(self, *, midtrans_order_id):
        self.calls.append(("expire", midtrans_order_id))
        self.answers[midtrans_order_id] = midtrans_body(midtrans_order_id, "expire")
        return {"status_code": "407", "transaction_status": "expire"}

    def snap_cancel(self, *, token):
        self.calls.append(("snap_cancel", token))
        if self.cancel_error is not None:
            raise self.cancel_error
        return {"canceled_at": "2026-11-22 10:00:00"}

    def reads(self, midtrans_order_id: str) -> int:
        return self.calls.count(("status", midtrans_order_id))


# --- One item's Midtrans error never stops the sweep (finding 1) -------------------------------


@pytest.mark.parametrize(
    "error",
    [
        midtrans.MidtransNotFound("Midtrans answered HTTP 404", operation="status", http_status=404),
        midtrans.MidtransValidationError("bad request", operation="status", http_status=400),
        midtrans.MidtransUnauthorized("Access denied", operation="status", http_status=401),
    ],
    ids=["http-404", "http-400", "http-401"],
)
def test_a_midtrans_error_on_one_attempt_is_recorded_and_the_sweep_goes_on(monkeypatch, error):
    # given: the oldest stale attempt makes Midtrans answer an error; another one was settled
    poison = attempt_make(status=A.OPEN, idle_hours=5)
    settled = attempt_make(status=A.PENDING, idle_hours=2)
    fake = FakeMidtrans(
        monkeypatch,
        {
            poison.midtrans_order_id: error,
            settled.midtrans_order_id: midtrans_body(settled.midtrans_order_id, "settlement"),
        },
    )

    # when
    report = reconcile.reconcile_run()

    # then: the settled payment is applied, the error is reported and kept on its attempt
    assert refreshed(settled) == (OS.PAID, A.PAID)
    assert Entitlement.objects.get(order_id=settled.order_id).status == "active"
    assert not report.stopped_early
    assert len(report.errors) == 1 and poison.midtrans_order_id in report.errors[0]
    assert type(error).__name__ in report.errors[0]
    assert refreshed(poison) == (OS.PENDING_PAYMENT, A.OPEN)
    poison.refresh_from_db()
    assert type(error).__name__ in poison.last_error and poison.status_checked_at is not None
    assert fake.reads(poison.midtrans_order_id) == 1


def test_the_erring_attempt_goes_to_the_back_of_the_queue(monkeypatch, settings):
    # given: a batch of one, and the oldest stale attempt erring at Midtrans on every read
    settings.RECONCILE_BATCH_SIZE = 1
    poison = attempt_make(status=A.PENDING, idle_hours=5)
    settled = attempt_make(status=A.PENDING, idle_hours=2)
    FakeMidtrans(
        monkeypatch,
        {
            poison.midtrans_order_id: midtrans.MidtransValidationError("bad request", http_status=400),
            settled.midtrans_order_id: midtrans_body(settled.midtrans_order_id, "settlement"),
        },
    )

    # when: two sweeps
    first = reconcile.reconcile_run()
    reconcile.reconcile_run(now=timezone.now() + timedelta(minutes=10))

    # then: the first read the erring one, the second got to the settled one
    assert len(first.errors) == 1
    assert refreshed(settled) == (OS.PAID, A.PAID)


def test_periodic_task_goes_on_after_a_midtrans_error_on_one_attempt(monkeypatch):
    # given
    from payments.tasks import payments_reconcile

    poison = attempt_make(status=A.PENDING, idle_hours=5)
    settled = attempt_make(status=A.PENDING, idle_hours=2)
    FakeMidtrans(
        monkeypatch,
        {
            poison.midtrans_order_id: midtrans.MidtransValidationError("rejected", operation="status", http_status=400),
            settled.midtrans_order_id: midtrans_body(settled.midtrans_order_id, "settlement"),
        },
    )

    # when
    result = payments_reconcile.apply(throw=True).get()

    # then
    assert result["errors"] == 1 and result["changed"] >= 1
    assert refreshed(settled) == (OS.PAID, A.PAID)


def test_midtrans_unavailable_still_stops_the_sweep_and_changes_nothing(monkeypatch):
    # given: Midtrans times out on the first read
    first = attempt_make(status=A.PENDING, idle_hours=5)
    second = attempt_make(status=A.PENDING, idle_hours=2)
    fake = FakeMidtrans(
        monkeypatch,
        {
            first.midtrans_order_id: midtrans.MidtransTimeout("read timeout", operation="status"),
            second.midtrans_order_id: midtrans_body(second.midtrans_order_id, "settlement"),
        },
    )
    before = payment_state()

    # when
    report = reconcile.reconcile_run()

    # then: stopped at once; the next sweep resumes
    assert report.stopped_early
    assert fake.reads(second.midtrans_order_id) == 0
    assert payment_state() == before


def test_due_order_whose_attempt_errs_is_left_open_and_the_other_due_orders_are_closed(monkeypatch):
    # given: two orders past their window; Midtrans errs on the first one's attempt
    poison = attempt_make(status=A.PENDING, due=True)
    Order.objects.filter(pk=poison.order_id).update(expires_at=timezone.now() - timedelta(days=1))
    other = attempt_make(status=A.PENDING, due=True)
    fake = FakeMidtrans(
        monkeypatch,
        {
            poison.midtrans_order_id: midtrans.MidtransNotFound("HTTP 404", operation="status", http_status=404),
            other.midtrans_order_id: midtrans_body(other.midtrans_order_id, "pending"),
        },
    )

    # when
    report = reconcile.reconcile_run()

    # then: the other one was expired at Midtrans and here; the erring one is left as it was
    assert ("expire", other.midtrans_order_id) in fake.calls
    assert refreshed(other) == (OS.EXPIRED, A.EXPIRED)
    assert refreshed(poison) == (OS.PENDING_PAYMENT, A.PENDING)
    assert any(poison.midtrans_order_id in line for line in report.errors)


def test_admin_sync_answers_a_midtrans_error_with_a_clear_message(monkeypatch, client, django_user_model):
    # given: an operator allowed to sync, and Midtrans refusing the status read of the order
    user = django_user_model.objects.create_user("siti", "siti@example.com", "pw-for-tests", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_order", "sync_order"]))
    client.force_login(user)
    attempt = attempt_make(status=A.PENDING)
    FakeMidtrans(
        monkeypatch,
        {attempt.midtrans_order_id: midtrans.MidtransNotFound("HTTP 404", operation="status", http_status=404)},
    )
    before = payment_state()

    # when
    response = client.post(
        reverse("admin:payments_order_changelist"),
        {"action": "sync_from_midtrans", "_selected_action": [attempt.order_id]},
        follow=True,
    )

    # then: a page with the error, not a 500; no payment state changed (the request is audited)
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert any(attempt.order_id in m and "MidtransNotFound" in m and "HTTP 404" in m for m in messages)
    assert payment_state() == before
    assert AuditEntry.objects.filter(action="order_synced_from_midtrans", actor="siti").count() == 1


# --- Closing at Midtrans: never invent an expire Midtrans did not agree to (finding 3) ---------

NO_TRANSACTION = {"status_code": "404", "status_message": "Transaction doesn't exist."}


def test_refused_snap_cancel_leaves_the_attempt_live_and_the_next_sweep_expires_the_late_va(monkeypatch):
    # given: an unstarted attempt past its window; Midtrans refuses the Snap cancel because the
    # customer is choosing a method right now
    attempt = attempt_make(status=A.OPEN, due=True)
    fake = FakeMidtrans(monkeypatch, {attempt.midtrans_order_id: NO_TRANSACTION})
    fake.cancel_error = midtrans.MidtransError(
        "Transaction is on progress", operation="snap_cancel", http_status=412, messages=["Transaction is on progress"]
    )

    # when
    report = reconcile.reconcile_run()

    # then: nothing is expired here (no invented expire, no "expired" message), the refusal is reported
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.OPEN)
    assert not Notification.objects.filter(reference=attempt.order_id, template="order_expired").exists()
    assert not PaymentEvent.objects.exists()
    assert any("refused to cancel the Snap session" in line for line in report.errors)

    # when: the customer got a virtual account meanwhile, and the next sweep runs
    fake.answers[attempt.midtrans_order_id] = midtrans_body(attempt.midtrans_order_id, "pending")
    reconcile.reconcile_run()

    # then: the VA is expired at Midtrans, then the attempt and the order here
    assert ("expire", attempt.midtrans_order_id) in fake.calls
    assert refreshed(attempt) == (OS.EXPIRED, A.EXPIRED)
    assert Notification.objects.filter(reference=attempt.order_id, template="order_expired").count() == 1


@pytest.mark.parametrize("message", ["token already canceled", "token not found"])
def test_snap_cancel_refused_because_the_session_is_gone_expires_locally(monkeypatch, message):
    # given: the Snap session is already closed at Midtrans
    attempt = attempt_make(status=A.OPEN, due=True)
    fake = FakeMidtrans(monkeypatch, {attempt.midtrans_order_id: NO_TRANSACTION})
    fake.cancel_error = midtrans.MidtransError(message, operation="snap_cancel", http_status=412, messages=[message])

    # when
    reconcile.reconcile_run()

    # then: nothing can be paid on it any more, so it is expired here
    assert refreshed(attempt) == (OS.EXPIRED, A.EXPIRED)
    assert PaymentEvent.objects.get().payload["status_message"].startswith("expired by reconciliation")


def test_successful_snap_cancel_expires_locally(monkeypatch):
    # given
    attempt = attempt_make(status=A.OPEN, due=True)
    fake = FakeMidtrans(monkeypatch, {attempt.midtrans_order_id: NO_TRANSACTION})

    # when
    reconcile.reconcile_run()

    # then
    assert ("snap_cancel", attempt.snap_token) in fake.calls
    assert refreshed(attempt) == (OS.EXPIRED, A.EXPIRED)


def _late_pending_notification(attempt):
    """A validly signed pending notification for an attempt we closed: recorded as stale."""
    outcome = payment_status_apply(
        midtrans_order_id=attempt.midtrans_order_id,
        status=midtrans_body(attempt.midtrans_order_id, "pending"),
        source=EventSource.WEBHOOK,
        actor="webhook",
    )
    assert outcome.result == "stale"


def test_pending_for_an_expired_attempt_of_an_expired_order_is_expired_at_midtrans(monkeypatch):
    # given: an expired order and attempt; Midtrans then reports the attempt pending (a late VA)
    attempt = attempt_make(status=A.EXPIRED, order_status=OS.EXPIRED, due=True)
    _late_pending_notification(attempt)
    fake = FakeMidtrans(monkeypatch, {attempt.midtrans_order_id: midtrans_body(attempt.midtrans_order_id, "pending")})

    # when
    reconcile.reconcile_run()

    # then: expired at Midtrans; nothing moves here
    assert fake.calls.count(("expire", attempt.midtrans_order_id)) == 1
    assert refreshed(attempt) == (OS.EXPIRED, A.EXPIRED)

    # when: later sweeps
    reconcile.reconcile_run()

    # then: handled once, not read again
    assert fake.reads(attempt.midtrans_order_id) == 2  # before and after the expire


def test_pending_for_a_failed_attempt_of_a_payable_order_is_left_alone(monkeypatch):
    # given: attempt 1 failed, the order is still open and within its window (the customer may
    # pay again); Midtrans reports attempt 1 pending
    attempt = attempt_make(status=A.FAILED)
    _late_pending_notification(attempt)
    fake = FakeMidtrans(monkeypatch, {attempt.midtrans_order_id: midtrans_body(attempt.midtrans_order_id, "pending")})
    before = payment_state()

    # when
    reconcile.reconcile_run()

    # then: money may still come for the order: nothing is expired at Midtrans, nothing changes
    assert ("expire", attempt.midtrans_order_id) not in fake.calls
    assert payment_state() == before


# --- Paid attempts are re-read for a while: a lost reversal/refund/chargeback (finding 2) ------


def paid_attempt_make(*, paid_minutes_ago: float, checked_minutes_ago: float | None = None):
    attempt = attempt_make(status=A.PENDING)
    payment_status_apply(
        midtrans_order_id=attempt.midtrans_order_id,
        status=midtrans_body(attempt.midtrans_order_id, "settlement"),
        source=EventSource.WEBHOOK,
        actor="webhook",
    )
    now = timezone.now()
    Order.objects.filter(pk=attempt.order_id).update(paid_at=now - timedelta(minutes=paid_minutes_ago))
    checked = None if checked_minutes_ago is None else now - timedelta(minutes=checked_minutes_ago)
    PaymentAttempt.objects.filter(pk=attempt.pk).update(status_checked_at=checked)
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    return attempt


@pytest.mark.parametrize(
    ("midtrans_says", "order_to", "attempt_to"),
    [("deny", OS.FAILED, A.REVERSED), ("refund", OS.REFUNDED, A.REFUNDED), ("chargeback", OS.CHARGEBACK, A.CHARGEBACK)],
)
def test_a_lost_reversal_refund_or_chargeback_is_found_by_the_sweep(
    monkeypatch, settings, midtrans_says, order_to, attempt_to
):
    # given: paid 30 minutes ago; Midtrans now says otherwise, and that notification was lost
    settings.ALERT_EMAILS = ["ops@buatfilm.test"]
    attempt = paid_attempt_make(paid_minutes_ago=30)
    fake = FakeMidtrans(
        monkeypatch, {attempt.midtrans_order_id: midtrans_body(attempt.midtrans_order_id, midtrans_says)}
    )

    # when
    reconcile.reconcile_run()

    # then: read, applied, access revoked
    assert fake.reads(attempt.midtrans_order_id) == 1
    assert refreshed(attempt) == (order_to, attempt_to)
    assert Entitlement.objects.get(order_id=attempt.order_id).status == "revoked"


def test_a_lost_full_refund_after_a_partial_one_is_found(monkeypatch):
    # given: partially refunded 1 h after payment; the later full refund's notification was lost
    attempt = paid_attempt_make(paid_minutes_ago=120)
    payment_status_apply(
        midtrans_order_id=attempt.midtrans_order_id,
        status=midtrans_body(attempt.midtrans_order_id, "partial_refund", refund_amount="30000.00"),
        source=EventSource.WEBHOOK,
        actor="webhook",
    )
    assert refreshed(attempt) == (OS.PARTIALLY_REFUNDED, A.PARTIALLY_REFUNDED)
    FakeMidtrans(monkeypatch, {attempt.midtrans_order_id: midtrans_body(attempt.midtrans_order_id, "refund")})

    # when
    reconcile.reconcile_run()

    # then
    assert refreshed(attempt) == (OS.REFUNDED, A.REFUNDED)


@pytest.mark.parametrize(
    ("paid_minutes_ago", "checked_minutes_ago", "read"),
    [
        (2, None, False),  # just paid: the webhook's turn first (RECONCILE_STALE_MINUTES)
        (30, None, True),  # never re-read
        (60, 40, True),  # read 20 min after payment, 40 min ago: due again
        (60, 10, False),  # read 50 min after payment, 10 min ago: not yet
        (47 * 60, 30 * 60, True),  # read at 17 h, 30 h ago: last reads before the watch ends
        (49 * 60, None, False),  # paid longer ago than RECONCILE_PAID_WATCH_HOURS (48)
    ],
)
def test_paid_attempts_are_re_read_at_doubling_intervals_within_the_watch(
    monkeypatch, paid_minutes_ago, checked_minutes_ago, read
):
    # given: a paid attempt, still settled at Midtrans
    attempt = paid_attempt_make(paid_minutes_ago=paid_minutes_ago, checked_minutes_ago=checked_minutes_ago)
    fake = FakeMidtrans(
        monkeypatch, {attempt.midtrans_order_id: midtrans_body(attempt.midtrans_order_id, "settlement")}
    )
    before = payment_state()

    # when
    reconcile.reconcile_run()

    # then: read or not, as the schedule says; nothing changes either way
    assert fake.reads(attempt.midtrans_order_id) == (1 if read else 0)
    assert payment_state() == before


def test_paid_watch_can_be_turned_off(monkeypatch, settings):
    # given
    settings.RECONCILE_PAID_WATCH_HOURS = 0
    attempt = paid_attempt_make(paid_minutes_ago=30)
    fake = FakeMidtrans(monkeypatch, {attempt.midtrans_order_id: midtrans_body(attempt.midtrans_order_id, "deny")})

    # when
    reconcile.reconcile_run()

    # then
    assert fake.calls == []
    assert refreshed(attempt) == (OS.PAID, A.PAID)


def test_a_paid_attempt_read_once_is_not_read_again_at_once(monkeypatch):
    # given
    attempt = paid_attempt_make(paid_minutes_ago=30)
    fake = FakeMidtrans(
        monkeypatch, {attempt.midtrans_order_id: midtrans_body(attempt.midtrans_order_id, "settlement")}
    )

    # when: two sweeps in a row
    reconcile.reconcile_run()
    reconcile.reconcile_run()

    # then
    assert fake.reads(attempt.midtrans_order_id) == 1


# --- Due orders that cannot expire do not starve the others (finding 6) ------------------------


@pytest.mark.parametrize(
    "held_status",
    [
        lambda mid: midtrans_body(mid, "capture", fraud_status="challenge", payment_type="credit_card"),
        lambda mid: midtrans_body(mid, "settlement", gross_amount="50000.00"),  # amount mismatch: flagged
    ],
    ids=["challenge", "amount-mismatch"],
)
def test_due_orders_that_cannot_expire_do_not_fill_every_batch(monkeypatch, settings, held_status):
    # given: a batch of two; two orders long past their window whose attempts Midtrans keeps
    # in a state that never lets them expire; one more due order that could simply expire
    settings.RECONCILE_BATCH_SIZE = 2
    held = [attempt_make(status=A.PENDING, idle_hours=0) for _ in range(2)]
    for attempt in held:
        Order.objects.filter(pk=attempt.order_id).update(expires_at=timezone.now() - timedelta(days=2))
    victim = attempt_make(status=A.FAILED, due=True, idle_hours=0)
    FakeMidtrans(monkeypatch, {a.midtrans_order_id: held_status(a.midtrans_order_id) for a in held})

    # when: two sweeps
    reconcile.reconcile_run()
    reconcile.reconcile_run()

    # then: the victim's turn came
    assert refreshed(victim) == (OS.EXPIRED, A.FAILED)
    assert all(refreshed(a)[0] == OS.PENDING_PAYMENT for a in held)


def _webhook_event(attempt, transaction_status="pending", minutes_ago=60):
    """A recorded, unprocessed notification (as the webhook leaves it when it answered 503)."""
    event = event_record(payload=midtrans_body(attempt.midtrans_order_id, transaction_status))
    PaymentEvent.objects.filter(pk=event.pk).update(received_at=timezone.now() - timedelta(minutes=minutes_ago))
    return event


def test_an_event_whose_status_read_fails_does_not_stop_the_sweep(monkeypatch, settings):
    # given: the oldest unprocessed event's status read fails (not an outage); another payment settled
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = True
    poisoned = attempt_make(status=A.PENDING, idle_hours=0)
    event = _webhook_event(poisoned)
    settled = attempt_make(status=A.PENDING, idle_hours=2)
    FakeMidtrans(
        monkeypatch,
        {
            poisoned.midtrans_order_id: midtrans.MidtransValidationError("400 bad request", http_status=400),
            settled.midtrans_order_id: midtrans_body(settled.midtrans_order_id, "settlement"),
        },
    )

    # when
    report = reconcile.reconcile_run()

    # then: the sweep went on to the settled payment; the event waits, with the reason
    assert not report.stopped_early
    assert refreshed(settled) == (OS.PAID, A.PAID)
    assert any(f"event {event.pk}" in line for line in report.errors)
    event.refresh_from_db()
    assert (event.result, event.processing_attempts) == ("received", 1)
    assert "MidtransValidationError" in event.error
    assert refreshed(poisoned) == (OS.PENDING_PAYMENT, A.PENDING)


def test_an_event_answered_for_another_order_id_does_not_stop_the_sweep(monkeypatch, settings):
    # given: the status API answers with somebody else's transaction for the oldest event
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = True
    odd = attempt_make(status=A.PENDING, idle_hours=0)
    event = _webhook_event(odd)
    settled = attempt_make(status=A.PENDING, idle_hours=2)
    FakeMidtrans(
        monkeypatch,
        {
            odd.midtrans_order_id: midtrans_body("BF-SOMEONE-ELSE-1", "settlement"),
            settled.midtrans_order_id: midtrans_body(settled.midtrans_order_id, "settlement"),
        },
    )

    # when
    report = reconcile.reconcile_run()

    # then: not applied, not a stop
    assert not report.stopped_early
    assert refreshed(odd) == (OS.PENDING_PAYMENT, A.PENDING)
    assert refreshed(settled) == (OS.PAID, A.PAID)
    event.refresh_from_db()
    assert event.result == "received" and "BF-SOMEONE-ELSE-1" in event.error


def test_an_unavailable_status_api_still_stops_the_events_sweep(monkeypatch, settings):
    # given
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = True
    attempt = attempt_make(status=A.PENDING, idle_hours=0)
    event = _webhook_event(attempt)
    FakeMidtrans(monkeypatch, {attempt.midtrans_order_id: midtrans.MidtransCircuitOpen("breaker open")})
    before = payment_state()

    # when
    report = reconcile.reconcile_run()

    # then
    assert report.stopped_early
    assert payment_state() == before
    event.refresh_from_db()
    assert event.result == "received"


# --- Unprocessed events: capped, rotated, alerted once (finding 7) -----------------------------


@pytest.fixture
def confirmed(settings):
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = True
    settings.ALERT_EMAILS = ["ops@buatfilm.test"]
    settings.RECONCILE_EVENT_GRACE_SECONDS = 0


def alert_subjects() -> list[str]:
    return list(Notification.objects.filter(template="operator_alert").values_list("subject", flat=True))


@pytest.mark.parametrize("result", ["received", "failed"])
def test_an_event_that_never_goes_through_is_given_up_after_the_cap_and_alerted_once(
    monkeypatch, settings, confirmed, result
):
    # given: one try left before the cap; the status API keeps refusing this transaction
    settings.RECONCILE_EVENT_MAX_ATTEMPTS = 3
    attempt = attempt_make(status=A.PENDING, idle_hours=0)
    event = _webhook_event(attempt)
    PaymentEvent.objects.filter(pk=event.pk).update(result=result, processing_attempts=2)
    fake = FakeMidtrans(
        monkeypatch, {attempt.midtrans_order_id: midtrans.MidtransValidationError("rejected", http_status=400)}
    )

    # when: three sweeps
    for _ in range(3):
        reconcile.reconcile_run()

    # then: tried once more, then left alone; its result kept (a failed one is not reset to
    # received, which used to restart its count); operators told once, naming the event
    assert fake.reads(attempt.midtrans_order_id) == 1
    event.refresh_from_db()
    assert (event.result, event.processing_attempts) == (result, 3)
    assert event.alerted_at is not None and event.last_tried_at is not None
    subjects = alert_subjects()
    assert len(subjects) == 1 and f"Payment event {event.pk} given up after 3 tries" in subjects[0]


def test_events_that_keep_failing_take_turns_with_the_others(monkeypatch, settings, confirmed):
    # given: a batch of one; the oldest event keeps failing, a newer one would go through
    settings.RECONCILE_BATCH_SIZE = 1
    stuck = attempt_make(status=A.PENDING, idle_hours=0)
    stuck_event = _webhook_event(stuck, minutes_ago=120)
    settled = attempt_make(status=A.PENDING, idle_hours=0)
    settled_event = _webhook_event(settled, transaction_status="settlement", minutes_ago=60)
    FakeMidtrans(
        monkeypatch,
        {
            stuck.midtrans_order_id: midtrans.MidtransValidationError("rejected", http_status=400),
            settled.midtrans_order_id: midtrans_body(settled.midtrans_order_id, "settlement"),
        },
    )

    # when: two sweeps
    reconcile.reconcile_run()
    reconcile.reconcile_run()

    # then: the second one got its turn
    settled_event.refresh_from_db()
    assert settled_event.result == "applied"
    assert refreshed(settled) == (OS.PAID, A.PAID)
    stuck_event.refresh_from_db()
    assert stuck_event.processing_attempts == 1


def test_a_long_unmatched_orphan_is_alerted_once(settings, confirmed):
    # given: a signed notification for an id no attempt has, a day old; and a fresh one
    settings.RECONCILE_ORPHAN_ALERT_HOURS = 24
    old = event_record(payload=midtrans_body("BF-20261120-UNKNOWN1-1", "settlement"))
    PaymentEvent.objects.filter(pk=old.pk).update(result="orphan", received_at=timezone.now() - timedelta(hours=25))
    fresh = event_record(payload=midtrans_body("BF-20261122-UNKNOWN2-1", "settlement"))
    PaymentEvent.objects.filter(pk=fresh.pk).update(result="orphan")

    # when: two sweeps
    reconcile.reconcile_run()
    reconcile.reconcile_run()

    # then: one alert, about the old one
    subjects = alert_subjects()
    assert len(subjects) == 1 and "BF-20261120-UNKNOWN1-1" in subjects[0]
    assert PaymentEvent.objects.get(pk=fresh.pk).alerted_at is None


def test_dry_run_alerts_nobody(settings, confirmed):
    # given: an exhausted event
    attempt = attempt_make(status=A.PENDING, idle_hours=0)
    event = _webhook_event(attempt)
    PaymentEvent.objects.filter(pk=event.pk).update(
        result="failed", processing_attempts=settings.RECONCILE_EVENT_MAX_ATTEMPTS
    )

    # when
    report = reconcile.reconcile_run(dry_run=True)

    # then: reported, not sent, not marked
    assert any(f"event {event.pk}: would alert" in line for line in report.changes)
    assert alert_subjects() == []
    assert PaymentEvent.objects.get(pk=event.pk).alerted_at is None
