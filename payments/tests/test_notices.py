"""payments.notices: what is rendered and enqueued for each order event."""

from urllib.parse import unquote

import pytest
from django.core import signing
from django.db import transaction

from entitlements.services import access_link_build
from notifications.models import Notification
from payments import notices
from payments.models import PaymentEvent
from payments.tests.factories import OrderFactory, PaymentAttemptFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def order():
    return OrderFactory(customer_name="Budi & Sari", customer_email="budi@example.com", customer_phone="+6281234567890")


def _rows(order_id):
    return {(n.channel, n.template): n for n in Notification.objects.filter(reference=order_id)}


def test_paid_enqueues_one_email_and_one_whatsapp_with_the_access_link(
    order, django_capture_on_commit_callbacks, monkeypatch
):
    kicked = []
    monkeypatch.setattr(
        "notifications.services.notification_kick_many",
        lambda *, notification_ids, reference="": kicked.append((list(notification_ids), reference)),
    )
    # when
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        notices.notice_paid(order=order)
    # then
    rows = _rows(order.id)
    assert set(rows) == {("email", "payment_received"), ("whatsapp", "payment_received")}
    email, whatsapp = rows[("email", "payment_received")], rows[("whatsapp", "payment_received")]
    assert email.recipient == "budi@example.com" and whatsapp.recipient == "+6281234567890"
    assert email.dedupe_key == f"order:{order.id}:paid:email"
    assert email.subject == f"Pembayaran diterima: akses {order.package.name} sudah aktif"
    assert "sudah kami terima" in email.body_text and "Rp99.000" in email.body_text
    # plain text is not HTML-escaped; the HTML part is
    assert "Halo Budi & Sari," in email.body_text
    assert "Budi &amp; Sari" in email.body_html and "<a href=" in email.body_html
    link = email.body_text.split("tautan berikut:\n", 1)[1].splitlines()[0]
    assert link in whatsapp.body_text and link in email.body_html.replace("&amp;", "&")
    assert link == access_link_build(email="budi@example.com", course_code=order.package.course_code)
    token = unquote(link.split("token=", 1)[1])
    assert signing.loads(token, salt="entitlements.access-link") == "budi@example.com"
    assert whatsapp.template_params == ["Budi & Sari", order.id, "Rp99.000", link]
    assert all(n.status == "pending" and n.attempts == 0 for n in rows.values())
    # one kick for both rows, after the commit
    assert kicked == [] and len(callbacks) == 1
    callbacks[0]()
    assert kicked == [([email.pk, whatsapp.pk], order.id)]


def test_paid_twice_enqueues_nothing_new(order, django_capture_on_commit_callbacks):
    # given
    notices.notice_paid(order=order)
    first = {n.pk: n.body_text for n in Notification.objects.all()}
    # when
    with django_capture_on_commit_callbacks() as callbacks:
        notices.notice_paid(order=order)
    # then
    assert {n.pk: n.body_text for n in Notification.objects.all()} == first
    assert callbacks == []


def test_notices_roll_back_with_the_callers_transaction(order):
    # when
    with pytest.raises(RuntimeError), transaction.atomic():
        notices.notice_paid(order=order)
        notices.notice_expired(order=order)
        raise RuntimeError("the payment transaction failed")
    # then
    assert Notification.objects.count() == 0


def test_payment_instructions_link_then_virtual_account_number(order):
    # given: the order became payable
    attempt = PaymentAttemptFactory(order=order, redirect_url="https://app.sandbox.midtrans.com/snap/v4/redirection/t1")
    notices.notice_payment_instructions(order=order, attempt=attempt)
    # when: a pending notification brings a BNI virtual account (twice, as webhooks repeat)
    attempt.va_number = "9881234567890123"
    attempt.payment_type = "bank_transfer"
    attempt.save()
    PaymentEvent.objects.create(
        attempt=None,  # the webhook links the event to its attempt only after the notices
        midtrans_order_id=attempt.midtrans_order_id,
        source="webhook",
        dedup_key="k1",
        payload={"va_numbers": [{"bank": "bni", "va_number": "9881234567890123"}]},
    )
    notices.notice_payment_instructions(order=order, attempt=attempt)
    notices.notice_payment_instructions(order=order, attempt=attempt)
    # then
    rows = Notification.objects.filter(reference=order.id).order_by("id")
    assert [(n.channel, n.dedupe_key.split(":", 2)[2]) for n in rows] == [
        ("email", "payment_instructions:1:email"),
        ("whatsapp", "payment_instructions:1:whatsapp"),
        ("email", "payment_instructions:1:va:email"),
        ("whatsapp", "payment_instructions:1:va:whatsapp"),
    ]
    link_email, _, va_email, va_whatsapp = rows
    assert "https://app.sandbox.midtrans.com/snap/v4/redirection/t1" in link_email.body_text
    assert link_email.subject == f"Selesaikan pembayaran pesanan {order.id}"
    assert "Nomor Virtual Account: 9881234567890123" in va_email.body_text and "Bank: BNI" in va_email.body_text
    assert va_email.subject == f"Nomor Virtual Account untuk pesanan {order.id}"
    assert "Virtual Account BNI *9881234567890123*" in va_whatsapp.body_text
    assert va_whatsapp.template_params[-1] == "Virtual Account BNI 9881234567890123"
    # the deadline is shown in Jakarta time, in Indonesian
    local = order.expires_at.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Jakarta"))
    assert f"{local:%H}.{local:%M} WIB" in va_email.body_text


