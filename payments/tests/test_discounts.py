"""Discount codes: amounts, `manage.py discount_upsert`, and redemption counting."""

from datetime import datetime
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command

from payments.models import AuditEntry, DiscountCode
from payments.services.discounts import discount_amount_compute, discount_redeem
from payments.tests.factories import DiscountCodeFactory, PackageFactory

pytestmark = pytest.mark.django_db

JAKARTA = ZoneInfo("Asia/Jakarta")


def upsert(*args) -> str:
    out = StringIO()
    call_command("discount_upsert", *args, stdout=out)
    return out.getvalue()


def snapshot():
    return (
        sorted(DiscountCode.objects.values_list("code", "kind", "value", "package_id", "max_uses", "is_active")),
        AuditEntry.objects.count(),
    )


@pytest.mark.parametrize(
    ("kind", "value", "price", "off"),
    [
        ("percent", 10, 99000, 9900),
        ("percent", 33, 99000, 32670),
        ("percent", 33, 1001, 330),
        ("fixed", 20000, 99000, 20000),
    ],
)
def test_discount_amounts_are_whole_rupiah_rounded_down(kind, value, price, off):
    assert discount_amount_compute(discount=DiscountCode(kind=kind, value=value), price=price) == off


def test_upsert_creates_a_percent_code_with_every_option():
    PackageFactory(id="kelas-a")

    out = upsert(
        "lebaran",
        "--percent",
        "15",
        "--package",
        "kelas-a",
        "--max-uses",
        "100",
        "--starts",
        "2026-03-01",
        "--ends",
        "2026-03-31T23:00:00+07:00",
    )

    code = DiscountCode.objects.get()
    assert out.startswith("discount LEBARAN created")
    assert (code.code, code.kind, code.value, code.package_id, code.max_uses, code.is_active) == (
        "LEBARAN",
        "percent",
        15,
        "kelas-a",
        100,
        True,
    )
    assert code.starts_at == datetime(2026, 3, 1, 0, 0, tzinfo=JAKARTA)
    assert code.ends_at == datetime(2026, 3, 31, 23, 0, tzinfo=JAKARTA)
    entry = AuditEntry.objects.get(action="discount_created")
    assert entry.actor == "manage.py discount_upsert" and entry.new_value["value"] == 15


def test_upsert_sets_an_existing_code_to_the_new_definition_and_keeps_its_uses():
    DiscountCodeFactory(code="HEMAT", kind="percent", value=10, max_uses=50, times_used=7)

    out = upsert("HEMAT", "--amount", "15000", "--inactive")

    code = DiscountCode.objects.get()
    assert (code.kind, code.value, code.max_uses, code.is_active, code.times_used) == ("fixed", 15000, None, False, 7)
    assert "discount HEMAT updated (used 7 times)" in out
    assert "  value: 10 -> 15000" in out
    assert AuditEntry.objects.filter(action="discount_updated").count() == 1


def test_upsert_with_the_same_definition_changes_nothing():
    upsert("SAMA", "--percent", "5")
    before = snapshot()
    assert "unchanged" in upsert("SAMA", "--percent", "5")
    assert snapshot() == before


def test_bare_end_date_means_through_that_day():
    upsert("AKHIR", "--percent", "5", "--ends", "2026-12-31")
    assert DiscountCode.objects.get().ends_at.astimezone(JAKARTA).strftime("%Y-%m-%d %H:%M") == "2026-12-31 23:59"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["X1", "--amount", "99000"], "below Rp 1"),  # the launch package costs Rp 99.000
        (["X2", "--amount", "10000", "--package", "kelas-murah"], "below Rp 1"),
        (["X3", "--percent", "100"], "between 1 and 99"),
        (["X4", "--percent", "0"], "between 1 and 99"),
        (["X5", "--amount", "0"], "positive whole number"),
        (["X6", "--percent", "5", "--package", "tidak-ada"], "does not exist"),
        (["X7", "--percent", "5", "--max-uses", "0"], "at least 1"),
        (["X8", "--percent", "5", "--starts", "2026-05-01", "--ends", "2026-04-01"], "after its start"),
        (["X9", "--percent", "5", "--starts", "besok"], "not an ISO date"),
        (["kode salah!", "--percent", "5"], "letters, digits"),
    ],
)
def test_bad_definitions_are_refused_and_change_nothing(args, message):
    PackageFactory(id="kelas-murah", price=10000)
    before = snapshot()
    with pytest.raises(CommandError, match=message):
        upsert(*args)
    assert snapshot() == before


def test_percent_or_amount_is_required_and_exclusive():
    before = snapshot()
    with pytest.raises(CommandError):
        call_command("discount_upsert", "X", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError):
        call_command("discount_upsert", "X", "--percent", "5", "--amount", "5", stdout=StringIO(), stderr=StringIO())
    assert snapshot() == before


def test_max_uses_cannot_go_below_uses_already_made():
    DiscountCodeFactory(code="LARIS", max_uses=10, times_used=6)
    before = snapshot()
    with pytest.raises(CommandError, match="already used 6 times"):
        upsert("LARIS", "--percent", "10", "--max-uses", "5")
    assert snapshot() == before


def test_redeem_counts_until_max_uses_then_refuses():
    code = DiscountCodeFactory(max_uses=2)
    assert [discount_redeem(discount_id=code.pk) for _ in range(3)] == [True, True, False]
    code.refresh_from_db()
    assert code.times_used == 2


def test_redeem_without_limit_always_counts():
    code = DiscountCodeFactory(max_uses=None)
    assert all(discount_redeem(discount_id=code.pk) for _ in range(5))
    code.refresh_from_db()
    assert code.times_used == 5
