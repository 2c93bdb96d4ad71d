"""Celery tasks of the payments app: thin wrappers that call one service. Safe to run twice."""

from celery import shared_task

from payments.services.idempotency import idempotency_purge


@shared_task(name="payments.idempotency_purge", ignore_result=True)
def idempotency_purge_task() -> int:
    """Delete Idempotency-Key records older than IDEMPOTENCY_RETENTION_HOURS (at least 24 h)."""
    return idempotency_purge()
