"""Refunds: money sent back to a customer, through Midtrans or recorded as sent by hand.

One service, `refund_request`, called by the admin's "Refund" button and by
`manage.py refund_order`. How a refund cannot happen twice:
- the order row, then its attempts, then their refunds are locked (the project's lock
  order) while the amount is checked against what remains refundable, and a refund still
  waiting for Midtrans blocks another one on the same order: two operators refunding at
  once end with one refund;
- the Refund row, with its `refund_key`, is committed BEFORE Midtrans is called, and the
  same key is sent on every try: after a timeout the operator runs the same refund again,
  and Midtrans answers "Duplicate refund ID" (406) instead of refunding twice; that answer
  means "already requested", confirmed by a status read.
A Midtrans refund stays *requested* until Midtrans lists it (its refund notification or a
status read); the order then changes in payments.services.events.payment_status_apply,
like every other Midtrans status (full refund: REFUNDED and access revoked; partial: per
PARTIAL_REFUND_REVOKES_ACCESS), which also confirms the Refund row and tells the customer.

Midtrans cannot refund virtual accounts, bank bills or convenience-store payments: for
those the operator sends the money by hand and records an *offline* refund with the
transfer's reference. It is applied through the same payment_status_apply, with a status
said by us (recorded as such), so its effects are exactly those of a Midtrans refund.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from common.money import rupiah_format
from payments import midtrans
from payments.models import EventSource, Order, PaymentAttempt, Refund
from payments.services.audit import audit_record
from payments.services.events import payment_status_apply
from payments.states import MONEY_HOLDING_ATTEMPT_STATUSES, attempts_lock, order_lock

logger = logging.getLogger(__name__)

# Payment types Midtrans can refund through the Core API (reference §2); the rest are
# refunded by hand (offline).
MIDTRANS_REFUNDABLE_PAYMENT_TYPES = frozenset(
    {"credit_card", "gopay", "shopeepay", "qris", "dana", "ovo", "kredivo", "akulaku"}
)
NOTE_MAX_LENGTH = 1000
REFERENCE_MAX_LENGTH = Refund._meta.get_field("offline_reference").max_length


class RefundRefused(Exception):
    """The refund cannot be made as asked; the message says why. Nothing was changed."""


@dataclass
class RefundOutcome:
    refund: Refund
    message: str  # for the operator
    resumed: bool = False  # a retry of a refund whose earlier call had an unknown outcome

    @property
    def done(self) -> bool:
        return self.refund.status == Refund.Status.CONFIRMED


def _input_check(*, amount, reason: str, note: str, offline: bool, reference: str, operator: str) -> None:
    if reason not in Refund.Reason.values:
        raise RefundRefused(f"Unknown refund reason {reason!r}; use one of: {', '.join(Refund.Reason.values)}.")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0):
        raise RefundRefused(f"The refund amount must be a whole number of rupiah above 0, not {amount!r}.")
    if len(note) > NOTE_MAX_LENGTH:
        raise RefundRefused(f"The note is longer than {NOTE_MAX_LENGTH} characters.")
    if offline and not reference.strip():
        raise RefundRefused(
            "An offline refund needs the reference of the transfer you made (e.g. the bank's transaction number)."
        )
    if not offline and reference.strip():
        raise RefundRefused("A reference is only for an offline refund (money sent back by hand).")
    if len(reference) > REFERENCE_MAX_LENGTH:
        raise RefundRefused(f"The reference is longer than {REFERENCE_MAX_LENGTH} characters.")
    if not operator.strip():
        raise RefundRefused("The operator's username is required for the audit trail.")


def _attempt_choose(*, order: Order, attempts: list[PaymentAttempt], midtrans_order_id: str | None) -> PaymentAttempt:
    holding = [a for a in attempts if a.status in MONEY_HOLDING_ATTEMPT_STATUSES]
    if midtrans_order_id:
        chosen = next((a for a in attempts if a.midtrans_order_id == midtrans_order_id), None)
        if chosen is None:
            raise RefundRefused(f"Order {order.pk} has no payment {midtrans_order_id!r}.")
        if chosen not in holding:
            raise RefundRefused(f"Payment {chosen.midtrans_order_id} holds no money to refund (it is {chosen.status}).")
        return chosen
    if not holding:
        raise RefundRefused(f"Order {order.pk} has no payment to refund (order {order.status}).")
    if len(holding) > 1:
        names = ", ".join(a.midtrans_order_id for a in holding)
        raise RefundRefused(f"Order {order.pk} was paid more than once ({names}): choose which payment to refund.")
    return holding[0]


def _refundable(*, attempt: PaymentAttempt, refunds: list[Refund]) -> int:
    """What is left to refund on the attempt: neither refunded (by Midtrans' count or ours) nor
    asked for in a refund still waiting."""
    mine = [r for r in refunds if r.attempt_id == attempt.pk]
    confirmed = sum(r.amount for r in mine if r.status == Refund.Status.CONFIRMED)
    waiting = sum(r.amount for r in mine if r.status == Refund.Status.REQUESTED)
    return max(0, attempt.amount - max(attempt.refunded_amount, confirmed) - waiting)


def _method_check(*, attempt: PaymentAttempt, offline: bool) -> None:
    payment_type = attempt.payment_type
    if not payment_type:
        raise RefundRefused(
            f"The payment method of {attempt.midtrans_order_id} is not known yet; use 'Sync from Midtrans' first."
        )
    refundable = payment_type in MIDTRANS_REFUNDABLE_PAYMENT_TYPES
    if offline and refundable:
        raise RefundRefused(
            f"{attempt.midtrans_order_id} was paid by {payment_type}, which Midtrans refunds: refund it through "
            "Midtrans (without offline), so the money and Midtrans' records agree."
        )
    if not offline and not refundable:
        raise RefundRefused(
            f"Midtrans cannot refund {payment_type} payments. Send the money back by hand, then record it as an "
            "offline refund with the transfer's reference."
        )


def _refund_reserve(
    *,
    order_id: str,
    midtrans_order_id: str | None,
    amount: int | None,
    reason: str,
    note: str,
    operator: str,
    offline: bool,
    reference: str,
) -> tuple[Refund, bool]:
    """Lock, check and record the refund (committed before Midtrans is called).

    Returns (refund, resumed): `resumed` when this repeats a refund whose earlier call to
    Midtrans ended without an answer; it is tried again with the same refund_key."""
    with transaction.atomic():
        try:
            order = order_lock(order_id=order_id)
        except Order.DoesNotExist:
            raise RefundRefused(f"No order {order_id!r}.") from None
        attempts = attempts_lock(order_id=order.pk)
        refunds = list(Refund.objects.select_for_update().filter(order=order).order_by("pk"))
        attempt = _attempt_choose(order=order, attempts=attempts, midtrans_order_id=midtrans_order_id)
        _method_check(attempt=attempt, offline=offline)

        waiting = [r for r in refunds if r.status == Refund.Status.REQUESTED]
        if waiting:
            refund = waiting[0]
            same = (
                not offline
                and refund.attempt_id == attempt.pk
                and (amount is None or amount == refund.amount)
                and refund.midtrans_accepted_at is None
                and refund.last_error
            )
            if not same:
                raise RefundRefused(
                    f"Refund {refund.refund_key} of {rupiah_format(refund.amount)} on this order is still waiting for "
                    "Midtrans' confirmation; wait for it (or use 'Sync from Midtrans') before another refund."
                    + (
                        " To try that refund again, ask for the same amount."
                        if refund.last_error and refund.midtrans_accepted_at is None
                        else ""
                    )
                )
            # Claimed for this try: a concurrent retry now sees a call in flight and is refused.
            refund.last_error = ""
            refund.save(update_fields=["last_error", "updated_at"])
            audit_record(
                actor=operator,
                action="refund_retried",
                obj=order,
                new_value={"refund_key": refund.refund_key, "amount": refund.amount, "tries": refund.tries},
            )
            return refund, True

        remaining = _refundable(attempt=attempt, refunds=refunds)
        if remaining <= 0:
            raise RefundRefused(f"Nothing is left to refund on {attempt.midtrans_order_id}.")
        if amount is None:
            amount = remaining
        if amount > remaining:
            raise RefundRefused(
                f"{rupiah_format(amount)} is more than what remains refundable on {attempt.midtrans_order_id} "
                f"({rupiah_format(remaining)})."
            )
        number = sum(1 for r in refunds if r.attempt_id == attempt.pk) + 1
        refund = Refund.objects.create(
            order=order,
            attempt=attempt,
            refund_key=f"{attempt.midtrans_order_id}-R{number}",
            amount=amount,
            reason=reason,
            note=note,
            offline=offline,
            offline_reference=reference.strip(),
            operator=operator,
        )
        audit_record(
            actor=operator,
            action="refund_requested",
            obj=order,
            new_value={
                "refund_key": refund.refund_key,
                "midtrans_order_id": attempt.midtrans_order_id,
                "amount": amount,
                "reason": reason,
                "note": note,
                "offline": offline,
                "reference": refund.offline_reference,
            },
        )
        return refund, False


def _offline_status(*, refund: Refund, attempt: PaymentAttempt, operator: str) -> dict:
    """The refund as a status body said by us (like reconcile's locally said expire): applied
    through payment_status_apply, so an offline refund has a Midtrans refund's effects."""
    total = min(attempt.amount, attempt.refunded_amount + refund.amount)
    return {
        "order_id": attempt.midtrans_order_id,
        "transaction_status": "refund" if total >= attempt.amount else "partial_refund",
        "status_code": "200",
        "gross_amount": f"{attempt.amount}.00",
        "currency": "IDR",
        "refund_amount": f"{total}.00",
        "refunds": [{"refund_key": refund.refund_key, "refund_amount": f"{refund.amount}.00"}],
        "status_message": f"offline refund recorded by {operator}: {refund.offline_reference}",
    }


def _offline_apply(*, refund: Refund, operator: str) -> RefundOutcome:
    with transaction.atomic():
        attempt = PaymentAttempt.objects.get(pk=refund.attempt_id)
        payment_status_apply(
            midtrans_order_id=attempt.midtrans_order_id,
            status=_offline_status(refund=refund, attempt=attempt, operator=operator),
            source=EventSource.ADMIN,
            actor=operator,
            confirmed=False,
        )
        refund.refresh_from_db()
        if refund.status != Refund.Status.CONFIRMED:
            # payment_status_apply did not take it: the caller's transaction rolls it all back.
            raise RefundRefused(f"{attempt.midtrans_order_id} could not take the refund; nothing was recorded.")
    return RefundOutcome(
        refund=refund,
        message=f"Offline refund of {rupiah_format(refund.amount)} recorded ({refund.refund_key}, "
        f"reference {refund.offline_reference}).",
    )


def _status_apply(*, refund: Refund, operator: str) -> midtrans.MidtransError | None:
    """Read the attempt's status at Midtrans and apply it (this confirms the refund when listed).
    Returns the error when the read failed; the refund then stays requested."""
    attempt = refund.attempt
    try:
        status = midtrans.transaction_status(midtrans_order_id=attempt.midtrans_order_id)
    except midtrans.MidtransError as exc:
        return exc
    payment_status_apply(
        midtrans_order_id=attempt.midtrans_order_id,
        status=status,
        source=EventSource.ADMIN,
        actor=operator,
        confirmed=True,
    )
    return None


def _read_failed(exc: midtrans.MidtransError | None) -> str:
    return f"status read failed: {type(exc).__name__}: {exc}" if exc is not None else ""


def _refund_mark(*, refund: Refund, **values) -> None:
    Refund.objects.filter(pk=refund.pk, status=Refund.Status.REQUESTED).update(updated_at=timezone.now(), **values)
    refund.refresh_from_db()


def _midtrans_refund(*, refund: Refund, operator: str, resumed: bool) -> RefundOutcome:
    attempt = refund.attempt
    Refund.objects.filter(pk=refund.pk).update(tries=refund.tries + 1)
    log = {"order_id": refund.order_id, "midtrans_order_id": attempt.midtrans_order_id, "refund_id": refund.pk}
    try:
        answer = midtrans.transaction_refund(
            midtrans_order_id=attempt.midtrans_order_id,
            refund_key=refund.refund_key,
            amount=refund.amount,
            reason=refund.get_reason_display(),
        )
    except midtrans.MidtransDuplicateRefundKey:
        # Midtrans has this refund_key already: an earlier try reached it, its answer did not
        # reach us. A status read confirms it (and applies it) now.
        logger.info("refund_already_requested", extra=log)
        _refund_mark(refund=refund, midtrans_accepted_at=timezone.now())
        failed = _status_apply(refund=refund, operator=operator)
        refund.refresh_from_db()
        if refund.status == Refund.Status.CONFIRMED:
            return RefundOutcome(refund=refund, resumed=resumed, message=_confirmed_message(refund))
        return RefundOutcome(
            refund=refund,
            resumed=resumed,
            message=f"Midtrans already had refund {refund.refund_key}; it is applied when Midtrans confirms it."
            + (f" ({_read_failed(failed)})" if failed is not None else ""),
        )
    except midtrans.MidtransUnavailable as exc:
        text = f"{timezone.now().isoformat()} Midtrans did not answer: {type(exc).__name__}: {exc}"
        _refund_mark(refund=refund, last_error=text[:2000])
        logger.warning("refund_unanswered", extra=log | {"error": type(exc).__name__})
        return RefundOutcome(
            refund=refund,
            resumed=resumed,
            message=f"Midtrans did not answer ({type(exc).__name__}). Refund {refund.refund_key} of "
            f"{rupiah_format(refund.amount)} is recorded as requested: ask for the same refund again to retry; "
            "it uses the same refund key, so Midtrans cannot refund twice.",
        )
    except midtrans.MidtransError as exc:
        # Refused. If an earlier try went through after all, Midtrans lists the key: check first.
        failed = _status_apply(refund=refund, operator=operator) if refund.tries else None
        refund.refresh_from_db()
        if refund.status == Refund.Status.CONFIRMED:
            return RefundOutcome(refund=refund, resumed=resumed, message=_confirmed_message(refund))
        if failed is not None:
            text = f"{timezone.now().isoformat()} refused ({exc}); {_read_failed(failed)}"
            _refund_mark(refund=refund, last_error=text[:2000])
            return RefundOutcome(
                refund=refund,
                resumed=resumed,
                message=f"Midtrans refused the refund ({exc}) and its status could not be read to make sure; "
                f"refund {refund.refund_key} stays requested. Try again later.",
            )
        with transaction.atomic():
            _refund_mark(
                refund=refund,
                status=Refund.Status.FAILED,
                failed_at=timezone.now(),
                last_error=f"Midtrans refused: {type(exc).__name__}: {exc}"[:2000],
            )
            audit_record(
                actor=operator,
                action="refund_failed",
                obj=refund.order,
                new_value={"refund_key": refund.refund_key, "error": str(exc)[:500]},
            )
        logger.warning("refund_refused", extra=log | {"error": type(exc).__name__, "http_status": exc.http_status})
        return RefundOutcome(
            refund=refund, resumed=resumed, message=f"Midtrans refused the refund: {exc}. No money was moved."
        )
    _refund_mark(
        refund=refund,
        midtrans_accepted_at=timezone.now(),
        midtrans_refund_id=str(answer.get("refund_chargeback_id") or "")[:32],
    )
    logger.info("refund_accepted", extra=log | {"amount": refund.amount})
    if refund.status == Refund.Status.CONFIRMED:
        # Midtrans' notification was applied while its answer was on the way to us.
        return RefundOutcome(refund=refund, resumed=resumed, message=_confirmed_message(refund))
    return RefundOutcome(
        refund=refund,
        resumed=resumed,
        message=f"Midtrans accepted refund {refund.refund_key} of {rupiah_format(refund.amount)}; the order changes "
        "when Midtrans confirms it (its notification, or 'Sync from Midtrans').",
    )


def _confirmed_message(refund: Refund) -> str:
    order = Order.objects.get(pk=refund.order_id)
    return (
        f"Refund {refund.refund_key} of {rupiah_format(refund.amount)} confirmed by Midtrans; order {order.pk} is now "
        f"{order.get_status_display().lower()}."
    )


def refund_request(
    *,
    order_id: str,
    reason: str,
    operator: str,
    amount: int | None = None,
    note: str = "",
    offline: bool = False,
    reference: str = "",
    attempt: str | None = None,
) -> RefundOutcome:
    """Refund `amount` (None: all that remains) of one payment of `order_id`.

    `attempt`: the Midtrans order id of the payment to refund, needed only when the order was
    paid twice. `offline`: the money was sent back by hand (methods Midtrans cannot refund),
    with the transfer's `reference`. Raises RefundRefused (nothing changed) when the refund
    cannot be made as asked. A Midtrans refund that was sent but not confirmed yet is returned
    as requested; asking again for the same refund after a timeout retries it safely.
    """
    note = (note or "").strip()
    reference = reference or ""
    _input_check(amount=amount, reason=reason, note=note, offline=offline, reference=reference, operator=operator)
    fields = dict(
        order_id=order_id,
        midtrans_order_id=attempt,
        amount=amount,
        reason=reason,
        note=note,
        operator=operator,
        offline=offline,
        reference=reference,
    )
    if offline:
        # Nothing to call: recorded and applied in one transaction, under the same locks.
        with transaction.atomic():
            refund, _ = _refund_reserve(**fields)
            return _offline_apply(refund=refund, operator=operator)
    refund, resumed = _refund_reserve(**fields)
    refund = Refund.objects.select_related("attempt", "order").get(pk=refund.pk)
    return _midtrans_refund(refund=refund, operator=operator, resumed=resumed)


# A refund younger than this is left to its own call and Midtrans' notification.
SWEEP_MIN_AGE_SECONDS = 120


@dataclass
class RefundSweepReport:
    checked: int = 0
    confirmed: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def refunds_sweep(*, actor: str = "reconcile", limit: int = 50) -> RefundSweepReport:
    """Settle Midtrans refunds still requested: read the status (which confirms a refund that
    Midtrans lists), and send again, with the same refund_key, one whose every call so far
    ended without an answer (a timeout nobody retried). Safe to run twice or concurrently:
    the key makes a second send a "Duplicate refund ID"."""
    report = RefundSweepReport()
    due = Refund.objects.filter(
        status=Refund.Status.REQUESTED,
        offline=False,
        requested_at__lte=timezone.now() - timedelta(seconds=SWEEP_MIN_AGE_SECONDS),
    ).order_by("updated_at")
    for refund in due.select_related("attempt", "order")[:limit]:
        report.checked += 1
        failed = _status_apply(refund=refund, operator=actor)
        refund.refresh_from_db()
        if refund.status == Refund.Status.CONFIRMED:
            report.confirmed.append(refund.refund_key)
            continue
        if failed is not None:
            report.errors.append(f"{refund.refund_key}: {_read_failed(failed)}")
            if isinstance(failed, midtrans.MidtransUnavailable):
                break  # Midtrans is down: the next sweep goes on
            continue
        if refund.midtrans_accepted_at is None and refund.last_error:
            claimed = Refund.objects.filter(pk=refund.pk, status=Refund.Status.REQUESTED, last_error=refund.last_error)
            if not claimed.update(last_error="", updated_at=timezone.now()):
                continue  # an operator is retrying it right now
            outcome = _midtrans_refund(refund=refund, operator=actor, resumed=True)
            report.retried.append(f"{refund.refund_key}: {outcome.message}")
    if report.checked:
        logger.info(
            "refunds_swept",
            extra={
                "checked": report.checked,
                "confirmed": len(report.confirmed),
                "retried": len(report.retried),
                "errors": len(report.errors),
            },
        )
    return report
