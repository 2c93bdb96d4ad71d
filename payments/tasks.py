"""Celery tasks of the payments app: thin wrappers that call one service. Safe to run twice."""

from celery import shared_task

from common.metrics import reconcile_changes_total, reconcile_runs_total
from payments.services.idempotency import idempotency_purge
from payments.services.reconcile import reconcile_sweep


@shared_task(name="payments.idempotency_purge", ignore_result=True)
def idempotency_purge_task() -> int:
    """Delete Idempotency-Key records older than IDEMPOTENCY_RETENTION_HOURS (at least 24 h)."""
    return idempotency_purge()


@shared_task(name="payments.reconcile", ignore_result=True)
def payments_reconcile() -> dict:
    """The reconciliation sweep (beat, every RECONCILE_INTERVAL_SECONDS)."""
    report = reconcile_sweep(actor="reconcile")
    if report is None:
        reconcile_runs_total.labels(outcome="skipped").inc()
        return {"skipped": "another sweep is running"}
    reconcile_runs_total.labels(outcome="errors" if report.errors else "ok").inc()
    reconcile_changes_total.inc(len(report.changes))
    return {"checked": report.checked, "changed": len(report.changes), "errors": len(report.errors)}


@shared_task(name="payments.sales_summary", ignore_result=True)
def payments_sales_summary() -> dict:
    """Yesterday's sales summary to SALES_SUMMARY_EMAILS (beat, daily at SALES_SUMMARY_HOUR WIB)."""
    from payments.services.reports import sales_summary_send

    summary = sales_summary_send()
    if summary is None:
        return {"skipped": "SALES_SUMMARY_EMAILS is empty"}
    return {"day": summary.day.isoformat(), "orders_paid": summary.orders_paid, "revenue": summary.revenue}


@shared_task(name="payments.refunds_sweep", ignore_result=True)
def payments_refunds_sweep() -> dict:
    """Confirm (status read) or resend (same refund_key) Midtrans refunds still requested."""
    from payments.services.refunds import refunds_sweep

    report = refunds_sweep()
    return {"checked": report.checked, "confirmed": len(report.confirmed), "retried": len(report.retried)}
