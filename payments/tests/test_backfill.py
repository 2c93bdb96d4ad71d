"""backfill_entitlements and backfill_notifications: safe to run any time, at most once per order."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from entitlements.models import Entitlement
from entitlements.services import entitlement_grant
from notifications.models import Notification
from payments.models import Order
from payments.services.backfill import paid_notices_backfill
from payments.tests.factories import OrderFactory
from payments.tests.payment_support import package_for_tests

pytestmark = pytest.mark.django_db

OS = Order.Status


def _order(status=OS.PAID, **kw) -> Order:
    paid = status in (OS.PAID, OS.PARTIALLY_REFUNDED, OS.REFUNDED, OS.CHARGEBACK)
    return OrderFactory(package=package_for_tests(), status=status, paid_at=timezone.now() if paid else None, **kw)


def _legacy(legacy_id: str, notice=Order.LegacyPaidNotice.UNKNOWN, **kw) -> Order:
    return _order(legacy_id=legacy_id, legacy_source="sqlite", legacy_paid_notice=notice, **kw)


def _cmd(name: str, *args) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


def _grant(order: Order) -> None:
    entitlement_grant(email=order.customer_email, course_code="ai-movie-course", order_id=order.id, reason="test")


def _access() -> list:
    return sorted(Entitlement.objects.values_list("order_id", "status"))


def test_backfill_entitlements_grants_paid_and_revokes_refunded_and_charged_back():
    paid = _order(OS.PAID)
    partly = _order(OS.PARTIALLY_REFUNDED, refunded_amount=1000)
    refunded, chargeback = _order(OS.REFUNDED, refunded_amount=99000), _order(OS.CHARGEBACK)
    expired = _order(OS.EXPIRED)
    for order in (refunded, chargeback):
        _grant(order)

    out = _cmd("backfill_entitlements")

    assert _access() == sorted(
        [(paid.id, "active"), (partly.id, "active"), (refunded.id, "revoked"), (chargeback.id, "revoked")]
    )
    assert f"grant {paid.id}" in out and f"revoke {refunded.id}" in out and f"revoke {chargeback.id}" in out
    assert expired.id not in out
    assert "4 change(s)" in out
    # Safe to run again: nothing left to change.
    assert "0 change(s)" in _cmd("backfill_entitlements")


def test_backfill_entitlements_dry_run_changes_nothing():
    paid = _order(OS.PAID)
    refunded = _order(OS.REFUNDED, refunded_amount=99000)
    _grant(refunded)
    before = _access()

    out = _cmd("backfill_entitlements", "--dry-run")

    assert _access() == before
    assert f"would grant {paid.id}" in out and f"would revoke {refunded.id}" in out


def test_partial_refund_revokes_when_the_setting_says_so(settings):
    settings.PARTIAL_REFUND_REVOKES_ACCESS = True
    partly = _order(OS.PARTIALLY_REFUNDED, refunded_amount=1000)
    _grant(partly)

    _cmd("backfill_entitlements")

    assert _access() == [(partly.id, "revoked")]


def _paid_keys() -> list[str]:
    return sorted(Notification.objects.values_list("dedupe_key", flat=True))


def test_backfill_notifications_sends_the_paid_message_once_per_imported_order():
    first, second = _legacy("OLD-1"), _legacy("OLD-2")
    _order(OS.PAID)  # a new-system order: it got its message at payment time
    _legacy("OLD-3", status=OS.EXPIRED)

    out = _cmd("backfill_notifications", "--message", "payment_received", "--per-minute", "6000")

    assert _paid_keys() == sorted(f"order:{o.id}:paid:{c}" for o in (first, second) for c in ("email", "whatsapp"))
    email = Notification.objects.get(dedupe_key=f"order:{first.id}:paid:email")
    assert email.recipient == first.customer_email and email.template == "payment_received"
    assert "queued: 2 order(s)" in out
    # Again: the outbox has them, nothing more is queued.
    again = _cmd("backfill_notifications", "--message", "payment_received", "--per-minute", "6000")
    assert "queued: 0 order(s); already in the outbox: 2" in again
    assert Notification.objects.count() == 4


def test_only_unsent_skips_orders_the_old_system_told_or_kept_no_record_of():
    told = _legacy("OLD-1", notice=Order.LegacyPaidNotice.SENT)
    untold = _legacy("OLD-2", notice=Order.LegacyPaidNotice.NOT_SENT)
    unknown = _legacy("OLD-3", notice=Order.LegacyPaidNotice.UNKNOWN)

    _cmd("backfill_notifications", "--message", "payment_received", "--only-unsent", "--per-minute", "6000")

    references = set(Notification.objects.values_list("reference", flat=True))
    assert references == {untold.id}
    assert told.id not in references and unknown.id not in references


def test_since_limits_to_orders_paid_since_then():
    old = _legacy("OLD-1")
    Order.objects.filter(pk=old.pk).update(paid_at=timezone.now() - timezone.timedelta(days=30))
    recent = _legacy("OLD-2")

    since = (timezone.now() - timezone.timedelta(days=1)).isoformat()
    _cmd("backfill_notifications", "--message", "payment_received", "--since", since, "--per-minute", "6000")

    assert set(Notification.objects.values_list("reference", flat=True)) == {recent.id}


def test_backfill_notifications_dry_run_sends_nothing():
    order = _legacy("OLD-1")

    out = _cmd("backfill_notifications", "--message", "payment_received", "--dry-run")

    assert not Notification.objects.exists()
    assert f"would send payment_received to order {order.id}" in out


def test_backfill_notifications_keeps_to_the_rate():
    for n in range(4):
        _legacy(f"OLD-{n}")
    # A clock that only moves when the backfill sleeps: the pauses are the whole pacing.
    now = [1000.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    report = paid_notices_backfill(per_minute=60, sleep=sleep, clock=lambda: now[0])

    assert len(report.enqueued) == 4
    # 60 a minute: one order a second, so a one-second pause before each order after the first.
    assert pauses == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--message", "order_expired"], "--message 'order_expired' is not one of: payment_received"),
        (["--message", "payment_received", "--since", "kemarin"], "argument --since: 'kemarin' is not an ISO date"),
        (["--message", "payment_received", "--per-minute", "0"], "--per-minute must be greater than zero"),
    ],
)
def test_backfill_notifications_bad_arguments_are_refused_and_send_nothing(args, message):
    _legacy("OLD-1")

    with pytest.raises(CommandError, match=message):
        call_command("backfill_notifications", *args)

    assert not Notification.objects.exists()


def test_backfill_notifications_tells_the_customer_and_not_the_operators_of_a_new_sale(settings):
    settings.SALE_NOTICE_EMAILS = ["owner@buatfilm.test"]
    order = _legacy("OLD-1")

    _cmd("backfill_notifications", "--message", "payment_received", "--per-minute", "6000")

    assert sorted(Notification.objects.values_list("recipient", flat=True)) == sorted(
        [order.customer_email, order.customer_phone]
    )
