"""What Midtrans says about a payment, applied to our orders exactly once.

The ONE function that applies a confirmed Midtrans status to an attempt lives here:
`payment_status_apply` (the transition tables and the locks are in payments.states).
The webhook, the reconciliation sweep, the replay command and the admin's "Sync from
Midtrans" all end up in it. It records the `PaymentEvent` and applies every effect in one
database transaction that locks the order row, then the attempt row (the project's one
lock order): the transition, the attempt's Midtrans fields, the entitlement grant or
revoke, the audit rows and the outbox rows (through payments.notices).

Why effects happen once under duplicated, reordered and concurrent notifications:
- the state machines are monotonic: a status that would move backwards is recorded as
  stale and changes nothing; a status equal to the current one is a duplicate;
- a webhook body is stored once per meaning (unique dedup key, see meaning_of), and an
  event that was processed is never processed again (checked again under the order lock);
- the entitlement and the outbox rows are unique per order / per dedupe key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from enum import StrEnum
from typing import NamedTuple

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.db import row_insert_or_skip
from entitlements.services import entitlement_grant, entitlement_revoke
from payments import midtrans, notices
from payments.models import (
    AttemptStatus,
    EventResult,
    EventSource,
    Order,
    OrderStatus,
    PaymentAttempt,
    PaymentEvent,
    Refund,
)
from payments.services.audit import audit_batch, audit_record
from payments.services.discounts import discount_use_follow
from payments.states import (
    MONEY_HOLDING_ATTEMPT_STATUSES,
    PAID_ORDER_STATUSES,
    TransitionNotAllowed,
    attempt_transition_allowed,
    attempts_lock,
    order_lock,
    order_transition_allowed,
)

logger = logging.getLogger(__name__)

_O = OrderStatus
_A = AttemptStatus


# Event results after which the event is never applied again.
FINAL_EVENT_RESULTS = frozenset({EventResult.APPLIED, EventResult.DUPLICATE, EventResult.STALE, EventResult.MISMATCH})


def order_status_set(*, order: Order, new: str, actor: str, reason: str, event_id: int | None = None) -> None:
    """Move a locked order to `new` after checking the table; audited. The caller saves."""
    old = order.status
    if not order_transition_allowed(old=old, new=new):
        raise TransitionNotAllowed(f"order {order.pk}: {old} -> {new} is not in the transition table")
    order.status = new
    discount_use_follow(order=order, old_status=old, new_status=new)
    audit_record(
        actor=actor,
        action="order_status_changed",
        obj=order,
        old_value={"status": old},
        new_value={"status": new, "reason": reason, "event_id": event_id},
    )


def attempt_status_set(
    *, attempt: PaymentAttempt, new: str, actor: str, reason: str, event_id: int | None = None
) -> None:
    """Move a locked attempt to `new` after checking the table; audited. The caller saves."""
    old = attempt.status
    if not attempt_transition_allowed(old=old, new=new):
        raise TransitionNotAllowed(f"attempt {attempt.midtrans_order_id}: {old} -> {new} is not in the table")
    attempt.status = new
    audit_record(
        actor=actor,
        action="attempt_status_changed",
        obj=attempt,
        old_value={"status": old},
        new_value={"status": new, "reason": reason, "event_id": event_id, "order_id": attempt.order_id},
    )


# --- Reading a Midtrans status ----------------------------------------------------------------


class Signal(StrEnum):
    """What a Midtrans status body means for our attempt."""

    NONE = "none"  # Midtrans knows no transaction (status_code 404) or said nothing usable
    PENDING = "pending"
    CHALLENGE = "challenge"  # held by the fraud check: not paid
    SUCCESS = "success"  # money arrived
    FAILURE = "failure"  # deny / cancel / failure (after a success: a reversal)
    EXPIRE = "expire"
    PARTIAL_REFUND = "partial_refund"
    REFUND = "refund"
    CHARGEBACK = "chargeback"


def _text(status: dict, name: str) -> str:
    value = status.get(name)
    return value.strip().lower() if isinstance(value, str) else ""


def status_signal(status: dict) -> Signal:
    """Map a status body (notification or status API) to a Signal.

    Branch on transaction_status, never on status_code (a result code of the call), except
    that "404" means Midtrans has no such transaction. Fulfil only settlement, or capture
    with fraud_status accept or absent ("fraud_status (if present) is accept", reference §3;
    some payment types never carry it); compare case-insensitively (a doc sample shows
    "PENDING").
    """
    if _text(status, "status_code") == "404":
        return Signal.NONE
    ts, fraud = _text(status, "transaction_status"), _text(status, "fraud_status")
    if ts == "settlement":
        if fraud in ("", "accept"):
            return Signal.SUCCESS
        return Signal.CHALLENGE  # a settlement the fraud check did not accept: a person decides
    if ts == "capture":
        if fraud in ("", "accept"):
            return Signal.SUCCESS
        if fraud == "deny":
            return Signal.FAILURE
        return Signal.CHALLENGE  # "challenge", or a value we do not know: a person decides
    if ts in ("pending", "authorize"):
        return Signal.PENDING
    if ts in ("deny", "cancel", "failure"):
        return Signal.FAILURE
    if ts == "expire":
        return Signal.EXPIRE
    if ts == "partial_refund":
        return Signal.PARTIAL_REFUND
    if ts == "refund":
        return Signal.REFUND
    if ts in ("chargeback", "partial_chargeback"):
        return Signal.CHARGEBACK
    return Signal.NONE


# The status_code Midtrans sends with each transaction_status (reference §2: 200 capture,
# settlement, refund; 201 pending; 202 deny or cancel; 407 or 202 expire). The signature
# covers status_code but NOT transaction_status or fraud_status, so when a body is applied
# without the status API's confirmation, they must agree: a signed pending body (201)
# edited to "settlement" must not pay an order. Strict on purpose: a genuine body refused
# here is still recorded, and the sweep applies what the status API says for the attempt.
# A success is checked first (only "200"); then this table, by transaction_status.
STATUS_CODES_BY_TRANSACTION_STATUS: dict[str, frozenset[str]] = {
    "settlement": frozenset({"200", "201"}),  # not a success here: held by the fraud check
    "capture": frozenset({"200", "201"}),  # held by the fraud check: Midtrans sends 201 ("challenged by FDS")
    "pending": frozenset({"201"}),
    "authorize": frozenset({"200", "201"}),
    "deny": frozenset({"202"}),
    "cancel": frozenset({"202"}),
    "failure": frozenset({"202"}),
    "expire": frozenset({"407", "202"}),
    "refund": frozenset({"200"}),
    "partial_refund": frozenset({"200"}),
    "chargeback": frozenset({"200"}),
    "partial_chargeback": frozenset({"200"}),
}


def status_code_mismatch(status: dict) -> str:
    """Why the body's status_code cannot go with its transaction_status; "" when it can."""
    ts, code = _text(status, "transaction_status"), _text(status, "status_code")
    signal = status_signal(status)
    expected: frozenset[str] | None
    if signal == Signal.SUCCESS:
        expected = frozenset({"200"})
    elif ts == "capture" and signal == Signal.FAILURE:
        expected = frozenset({"202"})  # denied by the fraud check
    else:
        expected = STATUS_CODES_BY_TRANSACTION_STATUS.get(ts)
    if expected is None or code in expected:
        return ""  # a status we do not apply anyway (Signal.NONE), or consistent
    return (
        f"status_code {code!r} does not go with transaction_status {ts!r} (Midtrans sends "
        f"{' or '.join(sorted(expected))}); transaction_status is not covered by the signature"
    )


