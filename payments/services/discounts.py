"""Discount codes: what a code takes off a price, whether it applies, and redemption.

A redemption is counted when an order is created with the code (inside the order's
transaction, so a refused checkout redeems nothing). The counter is bumped with one
conditional UPDATE, so concurrent checkouts can never redeem more than `max_uses`.

A use is held by a live or paid order, as a seat is (payments.selectors.package_seats_taken):
it is given back when the order expires, fails or is cancelled, and taken again if money
arrives late for it, even when the code has run out meanwhile (the customer paid the
discounted price; that sale is honoured), so `times_used` may then exceed `max_uses`.
"""

import logging
import re
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from payments.models import DiscountCode, Package
from payments.services.audit import audit_record

logger = logging.getLogger(__name__)

CODE_RE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,39}$")

# Customer-facing reasons (Bahasa Indonesia), shown under the discount field.
MSG_UNKNOWN = "Kode diskon tidak ditemukan."
MSG_INACTIVE = "Kode diskon ini tidak aktif."
MSG_NOT_STARTED = "Kode diskon ini belum berlaku."
MSG_ENDED = "Kode diskon ini sudah tidak berlaku."
MSG_WRONG_PACKAGE = "Kode diskon ini tidak berlaku untuk paket ini."
MSG_EXHAUSTED = "Kuota kode diskon ini sudah habis."


class DiscountError(ValueError):
    """Bad discount definition; the message is shown to the operator as is."""


def discount_amount_compute(*, discount: DiscountCode, price: int) -> int:
    """Rupiah taken off `price`. Percent rounds down, so the customer never pays a fraction."""
    if discount.kind == DiscountCode.Kind.PERCENT:
        return price * discount.value // 100
    return discount.value


def discount_problem(*, discount: DiscountCode, package: Package, now: datetime | None = None) -> str | None:
    """Why `discount` cannot be used for `package` right now, or None when it can.

    Remaining uses are only a hint here; `discount_redeem` decides under concurrency.
    """
    now = now or timezone.now()
    if not discount.is_active:
        return MSG_INACTIVE
    if discount.starts_at and now < discount.starts_at:
        return MSG_NOT_STARTED
    if discount.ends_at and now >= discount.ends_at:
        return MSG_ENDED
    if discount.package_id and discount.package_id != package.id:
        return MSG_WRONG_PACKAGE
    # A price lowered after the code was made must still leave at least Rp 1 to pay.
    if package.price - discount_amount_compute(discount=discount, price=package.price) < 1:
        return MSG_WRONG_PACKAGE
    if discount.max_uses is not None and discount.times_used >= discount.max_uses:
        return MSG_EXHAUSTED
    return None


def discount_redeem(*, discount_id: int) -> bool:
    """Count one use, atomically. False when no use was left. Call inside the order's transaction."""
    updated = (
        DiscountCode.objects.filter(pk=discount_id)
        .filter(Q(max_uses__isnull=True) | Q(times_used__lt=F("max_uses")))
        .update(times_used=F("times_used") + 1, updated_at=timezone.now())
    )
    return updated == 1


@dataclass(frozen=True)
class DiscountUpsertResult:
    discount: DiscountCode
    created: bool
    changes: dict  # field -> (old, new)


def discount_upsert(
    *,
    code: str,
    percent: int | None = None,
    amount: int | None = None,
    package_id: str | None = None,
    max_uses: int | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    is_active: bool = True,
    actor: str = "system",
) -> DiscountUpsertResult:
    """Create a code or set an existing one to exactly this definition (its use count is kept)."""
    code = DiscountCode.code_normalize(code)
    if not CODE_RE.match(code):
        raise DiscountError(f"code {code!r} must be 1-40 letters, digits, '-' or '_'.")
    if (percent is None) == (amount is None):
        raise DiscountError("give exactly one of a percent or a rupiah amount.")
    if percent is not None and not 1 <= percent <= 99:
        raise DiscountError(f"percent must be between 1 and 99, got {percent}.")
    if amount is not None and amount < 1:
        raise DiscountError(f"amount must be a positive whole number of rupiah, got {amount}.")
    if max_uses is not None and max_uses < 1:
        raise DiscountError(f"max uses must be at least 1, got {max_uses}.")
    if starts_at and ends_at and ends_at <= starts_at:
        raise DiscountError("the end of the validity window must be after its start.")

    with transaction.atomic():
        package = None
        if package_id:
            package = Package.objects.filter(id=package_id).first()
            if package is None:
                raise DiscountError(f"package {package_id!r} does not exist.")
        if amount is not None:
            # Refuse a fixed amount that would leave a price below Rp 1 (any package it applies to).
            targets = [package] if package else list(Package.objects.filter(is_active=True))
            too_big = [p for p in targets if p.price - amount < 1]
            if too_big:
                names = ", ".join(f"{p.id} (Rp {p.price})" for p in too_big)
                raise DiscountError(f"Rp {amount} off would bring the price below Rp 1 for: {names}.")

        discount = DiscountCode.objects.select_for_update().filter(code=code).first()
        created = discount is None
        if created:
            discount = DiscountCode(code=code)
        elif max_uses is not None and max_uses < discount.times_used:
            raise DiscountError(f"{code} was already used {discount.times_used} times; max uses cannot be lower.")

        wanted = {
            "kind": DiscountCode.Kind.PERCENT if percent is not None else DiscountCode.Kind.FIXED,
            "value": percent if percent is not None else amount,
            "package_id": package.id if package else None,
            "max_uses": max_uses,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "is_active": is_active,
        }
        changes = {}
        for field, value in wanted.items():
            old = None if created else getattr(discount, field)
            if created or old != value:
                changes[field] = (old, value)
                setattr(discount, field, value)
        if changes:
            discount.save()
            audit_record(
                actor=actor,
                action="discount_created" if created else "discount_updated",
                obj=discount,
                old_value={k: _jsonable(v[0]) for k, v in changes.items()},
                new_value={k: _jsonable(v[1]) for k, v in changes.items()},
            )
            logger.info("discount_upserted", extra={"code": code, "is_new": created, "fields": sorted(changes)})
    return DiscountUpsertResult(discount=discount, created=created, changes=changes)


def _jsonable(value):
    return value.isoformat() if isinstance(value, datetime) else value


# Order statuses that hold a use of their discount code (as they hold a seat).
USE_HOLDING_ORDER_STATUSES = frozenset({"CREATED", "PENDING_PAYMENT", "PAID", "PARTIALLY_REFUNDED"})


def discount_use_follow(*, order, old_status: str, new_status: str) -> None:
    """Give the order's use back, or take it again, as its status leaves or re-enters the
    statuses that hold one. Call inside the transition's transaction (the order is locked)."""
    if not order.discount_code_id:
        return
    held, holds = old_status in USE_HOLDING_ORDER_STATUSES, new_status in USE_HOLDING_ORDER_STATUSES
    if held == holds:
        return
    delta = 1 if holds else -1
    DiscountCode.objects.filter(pk=order.discount_code_id).update(
        times_used=Greatest(F("times_used") + delta, 0), updated_at=timezone.now()
    )
    logger.info(
        "discount_use_returned" if delta < 0 else "discount_use_taken_again",
        extra={"order_id": order.pk, "discount_id": order.discount_code_id, "order_to": new_status},
    )
