"""The simulator's notification queue: what a state change writes for Midtrans to send.

Services and the trigger command queue here, in the transaction that changed the state; the
sender thread (payments.simulator.dispatcher) delivers. Kept apart so that the services and
the sender each import it, and not each other.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from django.db import transaction as db_transaction
from django.utils import timezone

from payments.simulator.models import SimNotification, SimTransaction

# Set after a commit that queued something, so the sender thread wakes at once.
sender_wake = threading.Event()


def notification_destinations(transaction: SimTransaction) -> list[str]:
    """Where this transaction's notifications go ("" = MIDTRANS_NOTIFICATION_URL, read at send time):
    its X-Override-Notification URLs instead, or its X-Append-Notification URLs besides."""
    if transaction.notification_override_urls:
        return list(transaction.notification_override_urls)
    return ["", *transaction.notification_append_urls]


def notification_queue(*, transaction: SimTransaction, payloads: list[dict], delay_seconds: float = 0.0) -> list[int]:
    """Queue notifications in this order (call inside the transaction that changed the state).

    One row per payload and destination; each destination gets every payload, in order, and
    its own retries, as Midtrans delivers to each URL on its own.
    """
    due = timezone.now() + timedelta(seconds=delay_seconds)
    ids = []
    destinations = notification_destinations(transaction)
    for offset, payload in enumerate(payloads):
        for target_url in destinations:
            # Microsecond steps keep the delivery order equal to the given order.
            row = SimNotification.objects.create(
                transaction=transaction,
                payload=payload,
                target_url=target_url,
                due_at=due + timedelta(microseconds=offset),
            )
            ids.append(row.id)
    db_transaction.on_commit(sender_wake.set)
    return ids
