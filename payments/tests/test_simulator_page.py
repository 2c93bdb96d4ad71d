"""The simulator's payment page (behind Snap's redirect_url), driven over real HTTP like a browser."""

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from payments import midtrans
from payments.simulator.models import SimNotification, SimTransaction

pytestmark = pytest.mark.django_db(transaction=True)

ORDER = "BF-20260101-PAGE0001-1"
FINISH = "http://127.0.0.1:9/pesanan/selesai?ref=abc"


@pytest.fixture
def sim(midtrans_sim_alone):
    midtrans_sim_alone.pause_deliveries()
    return midtrans_sim_alone


def _create(**extra):
    return midtrans.snap_create(
        payload={
            "transaction_details": {"order_id": ORDER, "gross_amount": 149000},
            "item_details": [{"id": "kelas", "name": "Buat Film Pakai AI", "price": 149000, "quantity": 1}],
            "callbacks": {"finish": FINISH},
            **extra,
        }
    )


def _csrf(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def _post(session, url, page_html, **data):
    return session.post(url, data={"csrfmiddlewaretoken": _csrf(page_html), **data}, allow_redirects=False, timeout=10)


@pytest.mark.parametrize(
    ("method", "action", "status_code", "transaction_status"),
    [
        ("bca_va", "pay", "200", "settlement"),
        ("qris", "pay", "200", "settlement"),
        ("gopay", "expire", "407", "expire"),
        ("credit_card", "pay", "200", "capture"),
        ("credit_card", "deny", "202", "deny"),
        ("bca_va", "back", "201", "pending"),
    ],
)
def test_choose_method_then_act_then_redirect_to_finish(sim, request, method, action, status_code, transaction_status):
    snap = _create()
    browser = requests.Session()
    request.addfinalizer(browser.close)  # an open keep-alive socket would pin a server thread
    page = browser.get(snap.redirect_url, timeout=10)
    assert page.status_code == 200
    assert "Pilih metode pembayaran" in page.text
    assert "Rp 149.000" in page.text
    assert 'name="viewport"' in page.text
    for label in ("BCA Virtual Account", "QRIS", "GoPay", "Kartu Kredit/Debit"):
        assert label in page.text

    chosen = _post(browser, f"{snap.redirect_url}/method", page.text, method=method)
    assert chosen.status_code == 302
    page = browser.get(snap.redirect_url, timeout=10)
    tx = SimTransaction.objects.get(order_id=ORDER)
    assert tx.transaction_status == "pending"
    assert "Bayar sekarang" in page.text
    if method == "bca_va":
        assert tx.va_number in page.text

    done = _post(browser, f"{snap.redirect_url}/action", page.text, action=action)
    assert done.status_code == 302
    location = urlsplit(done.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "http://127.0.0.1:9/pesanan/selesai"
    assert parse_qs(location.query) == {
        "ref": ["abc"],
        "order_id": [ORDER],
        "status_code": [status_code],
        "transaction_status": [transaction_status],
    }
    assert SimTransaction.objects.get(order_id=ORDER).transaction_status == transaction_status
    expected = ["pending"] if action == "back" else ["pending", transaction_status]
    assert [n.payload["transaction_status"] for n in SimNotification.objects.order_by("id")] == expected


def test_enabled_payments_limit_the_methods(sim):
    snap = _create(enabled_payments=["gopay", "other_qris"])
    page = requests.get(snap.redirect_url, timeout=10).text
    assert "GoPay" in page and "QRIS" in page
    assert "BCA Virtual Account" not in page and "Kartu Kredit" not in page


def test_method_not_offered_is_refused_and_changes_nothing(sim):
    snap = _create(enabled_payments=["gopay"])
    with requests.Session() as browser:
        page = browser.get(snap.redirect_url, timeout=10)
        refused = _post(browser, f"{snap.redirect_url}/method", page.text, method="bca_va")
        unknown = _post(browser, f"{snap.redirect_url}/method", page.text, method="bitcoin")
    assert refused.status_code == 400
    assert "tidak tersedia" in refused.text
    assert unknown.status_code == 400
    tx = SimTransaction.objects.get(order_id=ORDER)
    assert (tx.transaction_status, tx.payment_type) == ("", "")
    assert SimNotification.objects.count() == 0


def test_acting_on_a_stale_page_is_refused_and_changes_nothing(sim):
    snap = _create()
    with requests.Session() as browser:
        page = browser.get(snap.redirect_url, timeout=10)
        _post(browser, f"{snap.redirect_url}/method", page.text, method="gopay")
        stale = browser.get(snap.redirect_url, timeout=10)
        sim.pay(snap.token)  # paid meanwhile, e.g. from another tab
        assert "Pembayaran berhasil" in browser.get(snap.redirect_url, timeout=10).text
        # The stale form (the back button) now tries to deny the settled payment.
        denied = _post(browser, f"{snap.redirect_url}/action", stale.text, action="deny")
    assert denied.status_code == 400
    assert "Tidak bisa" in denied.text
    assert SimTransaction.objects.get(order_id=ORDER).transaction_status == "settlement"
    assert [n.payload["transaction_status"] for n in SimNotification.objects.order_by("id")] == [
        "pending",
        "settlement",
    ]


def test_unknown_or_canceled_token(sim):
    missing = requests.get(f"{sim.base_url}/snap/v4/redirection/no-such-token", timeout=10)
    assert missing.status_code == 404
    assert "Sesi pembayaran tidak ditemukan" in missing.text
    snap = _create()
    midtrans.snap_cancel(token=snap.token)
    page = requests.get(snap.redirect_url, timeout=10)
    assert "dibatalkan" in page.text
    assert "Pilih metode pembayaran" not in page.text
