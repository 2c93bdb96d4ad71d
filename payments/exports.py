"""The order list as CSV, streamed: rows are read from the database in chunks (a server-side
cursor on PostgreSQL) and written out as they come, so a million orders never sit in memory."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator

from django.db.models import CharField, OuterRef, QuerySet, Subquery, Value
from django.http import StreamingHttpResponse
from django.utils import timezone

from payments.models import Order, PaymentAttempt

logger = logging.getLogger(__name__)

CSV_HEADER = [
    "order_id",
    "legacy_id",
    "created_at",
    "paid_at",
    "status",
    "package",
    "list_price",
    "discount",
    "amount",
    "refunded",
    "payment_type",
    "email",
    "phone",
]
CHUNK_SIZE = 2000

# The legacy_id column. MERGE (issue 15 adds Order.legacy_id): make this F("legacy_id").
_LEGACY_ID = Value("", output_field=CharField())

# Attempts that took the customer's money at some point (their payment type is the order's).
_PAYING_ATTEMPT_STATUSES = ["paid", "partially_refunded", "refunded", "chargeback", "reversed"]


class _Echo:
    """csv.writer writes into this and gets the line back (Django's streaming CSV recipe)."""

    def write(self, value: str) -> str:
        return value


def _local(moment) -> str:
    return timezone.localtime(moment).isoformat(timespec="seconds") if moment else ""


def orders_csv_rows(*, queryset: QuerySet[Order]) -> Iterator[list]:
    """The CSV rows (header first) of `queryset`, read CHUNK_SIZE at a time."""
    paying = PaymentAttempt.objects.filter(order=OuterRef("pk"), status__in=_PAYING_ATTEMPT_STATUSES).order_by("number")
    latest = PaymentAttempt.objects.filter(order=OuterRef("pk")).exclude(payment_type="").order_by("-number")
    rows = queryset.annotate(
        legacy=_LEGACY_ID,
        paid_type=Subquery(paying.values("payment_type")[:1]),
        last_type=Subquery(latest.values("payment_type")[:1]),
    ).values_list(
        "id",
        "legacy",
        "created_at",
        "paid_at",
        "status",
        "package_id",
        "list_price",
        "discount_amount",
        "amount",
        "refunded_amount",
        "paid_type",
        "last_type",
        "customer_email",
        "customer_phone",
    )
    yield CSV_HEADER
    for row in rows.iterator(chunk_size=CHUNK_SIZE):
        order_id, legacy, created, paid, status, package, price, discount, amount, refunded = row[:10]
        paid_type, last_type, email, phone = row[10:]
        yield [
            order_id,
            legacy or "",
            _local(created),
            _local(paid),
            status,
            package,
            price,
            discount,
            amount,
            refunded,
            paid_type or last_type or "",
            email,
            phone,
        ]


def orders_csv_response(*, queryset: QuerySet[Order], actor: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    name = f"orders-{timezone.localtime():%Y%m%d-%H%M}.csv"
    logger.info("orders_exported", extra={"actor": actor, "file": name})
    response = StreamingHttpResponse(
        (writer.writerow(row) for row in orders_csv_rows(queryset=queryset)), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
