from datetime import datetime, time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from payments.services.discounts import DiscountError, discount_upsert


def _when(value: str | None, *, option: str, end_of_day: bool = False) -> datetime | None:
    """ISO date or datetime; without an offset it is Jakarta time (the shop's time zone)."""
    if value is None:
        return None
    try:
        day = parse_date(value)
        parsed = None if day else parse_datetime(value)
    except ValueError:
        day = parsed = None
    if day is not None:
        # A bare end date means "through that day".
        parsed = datetime.combine(day, time.max if end_of_day else time.min)
    if parsed is None:
        raise CommandError(f"{option} {value!r} is not an ISO date or datetime (e.g. 2026-12-01T00:00+07:00).")
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.get_default_timezone())
    return parsed


def _show(value) -> str:
    return value.isoformat() if isinstance(value, datetime) else repr(value)


class Command(BaseCommand):
    help = (
        "Create a discount code, or set an existing one to exactly this definition "
        "(its use count is kept), and print what changed."
    )

    def add_arguments(self, parser):
        parser.add_argument("code", help="Letters, digits, '-' or '_'; stored upper-case, matched case-insensitively.")
        kind = parser.add_mutually_exclusive_group(required=True)
        kind.add_argument("--percent", type=int, help="Percent off, 1-99 (rounded down to whole rupiah).")
        kind.add_argument("--amount", type=int, help="Whole rupiah off, e.g. 20000.")
        parser.add_argument("--package", help="Only for this package id (default: every package).")
        parser.add_argument("--max-uses", type=int, help="Redemptions allowed in total (default: unlimited).")
        parser.add_argument("--starts", help="Valid from (ISO date or datetime; Jakarta time without an offset).")
        parser.add_argument("--ends", help="Valid until (ISO; a bare date means through that day).")
        parser.add_argument("--inactive", action="store_true", help="Define it switched off.")

    def handle(self, *args, code, percent, amount, package, max_uses, starts, ends, inactive, **options):
        try:
            result = discount_upsert(
                code=code,
                percent=percent,
                amount=amount,
                package_id=package,
                max_uses=max_uses,
                starts_at=_when(starts, option="--starts"),
                ends_at=_when(ends, option="--ends", end_of_day=True),
                is_active=not inactive,
                actor="manage.py discount_upsert",
            )
        except DiscountError as exc:
            raise CommandError(str(exc)) from exc

        verb = "created" if result.created else ("updated" if result.changes else "unchanged")
        discount = result.discount
        self.stdout.write(f"discount {discount.code} {verb} (used {discount.times_used} times)")
        for field, (old, new) in result.changes.items():
            self.stdout.write(f"  {field}: {_show(old)} -> {_show(new)}")