def amount_parse(value) -> Decimal | None:
    """Exact Decimal of a Midtrans amount string ("99000.00"); None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def charged_amount(status: dict) -> Decimal | None:
    """The amount to compare with the attempt's: with Midtrans' Automatic Fee Imposition,
    gross_amount includes the customer's fee and the original amount sits in metadata."""
    metadata = status.get("metadata")
    if isinstance(metadata, dict):
        info = (
            (metadata.get("extra_info") or {}).get("gross_amount_info")
            if isinstance(metadata.get("extra_info"), dict)
            else None
        )
        if isinstance(info, dict) and "original_amount" in info:
            return amount_parse(info.get("original_amount"))
    return amount_parse(status.get("gross_amount"))


def refund_total(status: dict) -> int | None:
    """Total refunded so far per Midtrans (cumulative: a repeated notification adds nothing)."""
    total = amount_parse(status.get("refund_amount"))
    refunds = status.get("refunds")
    if isinstance(refunds, list):
        seen: dict[str, Decimal] = {}
        for index, refund in enumerate(refunds):
            if not isinstance(refund, dict):
                continue
            key = str(refund.get("refund_chargeback_id") or refund.get("refund_key") or f"#{index}")
            amount = amount_parse(refund.get("refund_amount"))
            if amount is not None:
                seen[key] = amount
        if seen:
            listed = sum(seen.values(), Decimal(0))
            total = listed if total is None else max(total, listed)
    if total is None:
        return None
    return int(total.to_integral_value(rounding=ROUND_FLOOR))


def payment_code_of(status: dict) -> str:
    """The number the customer pays to: VA number, Permata VA, Mandiri bill key, store code."""
    vas = status.get("va_numbers")
    if isinstance(vas, list) and vas and isinstance(vas[0], dict) and vas[0].get("va_number"):
        return str(vas[0]["va_number"])
    for name in ("permata_va_number", "payment_code"):
        if status.get(name):
            return str(status[name])
    if status.get("bill_key"):
        biller = status.get("biller_code")
        return f"{biller}/{status['bill_key']}" if biller else str(status["bill_key"])
    return ""


# The fields that decide what applying a body does. Only order_id, status_code and
# gross_amount are signed; every other field is free to differ between two copies of one
# notification, so two bodies that agree on these are the same event.
MEANING_FIELDS = (
    "order_id",
    "transaction_id",
    "transaction_status",
    "status_code",
    "gross_amount",
    "fraud_status",
    "settlement_time",
)


def meaning_of(payload: dict) -> dict:
    """What a Midtrans body says, as a plain dict: the MEANING_FIELDS and the refunds."""
    meaning: dict = {}
    for name in MEANING_FIELDS:
        value = payload.get(name)
        text = "" if value is None else str(value).strip()
        # status_signal reads these two case-insensitively, so "PENDING" means "pending".
        meaning[name] = text.lower() if name in ("transaction_status", "fraud_status") else text
    refund_amount = amount_parse(payload.get("refund_amount"))
    meaning["refund_amount"] = "" if refund_amount is None else str(refund_amount.normalize())
    refunds = payload.get("refunds")
    entries = []
    for refund in refunds if isinstance(refunds, list) else []:
        if isinstance(refund, dict):
            amount = amount_parse(refund.get("refund_amount"))
            entries.append(
                [
                    str(refund.get("refund_chargeback_id") or ""),
                    str(refund.get("refund_key") or ""),
                    "" if amount is None else str(amount.normalize()),
                    # The bank's confirmation is news (Midtrans' second refund notification);
                    # its time is not part of it, so edited copies add at most one meaning.
                    "bank_confirmed" if refund.get("bank_confirmed_at") else "",
                ]
            )
    meaning["refunds"] = sorted(entries)
    return meaning


