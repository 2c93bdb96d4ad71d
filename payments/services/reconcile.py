"""Reconciliation: ask Midtrans instead of waiting for it. The cure for "paid but stuck PENDING".

One sweep (Celery beat every RECONCILE_INTERVAL_SECONDS, `manage.py reconcile_payments`)
goes through, in this order:
1. recorded events never processed (the webhook answered 503, or crashed) and failed ones,
   least recently tried first, each at most RECONCILE_EVENT_MAX_ATTEMPTS times;
2. orphans whose Midtrans order id now has an attempt, or is a transaction id an attempt
   learned (BI-SNAP channels name a transaction by it; same cap);
3. orders past their payment window: each live attempt is read at Midtrans and, still
   unpaid, expired (or its Snap session cancelled) there, so a late payment cannot start;
   then the order is marked EXPIRED;
4. attempts live (open, pending, challenge) longer than RECONCILE_STALE_MINUTES: read and
   applied;
5. paid and partially refunded attempts, for RECONCILE_PAID_WATCH_HOURS after payment, at
   doubling intervals: a reversal, refund or chargeback whose notification was lost still
   revokes access;
6. attempts we closed (expired, failed) for which a pending notification arrived since we
   last read them, on orders that can no longer be paid: a virtual account created late is
   expired at Midtrans, so no money can start for an order we call expired.
7. orphans again: the reads of 3-6 may have taught attempts their transaction ids.
Last, operators are alerted once (payments.notices.notice_alert) about each event given up
after RECONCILE_EVENT_MAX_ATTEMPTS tries and each orphan still unmatched after
RECONCILE_ORPHAN_ALERT_HOURS.
Every status read goes through payments.services.events.payment_status_apply, the same
function the webhook and the admin use. Everything is safe to run twice or concurrently.

Only Midtrans being unavailable (timeout, 5xx, breaker open) stops a sweep: the next one
resumes. Any other Midtrans error (a 404, a 400, a refused action) concerns one item: it is
recorded on the report, logged and kept on the attempt, and the sweep goes on, so one odd
transaction cannot keep every other payment waiting.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Min, Q, Value
from django.utils import timezone

from payments import midtrans, notices
from payments.models import EventResult, EventSource, Order, PaymentAttempt, PaymentEvent
from payments.services.audit import audit_record
from payments.services.events import (
    ApplyOutcome,
    EventDeferred,
    EventProcessingFailed,
    Signal,
    event_process,
    order_expire,
    payment_status_apply,
    status_names_attempt,
    status_signal,
)
from payments.states import CLOSED_ATTEMPT_STATUSES, MONEY_HOLDING_ATTEMPT_STATUSES

logger = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    dry_run: bool = False
    checked: int = 0
    changes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopped_early: bool = False

    def record(self, outcome: ApplyOutcome | None) -> None:
        if outcome is not None and (outcome.changed or outcome.alerts):
            self.changes.append(("[dry-run] " if self.dry_run else "") + outcome.describe())

    def note(self, text: str) -> None:
        self.changes.append(("[dry-run] " if self.dry_run else "") + text)

    def summary(self) -> str:
        return (
            f"checked={self.checked} changed={len(self.changes)} errors={len(self.errors)}"
            + (" stopped_early=yes (Midtrans unavailable)" if self.stopped_early else "")
            + (" dry_run=yes" if self.dry_run else "")
        )


class _MidtransDown(Exception):
    """Midtrans is unreachable (or the breaker is open): stop this sweep, the next one resumes."""


def _read_status(attempt: PaymentAttempt) -> dict:
    """The attempt's status at Midtrans. Raises _MidtransDown when Midtrans is unavailable;
    any other MidtransError is about this attempt and is left to the caller (_item_sync)."""
    try:
        return midtrans.transaction_status(midtrans_order_id=attempt.midtrans_order_id)
    except midtrans.MidtransUnavailable as exc:
        raise _MidtransDown(str(exc)) from exc


def _expired_locally_status(attempt: PaymentAttempt, why: str) -> dict:
    """The status we apply when Midtrans holds no transaction for the attempt (no method was
    chosen) and its Snap session is closed: an expire, said by us, recorded as such."""
    return {
        "order_id": attempt.midtrans_order_id,
        "transaction_status": "expire",
        "status_code": "407",
        "gross_amount": f"{attempt.amount}.00",
        "currency": "IDR",
        "status_message": f"expired by reconciliation: {why}",
    }


def attempt_sync(
    *,
    attempt_id: int,
    actor: str,
    source: str = EventSource.RECONCILE,
    close_if_due: bool = True,
    dry_run: bool = False,
    report: ReconcileReport | None = None,
) -> ApplyOutcome | None:
    """Read one attempt's status at Midtrans and apply it.

    `close_if_due`: when the order's payment window passed (or the order is no longer open)
    and Midtrans still has the attempt unpaid, expire it at Midtrans (pending) or cancel its
    Snap session (no method chosen) first, so a late payment cannot start.
    """
    report = report if report is not None else ReconcileReport(dry_run=dry_run)
    attempt = PaymentAttempt.objects.select_related("order").get(pk=attempt_id)
    order = attempt.order
    report.checked += 1
    if not dry_run:
        # Stamped before the read, so an attempt whose read fails also moves to the back of
        # the oldest-checked-first queues instead of being first again on every sweep.
        PaymentAttempt.objects.filter(pk=attempt.pk).update(status_checked_at=timezone.now())
    status = _read_status(attempt)

    due = order.expires_at <= timezone.now() or order.status not in Order.OPEN_STATUSES
    signal = status_signal(status)
    live_unpaid = attempt.status in PaymentAttempt.LIVE_STATUSES and signal in (Signal.PENDING, Signal.NONE)
    # Closed here, yet pending at Midtrans (a virtual account created after we gave up on the
    # attempt): while the order cannot be paid any more, no money may start for it either.
    closed_but_pending = attempt.status in CLOSED_ATTEMPT_STATUSES and signal == Signal.PENDING
    if close_if_due and due and (live_unpaid or closed_but_pending):
        if dry_run:
            report.note(f"{attempt.midtrans_order_id}: would close it at Midtrans ({signal}) and expire it")
            return None
        closed = _close_at_midtrans(attempt=attempt, signal=signal, report=report)
        if closed is None:
            return None  # the Snap session could not be closed: the attempt stays live, the next sweep retries
        status, signal = closed, status_signal(closed)

    if signal == Signal.NONE:
        return None  # nothing at Midtrans yet: no method chosen
    # Asked by our own order id, so a BI-SNAP body naming a transaction id is ours to learn,
    # unless the attempt already knows a different one.
    learnable = {attempt.transaction_id} if attempt.transaction_id else {str(status.get("transaction_id") or "")}
    if not status_names_attempt(status=status, midtrans_order_id=attempt.midtrans_order_id, transaction_ids=learnable):
        text = (
            f"{attempt.midtrans_order_id}: the status API answered for {status.get('order_id')!r} "
            f"(transaction {status.get('transaction_id')!r}); not applied"
        )
        report.errors.append(text)
        logger.warning(
            "reconcile_status_refused",
            extra={"order_id": order.pk, "midtrans_order_id": attempt.midtrans_order_id},
        )
        if not dry_run:
            _last_error_keep(attempt_id=attempt.pk, text=text)
        return None
    try:
        outcome = payment_status_apply(
            midtrans_order_id=attempt.midtrans_order_id, status=status, source=source, actor=actor, dry_run=dry_run
        )
    except Exception as exc:
        logger.exception(
            "reconcile_apply_failed",
            extra={"order_id": order.pk, "midtrans_order_id": attempt.midtrans_order_id, "error": type(exc).__name__},
        )
        raise EventProcessingFailed(f"{attempt.midtrans_order_id}: {type(exc).__name__}: {exc}") from exc
    report.record(outcome)
    return outcome


def _item_sync(*, attempt_id: int, actor: str, dry_run: bool, report: ReconcileReport, label: str, **kwargs) -> None:
    """attempt_sync for one item of a sweep: a failure of this item is recorded and the sweep
    goes on; only Midtrans being unavailable (_MidtransDown) stops it."""
    try:
        attempt_sync(attempt_id=attempt_id, actor=actor, dry_run=dry_run, report=report, **kwargs)
    except EventProcessingFailed as exc:
        report.errors.append(f"{label}: {exc}")
    except midtrans.MidtransUnavailable as exc:
        raise _MidtransDown(str(exc)) from exc
    except midtrans.MidtransError as exc:
        _midtrans_error_record(attempt_id=attempt_id, exc=exc, report=report, label=label, dry_run=dry_run)


def _midtrans_error_record(
    *, attempt_id: int, exc: midtrans.MidtransError, report: ReconcileReport, label: str, dry_run: bool
) -> None:
    attempt = dict(PaymentAttempt.objects.filter(pk=attempt_id).values("order_id", "midtrans_order_id").first() or {})
    text = f"Midtrans {exc.operation or 'call'} failed: {type(exc).__name__}"
    text += f" (HTTP {exc.http_status})" if exc.http_status else ""
    text += f": {exc}"
    report.errors.append(f"{label} ({attempt.get('midtrans_order_id', '?')}): {text}")
    logger.warning(
        "reconcile_midtrans_error",
        extra={
            "order_id": attempt.get("order_id"),
            "midtrans_order_id": attempt.get("midtrans_order_id"),
            "operation": exc.operation,
            "error": type(exc).__name__,
            "http_status": exc.http_status,
            "detail": str(exc)[:500],
        },
    )
    if not dry_run:
        _last_error_keep(attempt_id=attempt_id, text=text)


def _last_error_keep(*, attempt_id: int, text: str) -> None:
    PaymentAttempt.objects.filter(pk=attempt_id).update(last_error=f"{timezone.now().isoformat()} {text}"[:2000])


def _snap_session_gone(exc: midtrans.MidtransError) -> bool:
    """A refused Snap cancel that still means no payment can start on the token."""
    text = " ".join([str(exc), *exc.messages]).lower()
    return "already canceled" in text or "already cancelled" in text or "token not found" in text


def _close_at_midtrans(*, attempt: PaymentAttempt, signal: Signal, report: ReconcileReport) -> dict | None:
    """Make sure Midtrans will take no money for this attempt any more; return its status then.

    None when the attempt has no transaction at Midtrans yet and its Snap session could not
    be cancelled ("Transaction is on progress": the customer is choosing a method right
    now): nothing may be expired here then, or a virtual account created a moment later
    would stay payable at Midtrans for an order we call expired. The next sweep tries again.
    """
    closed = True  # no Snap token: no customer can have the payment page
    try:
        if signal == Signal.PENDING:
            midtrans.transaction_expire(midtrans_order_id=attempt.midtrans_order_id)
            report.note(f"{attempt.midtrans_order_id}: expired at Midtrans (order {attempt.order_id} past its window)")
        elif attempt.snap_token:
            midtrans.snap_cancel(token=attempt.snap_token)
            report.note(f"{attempt.midtrans_order_id}: Snap session cancelled (order {attempt.order_id})")
    except midtrans.MidtransUnavailable as exc:
        raise _MidtransDown(str(exc)) from exc
    except midtrans.MidtransError as exc:
        # 412 "cannot modify the status" / "Transaction is on progress": it moved on (maybe
        # paid) between our read and our action. The fresh read below decides.
        closed = signal != Signal.PENDING and _snap_session_gone(exc)
        logger.info(
            "reconcile_close_refused",
            extra={
                "order_id": attempt.order_id,
                "midtrans_order_id": attempt.midtrans_order_id,
                "operation": exc.operation,
                "error": str(exc),
            },
        )
        if signal != Signal.PENDING and not closed:
            report.errors.append(
                f"{attempt.midtrans_order_id}: Midtrans refused to cancel the Snap session ({exc}); "
                "left open, the next sweep tries again"
            )
    status = _read_status(attempt)
    if status_signal(status) == Signal.NONE:
        if not closed:
            return None
        return _expired_locally_status(attempt, "no Midtrans transaction; Snap session closed")
    return status


def order_sync(
    *, order_id: str, actor: str, source: str = EventSource.RECONCILE, dry_run: bool = False
) -> ReconcileReport:
    """Bring one order in line with Midtrans: its unprocessed events, then every attempt read and
    applied (paid ones too, for refunds and chargebacks), closed at Midtrans when the window
    passed, and the order expired if due. Used by `reconcile_payments --order` and the admin's
    "Sync from Midtrans" (source admin, actor = the operator)."""
    report = ReconcileReport(dry_run=dry_run)
    try:
        _events_sweep(report=report, actor=actor, since=None, dry_run=dry_run, order_id=order_id)
        attempts = PaymentAttempt.objects.filter(order_id=order_id).order_by("number")
        for attempt_id in attempts.values_list("pk", flat=True):
            _item_sync(
                attempt_id=attempt_id,
                actor=actor,
                source=source,
                dry_run=dry_run,
                report=report,
                label=f"order {order_id}",
            )
        report.record(order_expire(order_id=order_id, actor=actor, dry_run=dry_run))
    except _MidtransDown as exc:
        report.errors.append(f"Midtrans unavailable: {exc}")
        report.stopped_early = True
    _log(report, scope=order_id)
    return report


def order_sync_by_operator(*, order_id: str, username: str) -> ReconcileReport:
    """The admin's "Sync from Midtrans": the only way an operator changes a payment state.

    Every resulting change is audited with the operator's username (as the actor of the
    transitions), and the request itself is audited with its outcome.
    """
    report = order_sync(order_id=order_id, actor=username, source=EventSource.ADMIN)
    order = Order.objects.get(pk=order_id)
    audit_record(
        actor=username,
        action="order_synced_from_midtrans",
        obj=order,
        new_value={"status": order.status, "changes": report.changes, "errors": report.errors},
    )
    return report


def reconcile_run(
    *,
    actor: str = "reconcile",
    since: datetime | None = None,
    order_id: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> ReconcileReport:
    """One sweep (see the module docstring). `since`: only what was created since then;
    `order_id`: only that order (see order_sync)."""
    if order_id:
        return order_sync(order_id=order_id, actor=actor, dry_run=dry_run)
    now = now or timezone.now()
    report = ReconcileReport(dry_run=dry_run)
    try:
        _events_sweep(report=report, actor=actor, since=since, dry_run=dry_run)
        _due_orders_sweep(report=report, actor=actor, since=since, dry_run=dry_run, now=now)
        _stale_attempts_sweep(report=report, actor=actor, since=since, dry_run=dry_run, now=now)
        _paid_attempts_sweep(report=report, actor=actor, since=since, dry_run=dry_run, now=now)
        _late_pending_sweep(report=report, actor=actor, since=since, dry_run=dry_run, now=now)
        # The reads above may have taught attempts their transaction ids: orphans named by them match now.
        _events_sweep(report=report, actor=actor, since=since, dry_run=dry_run, orphans_only=True)
    except _MidtransDown as exc:
        report.errors.append(f"Midtrans unavailable, sweep stopped: {exc}")
        report.stopped_early = True
    _alerts_sweep(report=report, dry_run=dry_run, now=now)  # needs no Midtrans
    _log(report, scope="all")
    return report


_SWEEP_LOCK = "payments:reconcile:lock"


def reconcile_sweep(*, actor: str = "reconcile") -> ReconcileReport | None:
    """reconcile_run for the periodic task; None when another sweep holds the lock.

    Overlapping sweeps would only repeat the same idempotent reads, so the lock (in the
    shared cache) saves Midtrans calls; a broken cache never stops reconciliation.
    """
    token = uuid.uuid4().hex
    try:
        acquired = cache.add(_SWEEP_LOCK, token, timeout=max(60, int(settings.RECONCILE_INTERVAL_SECONDS)))
    except Exception:
        logger.warning("reconcile_lock_unavailable", exc_info=True)
        acquired = True
    if not acquired:
        logger.info("reconcile_skipped", extra={"reason": "another sweep is running"})
        return None
    try:
        return reconcile_run(actor=actor)
    finally:
        try:
            if cache.get(_SWEEP_LOCK) == token:
                cache.delete(_SWEEP_LOCK)
        except Exception:
            logger.warning("reconcile_lock_release_failed", exc_info=True)


def _events_sweep(
    *,
    report: ReconcileReport,
    actor: str,
    since,
    dry_run: bool,
    order_id: str | None = None,
    orphans_only: bool = False,
) -> None:
    now = timezone.now()
    grace = now - timedelta(seconds=settings.RECONCILE_EVENT_GRACE_SECONDS)
    unprocessed = Q(result=EventResult.RECEIVED, received_at__lte=grace) | Q(result=EventResult.FAILED)
    known_ids = PaymentAttempt.objects.values("midtrans_order_id")
    # An orphan named by a transaction id an attempt has learned since (BI-SNAP channels).
    known_transactions = PaymentAttempt.objects.exclude(transaction_id="").values("transaction_id")
    rematch = Q(result=EventResult.ORPHAN) & (
        Q(midtrans_order_id__in=known_ids) | Q(midtrans_order_id__in=known_transactions)
    )
    # Capped: an event that never goes through is given up (and alerted, see _alerts_sweep)
    # instead of being retried forever.
    events = PaymentEvent.objects.filter(
        rematch if orphans_only else unprocessed | rematch,
        processing_attempts__lt=settings.RECONCILE_EVENT_MAX_ATTEMPTS,
    )
    if since is not None:
        events = events.filter(received_at__gte=since)
    if order_id is not None:
        attempts_of_order = PaymentAttempt.objects.filter(order_id=order_id)
        events = events.filter(
            Q(midtrans_order_id__in=attempts_of_order.values("midtrans_order_id"))
            | Q(midtrans_order_id__in=attempts_of_order.exclude(transaction_id="").values("transaction_id"))
        )
    # Least recently tried first (never tried: first of all), so events that keep failing
    # take turns with the others instead of filling every batch.
    events = events.order_by(F("last_tried_at").asc(nulls_first=True), "received_at")
    batch = list(events.values_list("pk", "midtrans_order_id", "result")[: settings.RECONCILE_BATCH_SIZE])
    for event_id, midtrans_order_id, result in batch:
        report.checked += 1
        try:
            outcome = event_process(event_id=event_id, actor=actor, dry_run=dry_run)
        except EventDeferred as exc:
            report.errors.append(f"event {event_id} ({midtrans_order_id}): Midtrans unavailable: {exc}")
            raise _MidtransDown(str(exc)) from exc
        except EventProcessingFailed as exc:
            report.errors.append(f"event {event_id} ({midtrans_order_id}): {exc}")
            continue
        if outcome.result == "unconfirmed":
            report.errors.append(
                f"event {event_id} ({midtrans_order_id}): not confirmed by the status API, kept for a later sweep"
            )
        if result == EventResult.ORPHAN and outcome.result not in (EventResult.ORPHAN, "unconfirmed"):
            report.note(f"{midtrans_order_id}: orphan event {event_id} matched its attempt")
        report.record(outcome)


def _due_orders_sweep(*, report: ReconcileReport, actor: str, since, dry_run: bool, now: datetime) -> None:
    orders = Order.objects.filter(status__in=Order.OPEN_STATUSES, expires_at__lte=now)
    if since is not None:
        orders = orders.filter(created_at__gte=since)
    # Orders whose live attempts were read least recently first (never read, or no live
    # attempt left: first of all). An order that cannot be expired yet (an attempt held in
    # fraud challenge, an amount mismatch) moves to the back once read, instead of filling
    # every batch ahead of orders that can be closed.
    orders = orders.annotate(
        live_read_at=Min("attempts__status_checked_at", filter=Q(attempts__status__in=PaymentAttempt.LIVE_STATUSES))
    ).order_by(F("live_read_at").asc(nulls_first=True), "expires_at")
    for order_id in orders.values_list("pk", flat=True)[: settings.RECONCILE_BATCH_SIZE]:
        live = PaymentAttempt.objects.filter(order_id=order_id, status__in=PaymentAttempt.LIVE_STATUSES)
        for attempt_id in live.order_by("number").values_list("pk", flat=True):
            _item_sync(attempt_id=attempt_id, actor=actor, dry_run=dry_run, report=report, label=f"order {order_id}")
        outcome = order_expire(order_id=order_id, actor=actor, dry_run=dry_run)
        report.record(outcome)


def _stale_attempts_sweep(*, report: ReconcileReport, actor: str, since, dry_run: bool, now: datetime) -> None:
    cutoff = now - timedelta(minutes=settings.RECONCILE_STALE_MINUTES)
    attempts = PaymentAttempt.objects.filter(
        Q(status_checked_at__isnull=True) | Q(status_checked_at__lte=cutoff),
        status__in=PaymentAttempt.LIVE_STATUSES,
        updated_at__lte=cutoff,
    )
    if since is not None:
        attempts = attempts.filter(created_at__gte=since)
    ids = attempts.order_by(F("status_checked_at").asc(nulls_first=True), "updated_at").values_list("pk", flat=True)
    for attempt_id in ids[: settings.RECONCILE_BATCH_SIZE]:
        _item_sync(attempt_id=attempt_id, actor=actor, dry_run=dry_run, report=report, label=f"attempt {attempt_id}")


def _paid_attempts_sweep(*, report: ReconcileReport, actor: str, since, dry_run: bool, now: datetime) -> None:
    """Paid attempts re-read while their payment is recent: first RECONCILE_STALE_MINUTES after
    payment, then whenever the time since the last read reaches the time from payment to that
    read (about 5, 10, 20, 40 min, ... 32 h: a dozen reads over 48 h)."""
    hours = settings.RECONCILE_PAID_WATCH_HOURS
    if not hours or hours <= 0:
        return
    cutoff = now - timedelta(minutes=settings.RECONCILE_STALE_MINUTES)
    attempts = (
        PaymentAttempt.objects.filter(
            status__in=MONEY_HOLDING_ATTEMPT_STATUSES,
            # Implied by the paid_at condition (the attempt changed when it was paid), and
            # served by the (status, updated_at) index, so old paid attempts are never scanned.
            updated_at__gte=now - timedelta(hours=hours),
            order__paid_at__gte=now - timedelta(hours=hours),
            order__paid_at__lte=cutoff,
        )
        .annotate(
            read_wait=ExpressionWrapper(
                Value(now, output_field=DateTimeField()) - F("status_checked_at"), output_field=DurationField()
            ),
            read_age=ExpressionWrapper(F("status_checked_at") - F("order__paid_at"), output_field=DurationField()),
        )
        .filter(Q(status_checked_at__isnull=True) | Q(status_checked_at__lte=cutoff, read_age__lte=F("read_wait")))
    )
    if since is not None:
        attempts = attempts.filter(created_at__gte=since)
    ids = attempts.order_by(F("status_checked_at").asc(nulls_first=True), "order__paid_at").values_list("pk", flat=True)
    for attempt_id in ids[: settings.RECONCILE_BATCH_SIZE]:
        _item_sync(
            attempt_id=attempt_id, actor=actor, dry_run=dry_run, report=report, label=f"paid attempt {attempt_id}"
        )


# Midtrans' longest transaction expiry: a pending notice older than that is for a VA long dead.
_LATE_PENDING_WINDOW = timedelta(days=7)


def _late_pending_sweep(*, report: ReconcileReport, actor: str, since, dry_run: bool, now: datetime) -> None:
    """Closed attempts that Midtrans reported pending (recorded as stale) since we last read them."""
    events = (
        PaymentEvent.objects.filter(
            result=EventResult.STALE,
            transaction_status__iexact="pending",
            received_at__gte=now - _LATE_PENDING_WINDOW,
            attempt__status__in=CLOSED_ATTEMPT_STATUSES,
        )
        .filter(Q(attempt__status_checked_at__isnull=True) | Q(attempt__status_checked_at__lt=F("received_at")))
        .filter(Q(attempt__order__expires_at__lte=now) | ~Q(attempt__order__status__in=Order.OPEN_STATUSES))
    )
    if since is not None:
        events = events.filter(received_at__gte=since)
    batch = events.order_by("received_at").values_list("attempt_id", flat=True)[: settings.RECONCILE_BATCH_SIZE]
    for attempt_id in dict.fromkeys(batch):
        _item_sync(attempt_id=attempt_id, actor=actor, dry_run=dry_run, report=report, label=f"attempt {attempt_id}")


def _alerts_sweep(*, report: ReconcileReport, dry_run: bool, now: datetime) -> None:
    """Tell operators, once each, about events the sweep gave up on and long-unmatched orphans."""
    exhausted = Q(
        result__in=(EventResult.RECEIVED, EventResult.FAILED),
        processing_attempts__gte=settings.RECONCILE_EVENT_MAX_ATTEMPTS,
    )
    orphaned = Q(
        result=EventResult.ORPHAN, received_at__lte=now - timedelta(hours=settings.RECONCILE_ORPHAN_ALERT_HOURS)
    )
    due = PaymentEvent.objects.filter(exhausted | orphaned, alerted_at__isnull=True).order_by("received_at")
    for event_id in due.values_list("pk", flat=True)[: settings.RECONCILE_BATCH_SIZE]:
        if dry_run:
            report.note(f"event {event_id}: would alert operators")
            continue
        with transaction.atomic():
            event = PaymentEvent.objects.select_for_update().filter(pk=event_id, alerted_at__isnull=True).first()
            if event is None:
                continue  # a concurrent sweep alerted it
            order_id = (
                PaymentAttempt.objects.filter(midtrans_order_id=event.midtrans_order_id)
                .values_list("order_id", flat=True)
                .first()
            )
            if event.result == EventResult.ORPHAN:
                subject = f"Unmatched Midtrans notification for {event.midtrans_order_id}"
                received = timezone.localtime(event.received_at).strftime("%Y-%m-%d %H:%M %Z")
                body = (
                    f"Payment event {event.pk} ({event.transaction_status or '?'}, received {received}) names "
                    f"Midtrans order id {event.midtrans_order_id}, which no payment attempt has. Check the "
                    "Midtrans dashboard for money taken under that id and refund or assign it."
                )
            else:
                subject = f"Payment event {event.pk} given up after {event.processing_attempts} tries"
                body = (
                    f"Payment event {event.pk} ({event.transaction_status or '?'} for {event.midtrans_order_id}, "
                    f"{event.result}) could not be processed after {event.processing_attempts} tries; the sweep "
                    f"no longer retries it. Last error: {event.error[-500:] or '-'}. Check the Midtrans dashboard, "
                    f"then `manage.py replay_payment_events --id {event.pk}` or sync the order."
                )
            notices.notice_alert(order_id=order_id or event.midtrans_order_id, subject=subject, body=body)
            event.alerted_at = now
            event.save(update_fields=["alerted_at"])
        report.note(f"event {event_id}: operators alerted ({subject})")


def _log(report: ReconcileReport, *, scope: str) -> None:
    for line in report.changes:
        logger.info("reconcile_change", extra={"scope": scope, "change": line})
    for line in report.errors:
        logger.warning("reconcile_error", extra={"scope": scope, "error": line})
    logger.info(
        "reconcile_done",
        extra={
            "scope": scope,
            "checked": report.checked,
            "changed": len(report.changes),
            "errors": len(report.errors),
            "dry_run": report.dry_run,
        },
    )
