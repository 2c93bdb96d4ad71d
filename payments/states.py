"""The payment vocabulary in one place: status groups, the transition tables, and the one way
to lock an order and its attempts.

Lock order, everywhere: the order row, then its attempts, then their refunds. Every service
that changes a payment takes the order with `order_lock` first.
"""

from __future__ import annotations

from payments.models import AttemptStatus, Order, OrderStatus, PaymentAttempt

_O = OrderStatus
_A = AttemptStatus

# --- Order status groups -----------------------------------------------------------------------

# Not decided yet (a Snap token may be on its way, or the customer may still pay):
# Order.OPEN_STATUSES, on the model, since its constraints use it.
# Paid and not (fully) given back: the customer has access and holds a seat.
PAID_ORDER_STATUSES = frozenset({_O.PAID, _O.PARTIALLY_REFUNDED})
# Money arrived at some point: checkout must not sell the order again.
EVER_PAID_ORDER_STATUSES = frozenset({_O.PAID, _O.PARTIALLY_REFUNDED, _O.REFUNDED, _O.CHARGEBACK})
# Closed without money: paying again means a new attempt on a new order.
CLOSED_ORDER_STATUSES = frozenset({_O.EXPIRED, _O.FAILED, _O.CANCELLED})

# --- Attempt status groups ---------------------------------------------------------------------

# Midtrans may still take money for it: PaymentAttempt.LIVE_STATUSES, on the model.
# A Snap page exists that the customer can pay on.
PAYABLE_ATTEMPT_STATUSES = frozenset({_A.OPEN, _A.PENDING, _A.CHALLENGE})
# Midtrans holds money for us (a refund may still be partial).
MONEY_HOLDING_ATTEMPT_STATUSES = frozenset({_A.PAID, _A.PARTIALLY_REFUNDED})
# We gave up on it; Midtrans may still report it pending (see services.reconcile).
CLOSED_ATTEMPT_STATUSES = frozenset({_A.EXPIRED, _A.FAILED})

# --- Transition tables -------------------------------------------------------------------------

# Order: CREATED -> PENDING_PAYMENT -> PAID -> {PARTIALLY_REFUNDED -> REFUNDED, CHARGEBACK};
# CREATED|PENDING_PAYMENT -> {EXPIRED, FAILED, CANCELLED}. Money that arrives late moves an
# EXPIRED/FAILED/CANCELLED order to PAID (access is granted, an operator is alerted). A bank
# reversal (deny after settlement) takes a PAID order to FAILED: it is not paid after all.
ORDER_TRANSITIONS: dict[str, frozenset[str]] = {
    _O.CREATED: frozenset({_O.PENDING_PAYMENT, _O.PAID, _O.EXPIRED, _O.FAILED, _O.CANCELLED}),
    _O.PENDING_PAYMENT: frozenset({_O.PAID, _O.EXPIRED, _O.FAILED, _O.CANCELLED}),
    _O.PAID: frozenset({_O.PARTIALLY_REFUNDED, _O.REFUNDED, _O.CHARGEBACK, _O.FAILED}),
    _O.PARTIALLY_REFUNDED: frozenset({_O.REFUNDED, _O.CHARGEBACK}),
    _O.REFUNDED: frozenset(),
    _O.CHARGEBACK: frozenset(),
    _O.EXPIRED: frozenset({_O.PAID}),
    _O.FAILED: frozenset({_O.PAID}),
    _O.CANCELLED: frozenset({_O.PAID}),
}

# Attempt: initiated -> open -> pending -> challenge | paid | failed | expired;
# paid -> reversed | partially_refunded | refunded | chargeback. A failed or expired
# attempt may still turn out paid (Midtrans is the truth about money); nothing else
# moves backwards.
ATTEMPT_TRANSITIONS: dict[str, frozenset[str]] = {
    _A.INITIATED: frozenset({_A.OPEN, _A.PENDING, _A.CHALLENGE, _A.PAID, _A.FAILED, _A.EXPIRED}),
    _A.OPEN: frozenset({_A.PENDING, _A.CHALLENGE, _A.PAID, _A.FAILED, _A.EXPIRED}),
    _A.PENDING: frozenset({_A.CHALLENGE, _A.PAID, _A.FAILED, _A.EXPIRED}),
    _A.CHALLENGE: frozenset({_A.PAID, _A.FAILED, _A.EXPIRED}),
    _A.FAILED: frozenset({_A.PAID}),
    _A.EXPIRED: frozenset({_A.PAID}),
    _A.PAID: frozenset({_A.REVERSED, _A.PARTIALLY_REFUNDED, _A.REFUNDED, _A.CHARGEBACK}),
    _A.PARTIALLY_REFUNDED: frozenset({_A.REFUNDED, _A.CHARGEBACK}),
    _A.REVERSED: frozenset(),
    _A.REFUNDED: frozenset(),
    _A.CHARGEBACK: frozenset(),
}


class TransitionNotAllowed(Exception):
    pass


def order_transition_allowed(*, old: str, new: str) -> bool:
    return new in ORDER_TRANSITIONS.get(old, frozenset())


def attempt_transition_allowed(*, old: str, new: str) -> bool:
    return new in ATTEMPT_TRANSITIONS.get(old, frozenset())


# --- Locks -------------------------------------------------------------------------------------


def order_lock(*, order_id: str) -> Order:
    """The order, locked for this transaction (its package read along, not locked); raises
    Order.DoesNotExist. Call inside transaction.atomic(), before locking anything else."""
    return Order.objects.select_related("package").select_for_update(of=("self",)).get(pk=order_id)


def attempts_lock(*, order_id: str) -> list[PaymentAttempt]:
    """All attempts of an order, locked, in number order. Call after order_lock."""
    return list(PaymentAttempt.objects.filter(order_id=order_id).order_by("number").select_for_update())