def dedup_key_of(*, source: str, payload: dict) -> str:
    canonical = json.dumps(meaning_of(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{source}:{hashlib.sha256(canonical.encode()).hexdigest()}"


# --- Recording events -------------------------------------------------------------------------


def _event_stored(*, payload: dict, source: str, midtrans_order_id: str) -> tuple[PaymentEvent, bool]:
    """The event row for this body (one per meaning and source), and whether this call stored it.

    A concurrent insert of the same key waits for the other transaction, then skips and reads
    its row: 50 identical notifications arriving together store one row and none of them fails."""
    event = PaymentEvent(
        dedup_key=dedup_key_of(source=source, payload=payload),
        midtrans_order_id=midtrans_order_id[:50],
        source=source,
        transaction_status=str(payload.get("transaction_status", ""))[:32],
        status_code=str(payload.get("status_code", ""))[:8],
        gross_amount=str(payload.get("gross_amount", ""))[:32],
        payload=payload,
    )
    if row_insert_or_skip(event):
        return event, True
    return PaymentEvent.objects.get(dedup_key=event.dedup_key), False


def event_record(*, payload: dict, source: str = EventSource.WEBHOOK) -> PaymentEvent:
    """Store a verified notification once (unique dedup key); the stored row is returned."""
    event, _ = _event_stored(payload=payload, source=source, midtrans_order_id=str(payload.get("order_id", "")))
    return event


def event_failure_record(*, event_id: int, error: str) -> None:
    """Keep why processing failed (with the traceback), in its own transaction."""
    with transaction.atomic():
        event = PaymentEvent.objects.select_for_update().filter(pk=event_id).first()
        if event is None or event.result in FINAL_EVENT_RESULTS:
            return
        event.result = EventResult.FAILED
        event.error = error[-10000:]
        event.processing_attempts += 1
        event.last_tried_at = timezone.now()
        event.save(update_fields=["result", "error", "processing_attempts", "last_tried_at"])


def event_defer(*, event_id: int, reason: str) -> None:
    """Leave an event unprocessed (the sweep retries it) and say why.

    Its result stays what it was (received, failed or orphan): the try counts towards
    RECONCILE_EVENT_MAX_ATTEMPTS whatever the result, so a failed event that is deferred
    does not start counting again."""
    with transaction.atomic():
        event = PaymentEvent.objects.select_for_update().filter(pk=event_id).first()
        if event is None or event.result in FINAL_EVENT_RESULTS:
            return
        event.error = reason[-10000:]
        event.processing_attempts += 1
        event.last_tried_at = timezone.now()
        event.save(update_fields=["error", "processing_attempts", "last_tried_at"])


# --- Applying a status ------------------------------------------------------------------------


@dataclass
class ApplyOutcome:
    result: str  # an EventResult value, or "unconfirmed" (Midtrans does not know it yet)
    midtrans_order_id: str
    event_id: int | None = None
    order_id: str | None = None
    attempt_from: str | None = None
    attempt_to: str | None = None
    order_from: str | None = None
    order_to: str | None = None
    alerts: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return (self.attempt_from != self.attempt_to) or (self.order_from != self.order_to)

    def describe(self) -> str:
        parts = [f"{self.midtrans_order_id}: {self.result}"]
        if self.attempt_from != self.attempt_to:
            parts.append(f"attempt {self.attempt_from} -> {self.attempt_to}")
        if self.order_from != self.order_to:
            parts.append(f"order {self.order_id} {self.order_from} -> {self.order_to}")
        parts.extend(f"ALERT {alert}" for alert in self.alerts)
        return "; ".join(parts)


@dataclass
class _Effects:
    """What one status does, decided under the locks before anything is written."""

    result: str
    attempt_to: str | None = None
    order_to: str | None = None
    grant: bool = False
    revoke: bool = False
    paid_at_clear: bool = False
    alerts: list[tuple[str, str]] = field(default_factory=list)  # (subject, body)
    messages: list[Callable[..., None]] = field(default_factory=list)  # payments.notices, called with the order
    review: str = ""
    note: str = ""
    attempt_refunded: int | None = None  # Midtrans' cumulative refund total for the attempt
    order_refunded: int | None = None


def _amount_matches(*, attempt: PaymentAttempt, status: dict) -> tuple[bool, str]:
    currency = status.get("currency")
    if isinstance(currency, str) and currency and currency.upper() != "IDR":
        return False, f"currency {currency!r}, expected IDR"
    amount = charged_amount(status)
    if amount is None:
        return False, f"gross_amount {status.get('gross_amount')!r} is not an amount"
    if amount != Decimal(attempt.amount):
        return False, f"amount {amount} confirmed by Midtrans, attempt amount is {attempt.amount}"
    return True, ""


def _decide(
    *, order: Order, attempt: PaymentAttempt, status: dict, others: list[str], paid_elsewhere: str | None = None
) -> _Effects:
    """The effects of `status` on a locked order and attempt. Pure: writes nothing.

    `others` are the statuses of the order's other attempts; `paid_elsewhere` is another
    paid order of the same customer and package (a late payment would then be a second purchase).
    """
    signal = status_signal(status)
    now = timezone.now()
    order_open = order.status in Order.OPEN_STATUSES
    other_live = any(s in PaymentAttempt.LIVE_STATUSES for s in others)
    other_holds_money = any(s in MONEY_HOLDING_ATTEMPT_STATUSES for s in others)

    if signal == Signal.NONE:
        return _Effects(result=EventResult.STALE, note="Midtrans reports no transaction state to apply")

    target = {
        Signal.PENDING: _A.PENDING,
        Signal.CHALLENGE: _A.CHALLENGE,
        Signal.SUCCESS: _A.PAID,
        Signal.FAILURE: _A.REVERSED if attempt.status in MONEY_HOLDING_ATTEMPT_STATUSES else _A.FAILED,
        Signal.EXPIRE: _A.EXPIRED,
        Signal.PARTIAL_REFUND: _A.PARTIALLY_REFUNDED,
        Signal.REFUND: _A.REFUNDED,
        Signal.CHARGEBACK: _A.CHARGEBACK,
    }[signal]

    refunded = None
    if signal in (Signal.PARTIAL_REFUND, Signal.REFUND):
        refunded = refund_total(status)
        if signal == Signal.REFUND or (refunded is not None and refunded >= attempt.amount):
            target, refunded = _A.REFUNDED, attempt.amount
        refunded = max(attempt.refunded_amount, min(refunded or 0, attempt.amount))

    if target == attempt.status:
        if target == _A.PARTIALLY_REFUNDED and (refunded or 0) > attempt.refunded_amount:
            pass  # another partial refund: the amounts move on, the status stays
        else:
            return _Effects(result=EventResult.DUPLICATE)
    elif not attempt_transition_allowed(old=attempt.status, new=target):
        return _Effects(
            result=EventResult.STALE,
            note=f"{attempt.status} -> {target} would move backwards; ignored",
        )

    if target in (_A.PENDING, _A.CHALLENGE, _A.PAID):
        matches, why = _amount_matches(attempt=attempt, status=status)
        if not matches:
            return _Effects(
                result=EventResult.MISMATCH,
                review=f"Amount mismatch on {attempt.midtrans_order_id}: {why}. Not marked paid.",
                alerts=[
                    (
                        f"Amount mismatch on order {order.pk}",
                        f"Midtrans transaction {attempt.midtrans_order_id} ({status.get('transaction_status')}): "
                        f"{why}. The order was NOT marked paid; check the Midtrans dashboard.",
                    )
                ],
            )

    fx = _Effects(result=EventResult.APPLIED, attempt_to=target, attempt_refunded=refunded)
    if target == _A.PENDING:
        if order.status == _O.CREATED:
            fx.order_to = _O.PENDING_PAYMENT
    elif target == _A.CHALLENGE:
        if order.status == _O.CREATED:
            fx.order_to = _O.PENDING_PAYMENT
        fx.review = f"Payment {attempt.midtrans_order_id} is held by Midtrans' fraud check (challenge)."
        fx.alerts.append(
            (
                f"Payment held by fraud check on order {order.pk}",
                f"Midtrans transaction {attempt.midtrans_order_id} is in 'challenge': approve or deny it in "
                "the Midtrans dashboard. The order is not paid until then.",
            )
        )
    elif target == _A.PAID:
        if order.status in (_O.CREATED, _O.PENDING_PAYMENT):
            fx.order_to, fx.grant = _O.PAID, True
            fx.messages.append(notices.notice_paid)
        elif order.status in (_O.EXPIRED, _O.FAILED, _O.CANCELLED):
            fx.order_to, fx.grant = _O.PAID, True
            fx.messages.append(notices.notice_paid)
            fx.review = f"Late payment: {attempt.midtrans_order_id} settled after the order was {order.status}."
            also = (
                f" The customer already owns this package through order {paid_elsewhere}: refund one of them."
                if paid_elsewhere
                else ""
            )
            fx.review += also
            fx.alerts.append(
                (
                    f"Late payment on order {order.pk}",
                    f"Midtrans transaction {attempt.midtrans_order_id} was paid after the order became "
                    f"{order.status}. Access was granted; check seats and follow up if needed.{also}",
                )
            )
        else:
            fx.review = (
                f"Double payment: {attempt.midtrans_order_id} was paid although order {order.pk} "
                f"is already {order.status}. Refund one of them."
            )
            fx.alerts.append(
                (
                    f"Double payment on order {order.pk}",
                    f"Midtrans transaction {attempt.midtrans_order_id} was paid ({attempt.amount} IDR) "
                    f"although the order is already {order.status}. Someone must refund it.",
                )
            )
    elif target == _A.FAILED:
        # The customer may pay again (a new attempt) while the order has time left.
        if order_open and not other_live and order.expires_at <= now:
            fx.order_to = _O.FAILED
    elif target == _A.EXPIRED:
        if order_open and not other_live:
            fx.order_to = _O.EXPIRED
            fx.messages.append(notices.notice_expired)
    elif target == _A.REVERSED:
        fx.alerts.append(
            (
                f"Payment reversed on order {order.pk}",
                f"Midtrans reported '{status.get('transaction_status')}' after settlement for "
                f"{attempt.midtrans_order_id} (a bank reversal): the money did not arrive.",
            )
        )
        fx.review = f"Bank reversal of {attempt.midtrans_order_id}."
        if order.status in PAID_ORDER_STATUSES and not other_holds_money:
            fx.order_to, fx.revoke, fx.paid_at_clear = _O.FAILED, True, True
    elif target in (_A.PARTIALLY_REFUNDED, _A.REFUNDED, _A.CHARGEBACK):
        if refunded is not None and not other_holds_money and order.status in PAID_ORDER_STATUSES:
            fx.order_refunded = min(order.amount, refunded)
        if other_holds_money:
            # The refund of a double payment: the order stays paid by the other attempt.
            fx.note = "refund/chargeback of an attempt that did not pay the order"
        elif target == _A.CHARGEBACK:
            if order.status in PAID_ORDER_STATUSES:
                fx.order_to, fx.revoke = _O.CHARGEBACK, True
            fx.review = f"Chargeback on {attempt.midtrans_order_id}."
            fx.alerts.append(
                (
                    f"Chargeback on order {order.pk}",
                    f"Midtrans reported a chargeback for {attempt.midtrans_order_id}. Access was revoked.",
                )
            )
        elif target == _A.REFUNDED:
            if order.status in PAID_ORDER_STATUSES:
                fx.order_to, fx.revoke = _O.REFUNDED, True
                fx.messages.append(notices.notice_refunded)
        else:
            if order.status == _O.PAID:
                fx.order_to = _O.PARTIALLY_REFUNDED
                fx.messages.append(notices.notice_refunded)
            fx.revoke = bool(settings.PARTIAL_REFUND_REVOKES_ACCESS) and order.status in PAID_ORDER_STATUSES
    return fx


def _refunds_listed(status: dict) -> list[dict]:
    refunds = status.get("refunds")
    return [r for r in refunds if isinstance(r, dict)] if isinstance(refunds, list) else []


def _refunds_confirm(*, attempt: PaymentAttempt, status: dict, actor: str, event_id: int, now) -> list[Refund]:
    """Mark our refunds of this attempt that Midtrans lists (by refund_key, or by the refund id
    it gave us) confirmed, and stamp the bank's confirmation. Returns the newly confirmed ones.

    The rows hang off the attempt, so locking them here keeps the lock order (order, attempt,
    refunds)."""
    listed = _refunds_listed(status)
    if not listed:
        return []
    by_key = {str(r.get("refund_key")): r for r in listed if r.get("refund_key")}
    by_id = {str(r.get("refund_chargeback_id")): r for r in listed if r.get("refund_chargeback_id") is not None}
    newly: list[Refund] = []
    rows = Refund.objects.select_for_update().filter(attempt=attempt).order_by("pk")
    for refund in rows.exclude(status=Refund.Status.CONFIRMED, bank_confirmed_at__isnull=False):
        entry = by_key.get(refund.refund_key) or (
            by_id.get(refund.midtrans_refund_id) if refund.midtrans_refund_id else None
        )
        if entry is None:
            continue
        fields = {"updated_at"}
        if refund.status != Refund.Status.CONFIRMED:
            old = refund.status
            refund.status, refund.confirmed_at, refund.failed_at = Refund.Status.CONFIRMED, now, None
            refund.midtrans_accepted_at = refund.midtrans_accepted_at or now
            refund.midtrans_refund_id = str(entry.get("refund_chargeback_id") or refund.midtrans_refund_id)[:32]
            refund.last_error = ""
            fields |= {
                "status",
                "confirmed_at",
                "failed_at",
                "midtrans_accepted_at",
                "midtrans_refund_id",
                "last_error",
            }
            audit_record(
                actor=actor,
                action="refund_confirmed",
                obj=refund,
                old_value={"status": old},
                new_value={
                    "status": Refund.Status.CONFIRMED,
                    "order_id": refund.order_id,
                    "amount": refund.amount,
                    "event_id": event_id,
                },
            )
            newly.append(refund)
        if entry.get("bank_confirmed_at") and refund.bank_confirmed_at is None:
            refund.bank_confirmed_at = now
            fields.add("bank_confirmed_at")
            audit_record(
                actor=actor,
                action="refund_bank_confirmed",
                obj=refund,
                new_value={"order_id": refund.order_id, "bank_confirmed_at": str(entry["bank_confirmed_at"])},
            )
        refund.save(update_fields=sorted(fields))
    return newly


def _attempt_fields_update(*, attempt: PaymentAttempt, status: dict) -> bool:
    """Copy Midtrans' facts about the transaction onto the attempt. True if the VA changed."""
    attempt.transaction_status = _text(status, "transaction_status")[:32] or attempt.transaction_status
    attempt.transaction_id = _transaction_id_of(status) or attempt.transaction_id
    for name, limit in (("payment_type", 32), ("fraud_status", 16)):
        value = status.get(name)
        if isinstance(value, str) and value:
            setattr(attempt, name, value[:limit])
    code = payment_code_of(status)[:64]
    if code and code != attempt.va_number:
        attempt.va_number = code
        return True
    return False


def _transaction_id_of(status: dict) -> str:
    value = status.get("transaction_id")
    return value.strip()[:64] if isinstance(value, str) else ""


def _event_locked(
    *, event_id: int | None, source: str, status: dict, midtrans_order_id: str
) -> tuple[PaymentEvent, bool]:
    """The event row to record this application in, locked. (event, already_processed)."""
    if event_id is None:
        event, created = _event_stored(payload=status, source=source, midtrans_order_id=midtrans_order_id)
        if created:
            # Inserted by this transaction: no other one can see it, let alone lock it, until we commit.
            return event, False
        event_id = event.pk
    event = PaymentEvent.objects.select_for_update().get(pk=event_id)
    return event, event.result in FINAL_EVENT_RESULTS


class AttemptRef(NamedTuple):
    pk: int
    order_id: str
    midtrans_order_id: str
    transaction_id: str


def _attempt_ref(midtrans_order_id: str) -> AttemptRef | None:
    """The attempt a body names: by our Midtrans order id, else by a transaction id it learned
    (BI-SNAP channels put the transaction id in `order_id`; see _status_names_attempt)."""
    columns = ("pk", "order_id", "midtrans_order_id", "transaction_id")
    attempts = list(PaymentAttempt.objects.filter(midtrans_order_id=midtrans_order_id).values_list(*columns))
    if not attempts and midtrans_order_id:
        attempts = list(PaymentAttempt.objects.filter(transaction_id=midtrans_order_id).values_list(*columns)[:2])
        if len(attempts) != 1:
            return None  # unknown, or (never seen) ambiguous: an orphan, not a guess
    return AttemptRef(*attempts[0]) if attempts else None


def status_names_attempt(*, status: dict, midtrans_order_id: str, transaction_ids: set[str]) -> bool:
    """Whether a status API body is about the attempt `midtrans_order_id`.

    It names it by our Midtrans order id or, on BI-SNAP channels (DANA; the Danamon, BSI,
    SeaBank and Saqu virtual accounts), by the transaction id in `order_id` (midtrans-php
    #113, #121): accepted only when that is one of `transaction_ids` (those the notification
    or the attempt names) and the body's own transaction_id agrees. Any other body is refused.
    """
    named = str(status.get("order_id", midtrans_order_id))
    if named == midtrans_order_id:
        return True
    return named in transaction_ids - {""} and str(status.get("transaction_id") or named) == named


def _transaction_ids_named(*, ref: AttemptRef, notification: dict) -> set[str]:
    named = {ref.transaction_id, str(notification.get("transaction_id") or ""), str(notification.get("order_id") or "")}
    return named - {ref.midtrans_order_id}


def payment_status_apply(
    *,
    midtrans_order_id: str,
    status: dict,
    source: str,
    actor: str,
    event_id: int | None = None,
    confirmed: bool = True,
    dry_run: bool = False,
    attempt_ref: AttemptRef | None = None,
) -> ApplyOutcome:
    """Apply a Midtrans status body to the attempt `midtrans_order_id`, once, in one transaction.

    `event_id`: the already recorded event this status answers (webhook, replay); without
    it an event is recorded here (reconcile, admin). `confirmed`: `status` came from the
    status API (stored as the event's confirmed payload). `dry_run`: decide, then roll back.
    `attempt_ref`: the attempt when the caller looked it up already (an attempt never
    changes order, so that read needs no lock).
    """
    # The audit rows are written together, with one INSERT, before the transaction commits.
    with transaction.atomic(), audit_batch():
        ref = attempt_ref or _attempt_ref(midtrans_order_id)
        if ref is None:
            return _orphan_record(
                midtrans_order_id=midtrans_order_id, status=status, source=source, event_id=event_id, dry_run=dry_run
            )
        attempt_pk, order_pk = ref.pk, ref.order_id
        # The project's lock order: the order row, then the attempt row. The package comes
        # along (a grant needs its course) but is not locked.
        order = order_lock(order_id=order_pk)
        # All of the order's attempts in one read: this one is changed, the others decide
        # (another live one keeps the order open, another paid one makes this a double payment).
        siblings = attempts_lock(order_id=order_pk)
        attempt = next(a for a in siblings if a.pk == attempt_pk)
        event, processed = _event_locked(
            event_id=event_id, source=source, status=status, midtrans_order_id=midtrans_order_id
        )
        outcome = ApplyOutcome(
            result=EventResult.DUPLICATE,
            midtrans_order_id=midtrans_order_id,
            event_id=event.pk,
            order_id=order.pk,
            attempt_from=attempt.status,
            attempt_to=attempt.status,
            order_from=order.status,
            order_to=order.status,
            dry_run=dry_run,
        )
        if processed:
            # Someone (a concurrent duplicate) applied this very event while we waited.
            return outcome

        others = [a.status for a in siblings if a.pk != attempt.pk]
        paid_elsewhere = None
        if status_signal(status) == Signal.SUCCESS and order.status not in Order.OPEN_STATUSES:
            paid_elsewhere = (
                Order.objects.filter(
                    customer_email=order.customer_email, package_id=order.package_id, status__in=PAID_ORDER_STATUSES
                )
                .exclude(pk=order.pk)
                .values_list("pk", flat=True)
                .first()
            )
        fx = _decide(order=order, attempt=attempt, status=status, others=others, paid_elsewhere=paid_elsewhere)
        now = timezone.now()
        reason = f"{source}: Midtrans {status.get('transaction_status', '?')}"

        order_fields: set[str] = set()
        attempt_fields: set[str] = set()
        va_changed = False
        if fx.result in (EventResult.APPLIED, EventResult.DUPLICATE):
            va_changed = _attempt_fields_update(attempt=attempt, status=status)
            attempt_fields |= {"transaction_status", "transaction_id", "payment_type", "fraud_status", "va_number"}
        elif not attempt.transaction_id and _transaction_id_of(status):
            # Remembered from the first body that names it, whatever it did: orphans named by
            # it (BI-SNAP) are matched through it.
            attempt.transaction_id = _transaction_id_of(status)
            attempt_fields.add("transaction_id")
        if fx.attempt_to and fx.attempt_to != attempt.status:
            attempt_status_set(attempt=attempt, new=fx.attempt_to, actor=actor, reason=reason, event_id=event.pk)
            attempt_fields.add("status")
        if fx.attempt_refunded is not None and fx.attempt_refunded != attempt.refunded_amount:
            audit_record(
                actor=actor,
                action="attempt_refund_recorded",
                obj=attempt,
                old_value={"refunded_amount": attempt.refunded_amount},
                new_value={"refunded_amount": fx.attempt_refunded, "event_id": event.pk, "order_id": order.pk},
            )
            attempt.refunded_amount = fx.attempt_refunded
            attempt_fields.add("refunded_amount")
        if fx.order_refunded is not None and fx.order_refunded != order.refunded_amount:
            order.refunded_amount = fx.order_refunded
            order_fields.add("refunded_amount")
        if fx.order_to and fx.order_to != order.status:
            order_status_set(order=order, new=fx.order_to, actor=actor, reason=reason, event_id=event.pk)
            order_fields.add("status")
            if fx.order_to == _O.PAID:
                order.paid_at = now
                order_fields.add("paid_at")
        if fx.paid_at_clear and order.paid_at is not None:
            order.paid_at = None
            order_fields.add("paid_at")
        if fx.review:
            order.needs_review = True
            order.review_reason = (f"{order.review_reason}\n" if order.review_reason else "") + fx.review
            order_fields |= {"needs_review", "review_reason"}
            audit_record(
                actor=actor,
                action="order_flagged",
                obj=order,
                new_value={"reason": fx.review, "event_id": event.pk},
            )
        if attempt_fields:
            attempt.save(update_fields=sorted(attempt_fields | {"updated_at"}))
        if order_fields:
            order.save(update_fields=sorted(order_fields | {"updated_at"}))

        course_code = order.package.course_code if (fx.grant or fx.revoke) else ""
        if fx.grant:
            entitlement = entitlement_grant(
                email=order.customer_email,
                course_code=course_code,
                order_id=order.pk,
                reason=f"paid via {attempt.midtrans_order_id}",
            )
            audit_record(
                actor=actor,
                action="entitlement_granted",
                obj=entitlement,
                new_value={"order_id": order.pk, "course": course_code, "event_id": event.pk},
            )
        if fx.revoke:
            entitlement = entitlement_revoke(order_id=order.pk, reason=f"{reason} on {attempt.midtrans_order_id}")
            if entitlement is not None:
                audit_record(
                    actor=actor,
                    action="entitlement_revoked",
                    obj=entitlement,
                    new_value={"order_id": order.pk, "reason": reason, "event_id": event.pk},
                )

        # Our own refunds that this status lists are confirmed here; each tells the customer
        # once, in place of the generic refund notice (which stays for dashboard refunds).
        confirmed_refunds = []
        if fx.result in (EventResult.APPLIED, EventResult.DUPLICATE):
            confirmed_refunds = _refunds_confirm(
                attempt=attempt, status=status, actor=actor, event_id=event.pk, now=now
            )
        for message in fx.messages:
            if message is notices.notice_refunded and confirmed_refunds:
                continue
            message(order=order)
        for refund in confirmed_refunds:
            notices.notice_refunded(order=order, refund=refund)
        if va_changed and attempt.status == _A.PENDING and order.status in Order.OPEN_STATUSES:
            notices.notice_payment_instructions(order=order, attempt=attempt)
        for subject, body in fx.alerts:
            notices.notice_alert(order_id=order.pk, subject=subject, body=body)

        event.attempt = attempt
        event.result = fx.result
        event.error = fx.note
        if confirmed:
            event.confirmed_payload = status
        event.processed_at = now
        event.processing_attempts += 1
        event.save(
            update_fields=["attempt", "result", "error", "confirmed_payload", "processed_at", "processing_attempts"]
        )

        outcome.result = fx.result
        outcome.attempt_to = attempt.status
        outcome.order_to = order.status
        outcome.alerts = [subject for subject, _ in fx.alerts]
        log = logger.warning if fx.alerts else logger.info
        log(
            "payment_status_applied",
            extra={
                "order_id": order.pk,
                "midtrans_order_id": midtrans_order_id,
                "event_id": event.pk,
                "source": source,
                "actor": actor,
                "transaction_status": status.get("transaction_status"),
                "result": fx.result,
                "attempt_from": outcome.attempt_from,
                "attempt_to": outcome.attempt_to,
                "order_from": outcome.order_from,
                "order_to": outcome.order_to,
                "alerts": "; ".join(outcome.alerts),
                "dry_run": dry_run,
            },
        )
        if dry_run:
            transaction.set_rollback(True)
        return outcome


def _orphan_record(
    *, midtrans_order_id: str, status: dict, source: str, event_id: int | None, dry_run: bool
) -> ApplyOutcome:
    """A validly signed status for a Midtrans id we do not know: keep it, match it later."""
    event, processed = _event_locked(
        event_id=event_id, source=source, status=status, midtrans_order_id=midtrans_order_id
    )
    if not processed and event.result != EventResult.ORPHAN:
        event.result = EventResult.ORPHAN
        event.processing_attempts += 1
        event.error = "no payment attempt with this Midtrans order id (yet)"
        event.save(update_fields=["result", "processing_attempts", "error"])
        logger.warning(
            "payment_event_orphan",
            extra={"midtrans_order_id": midtrans_order_id, "event_id": event.pk, "source": source},
        )
    if dry_run:
        transaction.set_rollback(True)
    return ApplyOutcome(
        result=EventResult.ORPHAN, midtrans_order_id=midtrans_order_id, event_id=event.pk, dry_run=dry_run
    )


def order_expire(*, order_id: str, actor: str, dry_run: bool = False) -> ApplyOutcome | None:
    """Expire an open order whose payment window passed and that has no live attempt left.

    Time passing is not a Midtrans status, so this is the one order change outside
    payment_status_apply. The caller first settled every live attempt with Midtrans (read,
    expired or cancelled there), so a late payment cannot start; a live attempt found here
    means that did not happen and the order is left alone. None when nothing changed.
    """
    with transaction.atomic():
        order = order_lock(order_id=order_id)
        if order.status not in Order.OPEN_STATUSES or order.expires_at > timezone.now():
            return None
        if order.attempts.filter(status__in=PaymentAttempt.LIVE_STATUSES).exists():
            return None
        old = order.status
        order_status_set(order=order, new=_O.EXPIRED, actor=actor, reason="payment window passed")
        order.save(update_fields=["status", "updated_at"])
        notices.notice_expired(order=order)
        logger.info(
            "order_expired", extra={"order_id": order.pk, "order_from": old, "actor": actor, "dry_run": dry_run}
        )
        if dry_run:
            transaction.set_rollback(True)
        return ApplyOutcome(
            result=EventResult.APPLIED,
            midtrans_order_id="",
            order_id=order.pk,
            order_from=old,
            order_to=_O.EXPIRED,
            dry_run=dry_run,
        )


# --- Processing a recorded event (webhook, replay, sweep) ---------------------------------------


class EventDeferred(Exception):
    """Midtrans is unavailable (timeout, 5xx, breaker open): the event could not be processed
    now and stays recorded. Only this stops a reconciliation sweep."""


class EventProcessingFailed(Exception):
    """Processing raised; the transaction was rolled back and the failure recorded."""


def status_confirm(*, midtrans_order_id: str) -> dict:
    """The status API's word on a transaction, answered within the webhook's patience.

    The client retries a status read; the per-try timeout is chosen so that all tries
    together stay inside WEBHOOK_STATUS_BUDGET seconds (Midtrans waits ~15 s, we aim < 5 s).
    """
    tries = 1 + max(0, int(settings.MIDTRANS_STATUS_RETRIES))
    timeout = min(float(settings.MIDTRANS_STATUS_TIMEOUT), float(settings.WEBHOOK_STATUS_BUDGET) / tries)
    return midtrans.transaction_status(midtrans_order_id=midtrans_order_id, timeout=timeout)


def event_process(
    *, event_id: int, actor: str, force: bool = False, dry_run: bool = False, event: PaymentEvent | None = None
) -> ApplyOutcome:
    """Apply a recorded event: confirm with the status API (when configured), then apply.

    Raises EventDeferred when Midtrans is unavailable and EventProcessingFailed when applying
    raised (the event then says FAILED, with the traceback). Any other Midtrans error (a 404,
    a 400, a 401 from the status API) concerns this event only: it is deferred (kept
    unprocessed, with the reason, for the sweep) and "unconfirmed" is returned, so the caller
    goes on. `force` re-applies an event that was processed already (replay); `dry_run`
    decides and rolls back.
    """
    event = event if event is not None and event.pk == event_id else PaymentEvent.objects.get(pk=event_id)
    midtrans_order_id = event.midtrans_order_id
    if event.result in FINAL_EVENT_RESULTS and not force:
        return ApplyOutcome(result=EventResult.DUPLICATE, midtrans_order_id=midtrans_order_id, event_id=event.pk)
    ref = _attempt_ref(midtrans_order_id)
    known = ref is not None
    if not known and event.result == EventResult.ORPHAN:
        return ApplyOutcome(result=EventResult.ORPHAN, midtrans_order_id=midtrans_order_id, event_id=event.pk)

    confirm = bool(settings.MIDTRANS_CONFIRM_WITH_STATUS_API) and known
    status = event.payload
    if confirm:
        assert ref is not None  # known
        try:
            # Asked by our own order id: a notification may name the attempt by its transaction id.
            status = status_confirm(midtrans_order_id=ref.midtrans_order_id)
        except midtrans.MidtransError as exc:
            unavailable = isinstance(exc, midtrans.MidtransUnavailable)
            if not dry_run:
                event_defer(event_id=event.pk, reason=f"status API: {type(exc).__name__}: {exc}")
            logger.warning(
                "payment_event_deferred" if unavailable else "payment_event_unconfirmed",
                extra={
                    "order_id": ref.order_id,
                    "midtrans_order_id": midtrans_order_id,
                    "event_id": event.pk,
                    "reason": type(exc).__name__,
                    "http_status": exc.http_status,
                },
            )
            if unavailable:
                raise EventDeferred(str(exc)) from exc
            return ApplyOutcome(result="unconfirmed", midtrans_order_id=midtrans_order_id, event_id=event.pk)
        if status_signal(status) == Signal.NONE:
            # A signed notification, but the status API does not know the transaction (yet):
            # keep the event unprocessed; the sweep asks again.
            if not dry_run:
                event_defer(event_id=event.pk, reason=f"status API says: {status.get('status_message', status)}")
            return ApplyOutcome(result="unconfirmed", midtrans_order_id=midtrans_order_id, event_id=event.pk)
        if not status_names_attempt(
            status=status,
            midtrans_order_id=ref.midtrans_order_id,
            transaction_ids=_transaction_ids_named(ref=ref, notification=event.payload),
        ):
            # Not an outage: only this event waits (deferred, for the sweep).
            if not dry_run:
                event_defer(event_id=event.pk, reason=f"status API answered for {status.get('order_id')!r}")
            logger.warning(
                "payment_event_unconfirmed",
                extra={"order_id": ref.order_id, "midtrans_order_id": midtrans_order_id, "event_id": event.pk},
            )
            return ApplyOutcome(result="unconfirmed", midtrans_order_id=midtrans_order_id, event_id=event.pk)

    if not confirm and ref is not None:
        why = status_code_mismatch(status)
        if why:
            return _status_mismatch_record(event_id=event.pk, attempt_ref=ref, reason=why, dry_run=dry_run)

    replay_as_new = force and event.result in FINAL_EVENT_RESULTS
    try:
        return payment_status_apply(
            midtrans_order_id=ref.midtrans_order_id if ref is not None else midtrans_order_id,
            status=status,
            source=event.source,
            actor=actor,
            # A forced replay of a processed event is recorded as a fresh event of the same
            # source, so the original row keeps its history.
            event_id=None if replay_as_new else event.pk,
            confirmed=confirm,
            dry_run=dry_run,
            attempt_ref=ref,
        )
    except Exception as exc:
        if not dry_run and not replay_as_new:
            event_failure_record(event_id=event.pk, error=traceback.format_exc())
        logger.exception(
            "payment_event_failed",
            extra={"midtrans_order_id": midtrans_order_id, "event_id": event.pk, "error": type(exc).__name__},
        )
        raise EventProcessingFailed(str(exc)) from exc


def _status_mismatch_record(*, event_id: int, attempt_ref: AttemptRef, reason: str, dry_run: bool) -> ApplyOutcome:
    """An unconfirmed body whose status_code and transaction_status disagree: kept as
    evidence (result mismatch, final), never applied, operators alerted once.

    Answered 200 like an amount mismatch, not 400: a retry of the same body cannot be
    better, a 400 would only make Midtrans send it twice more, and the attempt's real state
    comes from the status API in the sweep."""
    attempt_pk, order_id = attempt_ref.pk, attempt_ref.order_id
    with transaction.atomic():
        event = PaymentEvent.objects.select_for_update().get(pk=event_id)
        if event.result not in FINAL_EVENT_RESULTS:
            event.attempt_id = attempt_pk
            event.result = EventResult.MISMATCH
            event.error = reason
            event.processed_at = timezone.now()
            event.processing_attempts += 1
            event.save(update_fields=["attempt", "result", "error", "processed_at", "processing_attempts"])
            notices.notice_alert(
                order_id=order_id,
                subject=f"Inconsistent Midtrans notification on order {order_id}",
                body=f"A validly signed notification for {event.midtrans_order_id} was NOT applied: {reason}. "
                "It may have been edited; the reconciliation sweep reads the real status from Midtrans.",
            )
        logger.warning(
            "payment_event_status_mismatch",
            extra={
                "order_id": order_id,
                "midtrans_order_id": event.midtrans_order_id,
                "event_id": event.pk,
                "reason": reason,
                "dry_run": dry_run,
            },
        )
        if dry_run:
            transaction.set_rollback(True)
    return ApplyOutcome(
        result=EventResult.MISMATCH,
        midtrans_order_id=event.midtrans_order_id,
        event_id=event.pk,
        order_id=order_id,
        dry_run=dry_run,
    )


def notification_receive(*, payload: dict) -> ApplyOutcome:
    """A verified Midtrans HTTP notification: record it, confirm it, apply it.

    Recorded once per meaning (dedup_key_of). Storage per Midtrans order id stays bounded:
    past WEBHOOK_EVENTS_PER_ORDER_ID_MAX recorded notifications (only someone editing the
    unsigned fields gets there), one of a new meaning is not kept; the status API is asked
    instead and its answer applied, recorded once per meaning like any status read.
    """
    midtrans_order_id = str(payload.get("order_id", ""))
    event, stored = _event_stored(payload=payload, source=EventSource.WEBHOOK, midtrans_order_id=midtrans_order_id)
    if (
        stored
        and PaymentEvent.objects.filter(midtrans_order_id=event.midtrans_order_id, source=EventSource.WEBHOOK).count()
        > settings.WEBHOOK_EVENTS_PER_ORDER_ID_MAX
    ):
        PaymentEvent.objects.filter(pk=event.pk).delete()
        logger.warning("webhook_events_capped", extra={"midtrans_order_id": midtrans_order_id})
        return _notification_confirm_unrecorded(midtrans_order_id=midtrans_order_id, payload=payload)
    return event_process(event_id=event.pk, actor="webhook", event=event)


def _notification_confirm_unrecorded(*, midtrans_order_id: str, payload: dict) -> ApplyOutcome:
    """The status API's word applied for a notification that is not kept (see notification_receive)."""
    ref = _attempt_ref(midtrans_order_id)
    if ref is None:
        return ApplyOutcome(result=EventResult.ORPHAN, midtrans_order_id=midtrans_order_id)
    unconfirmed = ApplyOutcome(result="unconfirmed", midtrans_order_id=midtrans_order_id, order_id=ref.order_id)
    try:
        status = status_confirm(midtrans_order_id=ref.midtrans_order_id)
    except midtrans.MidtransUnavailable as exc:
        raise EventDeferred(str(exc)) from exc
    except midtrans.MidtransError:
        return unconfirmed
    named = _transaction_ids_named(ref=ref, notification=payload)
    if status_signal(status) == Signal.NONE or not status_names_attempt(
        status=status, midtrans_order_id=ref.midtrans_order_id, transaction_ids=named
    ):
        return unconfirmed
    return payment_status_apply(
        midtrans_order_id=ref.midtrans_order_id,
        status=status,
        source=EventSource.WEBHOOK,
        actor="webhook",
        attempt_ref=ref,
    )
