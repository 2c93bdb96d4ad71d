"""Reports for the shop's owners: the daily sales summary.

Figures come straight from the orders and refunds of one day in Asia/Jakarta (the shop's
day): orders paid that day and their revenue, refunds confirmed that day, and the review
cases open when the summary is made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from payments import notices
from payments.models import Order, Refund

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SalesSummary:
    day: date
    orders_paid: int
    revenue: int  # integer rupiah: the amounts of the orders paid that day
    refunds: int  # how many refunds were confirmed that day
    refunded: int  # and their total
    open_reviews: int

    @property
    def net(self) -> int:
        return self.revenue - self.refunded


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    zone = timezone.get_default_timezone()  # Asia/Jakarta
    start = datetime.combine(day, time.min, tzinfo=zone)
    return start, start + timedelta(days=1)


def sales_summary_compute(*, day: date) -> SalesSummary:
    start, end = _day_bounds(day)
    paid = Order.objects.filter(paid_at__gte=start, paid_at__lt=end).aggregate(n=Count("pk"), total=Sum("amount"))
    refunds = Refund.objects.filter(
        status=Refund.Status.CONFIRMED, confirmed_at__gte=start, confirmed_at__lt=end
    ).aggregate(n=Count("pk"), total=Sum("amount"))
    return SalesSummary(
        day=day,
        orders_paid=paid["n"],
        revenue=paid["total"] or 0,
        refunds=refunds["n"],
        refunded=refunds["total"] or 0,
        open_reviews=Order.objects.filter(needs_review=True).count(),
    )


def sales_summary_send(*, day: date | None = None) -> SalesSummary | None:
    """Email the summary of `day` (default: yesterday in Jakarta) to SALES_SUMMARY_EMAILS, once
    per day and address (a repeated run enqueues nothing new). None when nobody is configured."""
    if not settings.SALES_SUMMARY_EMAILS:
        logger.info("sales_summary_skipped", extra={"reason": "SALES_SUMMARY_EMAILS is empty"})
        return None
    day = day or (timezone.localdate() - timedelta(days=1))
    summary = sales_summary_compute(day=day)
    with transaction.atomic():
        notices.notice_sales_summary(summary=summary, recipients=settings.SALES_SUMMARY_EMAILS)
    logger.info(
        "sales_summary_sent",
        extra={"day": day.isoformat(), "orders_paid": summary.orders_paid, "revenue": summary.revenue},
    )
    return summary
