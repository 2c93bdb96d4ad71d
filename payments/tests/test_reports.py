"""The owners' daily sales summary and the "new sale" notice."""

from datetime import UTC, date, datetime, time

import pytest
from django.utils import timezone

from notifications.models import Notification
from payments import notices
from payments.models import Order, PaymentAttempt, Refund
from payments.services.reports import sales_summary_compute, sales_summary_send
from payments.tests.factories import OrderFactory, PaymentAttemptFactory
from payments.tests.payment_support import package_for_tests

pytestmark = pytest.mark.django_db

JAKARTA = timezone.get_default_timezone()
DAY = date(2026, 12, 3)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=JAKARTA)


def sold(paid_at: datetime, amount: int = 99000, **kw) -> Order:
    discount = 99000 - amount
    return OrderFactory(
        package=package_for_tests(), status=Order.Status.PAID, paid_at=paid_at, discount_amount=discount, **kw
    )


def refunded(order: Order, amount: int, confirmed_at: datetime | None, n: int = 1) -> Refund:
    attempt = PaymentAttemptFactory(order=order, number=n, status=PaymentAttempt.Status.PAID)
    return Refund.objects.create(
        order=order,
        attempt=attempt,
        refund_key=f"{attempt.midtrans_order_id}-R1",
        amount=amount,
        reason="other",
        operator="siti",
        status=Refund.Status.CONFIRMED if confirmed_at else Refund.Status.REQUESTED,
        confirmed_at=confirmed_at,
    )


def test_summary_figures_come_from_the_orders_of_that_jakarta_day():
    # given: three orders paid on the day (one just after midnight WIB, one just before the next)
    first = sold(at(DAY, 0, 5))
    sold(at(DAY, 12), amount=84150)  # with a 15 % discount
    sold(at(DAY, 23, 59), needs_review=True)
    # and orders of the days around it (17:30 UTC on the 2nd is 00:30 WIB on the 3rd: counted)
    sold(at(date(2026, 12, 2), 23, 59))
    utc_evening = datetime(2026, 12, 2, 17, 30, tzinfo=UTC)
    sold(utc_evening, amount=50000)
    sold(at(date(2026, 12, 4), 0, 0), needs_review=True)
    OrderFactory(package=package_for_tests())  # never paid
    # refunds confirmed that day (one of an earlier sale), one still waiting, one the day after
    refunded(first, 20000, at(DAY, 15))
    refunded(sold(at(date(2026, 11, 30), 9)), 99000, at(DAY, 16))
    refunded(sold(at(date(2026, 11, 30), 10)), 5000, None)
    refunded(sold(at(date(2026, 11, 30), 11)), 7000, at(date(2026, 12, 4), 1))

    summary = sales_summary_compute(day=DAY)

    assert summary.orders_paid == 4
    assert summary.revenue == 99000 + 84150 + 99000 + 50000
    assert (summary.refunds, summary.refunded) == (2, 20000 + 99000)
    assert summary.net == summary.revenue - 119000
    assert summary.open_reviews == 2


def test_summary_is_emailed_once_per_owner_and_day(settings):
    settings.SALES_SUMMARY_EMAILS = ["owner@buatfilm.test", "finance@buatfilm.test"]
    sold(at(DAY, 10))

    sales_summary_send(day=DAY)
    sales_summary_send(day=DAY)  # a repeated run (beat restarted) enqueues nothing new

    mails = Notification.objects.filter(template="sales_summary").order_by("recipient")
    assert [m.recipient for m in mails] == ["finance@buatfilm.test", "owner@buatfilm.test"]
    body = mails[0].body_text
    assert "Pesanan dibayar: 1" in body and "Pendapatan: Rp99.000" in body and "Bersih: Rp99.000" in body
    assert "3 Desember 2026" in mails[0].subject


def test_summary_without_owners_configured_sends_nothing(settings):
    settings.SALES_SUMMARY_EMAILS = []
    assert sales_summary_send(day=DAY) is None
    assert not Notification.objects.exists()


def test_summary_beat_entry_runs_at_the_configured_jakarta_hour(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["payments-sales-summary"]
    assert entry["task"] == "payments.sales_summary"
    assert entry["schedule"].hour == {settings.SALES_SUMMARY_HOUR} and entry["schedule"].minute == {0}
    assert settings.CELERY_TIMEZONE == "Asia/Jakarta"


def test_new_sale_notice_goes_to_each_configured_address_once(settings):
    settings.SALE_NOTICE_EMAILS = ["owner@buatfilm.test"]
    order = sold(timezone.now())

    notices.notice_paid(order=order)
    notices.notice_paid(order=order)
    notices.notice_paid(order=order, event="paid:resend:1")  # a resend of access is not a new sale

    sale = Notification.objects.get(template="sale_notice")
    assert sale.recipient == "owner@buatfilm.test" and order.pk in sale.subject and "Rp99.000" in sale.subject


def test_no_sale_notice_without_addresses(settings):
    settings.SALE_NOTICE_EMAILS = []
    notices.notice_paid(order=sold(timezone.now()))
    assert not Notification.objects.filter(template="sale_notice").exists()
