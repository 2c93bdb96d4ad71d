"""`stripe trigger` for Midtrans: apply an event to a simulated transaction and queue its notifications.

The event changes the simulator's state first (so GET status agrees with what is sent),
then the signed notification(s) are queued: duplicated, reordered or with a tampered
amount on request. Used by `manage.py midtrans_sim` and the test helper.
"""

from __future__ import annotations

import copy
import hashlib

from django.db import transaction

from payments.simulator import services
from payments.simulator.models import SimNotification, SimTransaction
from payments.simulator.outbox import notification_queue

EVENTS = (
    "settlement",
    "pending",
    "deny",
    "cancel",
    "expire",
    "refund",
    "partial_refund",
    "chargeback",
    "challenge",
    "reversal",
)
# Events that start from a pending transaction: on one with no method yet, a method is chosen first.
_FROM_PENDING = {"settlement", "pending", "deny", "cancel", "expire", "challenge"}


def _stale_pending_body(tx: SimTransaction) -> dict:
    """A pending notification for a transaction that has moved on (what a late delivery looks like)."""
    stale = copy.copy(tx)
    stale.transaction_status, stale.fraud_status = "pending", "accept"
    stale.settlement_time, stale.refunds, stale.refund_amount = None, [], 0
    return services.transaction_body(stale, for_notification=True)


def _resign(body: dict) -> None:
    body["signature_key"] = services.signature_for(
        order_id=body["order_id"], status_code=body["status_code"], gross_amount=body["gross_amount"]
    )


def trigger_event(
    *,
    order_id: str,
    event: str,
    duplicate: int = 1,
    out_of_order: bool = False,
    amount: int | None = None,
    refund_amount: int | None = None,
    bad_signature: bool = False,
    method: str = "bca_va",
) -> list[SimNotification]:
    """Apply `event` to the simulated transaction `order_id` (a Midtrans order id); return the queued rows.

    duplicate: how many copies of the event's notification to send (1 = no duplicate).
    out_of_order: send the event's notification before the one that should precede it
        (the pending one when a method is chosen now, else a late copy of the previous state).
    amount: put this gross_amount (rupiah) in the event's notification, validly signed: a tampered amount.
    refund_amount: rupiah refunded by `partial_refund` (default half the remaining amount).
    bad_signature: sign the event's notification with a wrong key.
    method: the method chosen when the transaction has none yet ("credit_card" for `challenge`).
    """
    if event not in EVENTS:
        raise services.SimStateError(f"unknown event {event!r}; use one of: {', '.join(EVENTS)}")
    if duplicate < 1:
        raise services.SimStateError("duplicate must be at least 1")
    if amount is not None and amount <= 0:
        raise services.SimStateError("amount must be a positive number of rupiah")
    with transaction.atomic():
        tx = SimTransaction.objects.select_for_update().filter(order_id=order_id).first()
        if tx is None:
            raise services.SimStateError(f"no simulated transaction with Midtrans order id {order_id!r}")
        before: list[dict] = []
        if not tx.method_chosen:
            if event not in _FROM_PENDING:
                raise services.SimStateError(
                    f"{order_id}: no payment method chosen yet; '{event}' needs a settled transaction"
                )
            services.method_apply(tx, method="credit_card" if event == "challenge" else method)
            before.append(services.transaction_body(tx, for_notification=True))
        previous = services.transaction_body(tx, for_notification=True)

        if event == "pending":
            # Re-send pending; after the transaction moved on this is a stale notification.
            final = before.pop() if before else _stale_pending_body(tx)
        else:
            if event == "partial_refund":
                remaining = tx.gross_amount - tx.refund_amount
                refund = refund_amount if refund_amount is not None else max(1, remaining // 2)
            else:
                refund = refund_amount
            refund_key = f"sim-trigger-{len(tx.refunds) + 1}" if event in {"refund", "partial_refund"} else ""
            services.transition_apply(tx, event=event, refund_amount=refund, refund_key=refund_key)
            final = services.transaction_body(tx, for_notification=True)

        if amount is not None:
            final["gross_amount"] = services.amount_format(amount)
            _resign(final)
        if bad_signature:
            raw = final["order_id"] + final["status_code"] + final["gross_amount"] + "SB-Mid-server-WRONG"
            final["signature_key"] = hashlib.sha512(raw.encode()).hexdigest()

        copies = [copy.deepcopy(final) for _ in range(duplicate)]
        if out_of_order:
            late = before or ([previous] if event != "pending" else [])
            sequence = copies + late
        else:
            sequence = before + copies
        ids = notification_queue(transaction=tx, payloads=sequence)
    return list(SimNotification.objects.filter(id__in=ids).order_by("due_at", "id"))
