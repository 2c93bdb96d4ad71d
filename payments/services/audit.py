"""The audit trail: who changed what, from what to what, in which request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.db import models, transaction

from common.logging import current_request_id
from payments.models import AuditEntry

# The entries of the innermost open audit_batch() (None outside one).
_batch: ContextVar[list[AuditEntry] | None] = ContextVar("audit_batch", default=None)


def audit_record(
    *,
    actor: str,
    action: str,
    obj: models.Model,
    old_value=None,
    new_value=None,
    correlation_id: str | None = None,
) -> AuditEntry:
    """Record one change. Inside audit_batch() the row is written when the batch ends
    (without reading its pk back); otherwise at once."""
    entry = AuditEntry(
        actor=actor,
        action=action,
        object_type=str(obj._meta.model_name),
        object_id=str(obj.pk),
        old_value=old_value,
        new_value=new_value,
        correlation_id=correlation_id or current_request_id(),
    )
    pending = _batch.get()
    if pending is not None:
        pending.append(entry)
    else:
        entry.save(force_insert=True)
    return entry


@contextmanager
def audit_batch() -> Iterator[None]:
    """Write the audit_record() calls made inside the block with one INSERT when it ends.

    Use it inside the transaction whose changes the entries describe: they then commit or
    roll back with those changes, exactly as single inserts would. When the block raises,
    nothing is written (the caller's transaction is rolling back anyway), and neither when
    the block ends in a transaction marked for rollback (a dry run). Nested batches join the
    outermost one.
    """
    if _batch.get() is not None:
        yield
        return
    entries: list[AuditEntry] = []
    token = _batch.set(entries)
    try:
        yield
    finally:
        _batch.reset(token)
    if entries and not transaction.get_connection(AuditEntry.objects.db).needs_rollback:
        AuditEntry.objects.bulk_create(entries)