def test_expired_is_email_only_and_refunded_goes_by_email_and_whatsapp(order):
    # when
    notices.notice_expired(order=order)
    order.refunded_amount = 50000
    notices.notice_refunded(order=order)
    order.refunded_amount = order.amount
    notices.notice_refunded(order=order)
    notices.notice_refunded(order=order)
    # then
    rows = list(Notification.objects.filter(reference=order.id).order_by("id"))
    assert [(n.channel, n.template) for n in rows] == [
        ("email", "order_expired"),
        ("email", "refund_processed"),
        ("whatsapp", "refund_processed"),
        ("email", "refund_processed"),
        ("whatsapp", "refund_processed"),
    ]
    assert rows[2].template_params == [order.customer_name, order.id, "Rp50.000"]
    assert "*Rp50.000*" in rows[2].body_text
    expired, partial, _, full, _ = rows
    assert "sudah kedaluwarsa" in expired.subject and "http://" in expired.body_text
    assert "Rp50.000" in partial.body_text and "tidak aktif lagi" not in partial.body_text
    assert "Rp99.000" in full.body_text and "tidak aktif lagi" in full.body_text


def test_alert_goes_to_every_operator_once(settings):
    # given
    settings.ALERT_EMAILS = ["ops@example.com", "owner@example.com"]
    # when
    for _ in range(3):
        notices.notice_alert(order_id="BF-20261122-AAAAAAAA", subject="Pembayaran terlambat", body="Uang masuk.")
    # then
    rows = Notification.objects.filter(template="operator_alert")
    assert sorted(rows.values_list("recipient", flat=True)) == ["ops@example.com", "owner@example.com"]
    assert all(n.subject == "[BuatFilm] Pembayaran terlambat (BF-20261122-AAAAAAAA)" for n in rows)
    assert all("/admin/payments/order/BF-20261122-AAAAAAAA/change/" in n.body_text for n in rows)


def test_alert_without_operators_enqueues_nothing(settings):
    settings.ALERT_EMAILS = []
    notices.notice_alert(order_id="BF-1", subject="x", body="y")
    assert Notification.objects.count() == 0


def test_malformed_phone_skips_whatsapp_but_keeps_email_and_the_transaction(caplog):
    # given: a phone number that is not E.164 got into an order
    order = OrderFactory(customer_phone="0812-345")
    # when
    with transaction.atomic():
        notices.notice_paid(order=order)
    # then
    assert list(Notification.objects.values_list("channel", flat=True)) == ["email"]
    assert any(r.getMessage() == "notice_skipped" and r.order_id == order.id for r in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_checkout_then_a_virtual_account_brings_a_second_instruction_with_the_bank(midtrans_sim):
    """Through the real callers: checkout (payment link), then Midtrans' pending notification (BCA VA)."""
    import requests

    from payments.tests.checkout_support import checkout_body, launch_package_ensure

    # given
    launch_package_ensure()
    midtrans_sim.pause_deliveries()
    response = requests.post(f"{midtrans_sim.live_url}/api/checkout/", json=checkout_body(), timeout=30)
    assert response.status_code == 201, response.text
    order_id, token = response.json()["order_id"], response.json()["payment"]["token"]
    # when: the customer picks BCA virtual account and Midtrans notifies "pending"
    midtrans_sim.choose(token, "bca_va")
    assert [n.last_http_status for n in midtrans_sim.deliver()] == [200]
    # then
    rows = list(Notification.objects.filter(reference=order_id).order_by("id"))
    assert [(n.template, n.channel, n.dedupe_key.rsplit(":", 2)[1]) for n in rows] == [
        ("payment_instructions", "email", "1"),
        ("payment_instructions", "whatsapp", "1"),
        ("payment_instructions", "email", "va"),
        ("payment_instructions", "whatsapp", "va"),
    ]
    va_number = midtrans_sim.transaction(token).va_number
    assert va_number and f"Nomor Virtual Account: {va_number}" in rows[2].body_text
    assert "Bank: BCA" in rows[2].body_text and f"Virtual Account BCA *{va_number}*" in rows[3].body_text
