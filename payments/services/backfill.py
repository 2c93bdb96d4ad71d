"""Backfills for the cut-over: course access for every paid order, and the "paid" message
sent on purpose to imported customers. Both are safe to run any time, and twice.

- entitlements_backfill: grants for PAID orders (and partially refunded ones, unless
  PARTIAL_REFUND_REVOKES_ACCESS) without an active entitlement; revokes for refunded and
  charged-back orders (and partially refunded ones when that setting says so) whose
  entitlement is still active. Through entitlements.services, with the order row locked.
- paid_notices_backfill: the "pembayaran diterima" email and WhatsApp (payments.notices.
  notice_paid) for imported paid orders. The outbox dedupe key (order, "paid", channel)
  makes it at most once per order, whoever enqueued it first; the pace stays under
  BACKFILL_NOTIFICATIONS_PER_MINUTE, so the workers never outrun the providers' limits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction

from entitlements.models import Entitlement
from entitlements.services import entitlement_grant, entitlement_revoke
from notifications.models import Notification
from payments import notices
from payments.models import LegacyPaidNotice, Order, OrderStatus
from payments.services.audit import audit_record
from payments.states import order_lock

logger = logging.getLogger(__name__)

_CHUNK = 500


def _access_statuses() -> tuple[list[str], list[str]]:
    """(statuses that keep access, statuses that lose it)."""
    keep = [OrderStatus.PAID]
    lose = [OrderStatus.REFUNDED, OrderStatus.CHARGEBACK]
    if settings.PARTIAL_REFUND_REVOKES_ACCESS:
        lose.append(OrderStatus.PARTIALLY_REFUNDED)
    else:
        keep.append(OrderStatus.PARTIALLY_REFUNDED)
    return keep, lose


def _ids(queryset) -> list[str]:
    # Ids first, then one short transaction per order: a long backfill holds no lock for long.
    return list(queryset.order_by("created_at", "id").values_list("id", flat=True))


def entitlements_backfill(*, actor: str = "backfill_entitlements", dry_run: bool = False) -> list[str]:
    """Bring entitlements in line with order statuses; returns one line per change (made or, in
    a dry run, that would be made)."""
    keep, lose = _access_statuses()
    active = Entitlement.objects.filter(status=Entitlement.Status.ACTIVE).values("order_id")
    changes: list[str] = []
    for order_id in _ids(Order.objects.filter(status__in=keep).exclude(id__in=active)):
        with transaction.atomic():
            order = order_lock(order_id=order_id)
            if order.status not in keep or Entitlement.objects.filter(order_id=order_id, status="active").exists():
                continue  # changed since the ids were read
            changes.append(f"grant {order.id} {order.package.course_code} ({order.status})")
            if dry_run:
                continue
            entitlement_grant(
                email=order.customer_email,
                course_code=order.package.course_code,
                order_id=order.id,
                reason=f"backfill: order {order.status}",
            )
            audit_record(actor=actor, action="entitlement_backfilled", obj=order, new_value={"granted": True})
    for order_id in _ids(Order.objects.filter(status__in=lose, id__in=active)):
        with transaction.atomic():
            order = order_lock(order_id=order_id)
            if order.status not in lose:
                continue
            changes.append(f"revoke {order.id} ({order.status})")
            if dry_run:
                continue
            entitlement_revoke(order_id=order.id, reason=f"backfill: order {order.status}")
            audit_record(actor=actor, action="entitlement_backfilled", obj=order, new_value={"revoked": True})
    logger.info("entitlements_backfilled", extra={"changes": len(changes), "dry_run": dry_run})
    return changes


@dataclass
class NoticeBackfillReport:
    dry_run: bool
    enqueued: list[str] = field(default_factory=list)  # order ids
    already: int = 0  # the outbox had the message already (sent by us, or queued)

    def lines(self) -> list[str]:
        verb = "would send" if self.dry_run else "queued"
        return [f"{verb} payment_received to order {order_id}" for order_id in self.enqueued] + [
            f"{verb}: {len(self.enqueued)} order(s); already in the outbox: {self.already}"
        ]


def _paid_dedupe_keys(order_id: str) -> list[str]:
    return [f"order:{order_id}:paid:{channel}" for channel in Notification.Channel.values]


def paid_notices_backfill(
    *,
    since: datetime | None = None,
    only_unsent: bool = False,
    dry_run: bool = False,
    per_minute: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> NoticeBackfillReport:
    """Enqueue the "paid" message for every imported order that keeps access (paid since
    `since`; with `only_unsent` only those the old system recorded as not sent)."""
    rate = per_minute or settings.BACKFILL_NOTIFICATIONS_PER_MINUTE
    interval = 60.0 / rate
    keep, _lose = _access_statuses()
    orders = Order.objects.filter(legacy_id__isnull=False, status__in=keep)
    if since is not None:
        orders = orders.filter(paid_at__gte=since)
    if only_unsent:
        orders = orders.filter(legacy_paid_notice=LegacyPaidNotice.NOT_SENT)
    report = NoticeBackfillReport(dry_run=dry_run)
    next_at = clock()
    for order_id in _ids(orders):
        if Notification.objects.filter(dedupe_key__in=_paid_dedupe_keys(order_id)).exists():
            report.already += 1
            continue
        if dry_run:
            report.enqueued.append(order_id)
            continue
        wait = next_at - clock()
        if wait > 0:
            sleep(wait)
        with transaction.atomic():
            order = order_lock(order_id=order_id)
            if order.status not in keep:
                continue
            # Paid long ago, in the old system: not a new sale for the operators.
            notices.notice_paid(order=order, sale_notice=False)
            audit_record(actor="backfill_notifications", action="paid_notice_backfilled", obj=order)
        report.enqueued.append(order_id)
        next_at = max(next_at, clock() - interval) + interval
    logger.info(
        "paid_notices_backfilled",
        extra={"enqueued": len(report.enqueued), "already": report.already, "dry_run": dry_run},
    )
    return report
