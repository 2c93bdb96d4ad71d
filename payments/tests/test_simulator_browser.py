"""The payment page in a real browser (headless Chromium) at phone size."""

from urllib.parse import parse_qs, urlsplit

import pytest

from payments import midtrans
from payments.simulator.models import SimTransaction

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_customer_pays_by_qris_on_a_phone_and_returns_to_the_shop(midtrans_sim_alone, phone_page):
    midtrans_sim_alone.pause_deliveries()
    finish = f"{midtrans_sim_alone.base_url}/_faults"  # any page of the live server will do
    snap = midtrans.snap_create(
        payload={
            "transaction_details": {"order_id": "BF-20260101-BROWSER1-1", "gross_amount": 149000},
            "item_details": [{"id": "kelas", "name": "Buat Film Pakai AI", "price": 149000, "quantity": 1}],
            "callbacks": {"finish": finish},
        }
    )
    page = phone_page
    page.goto(snap.redirect_url)
    assert page.get_by_text("Pilih metode pembayaran").is_visible()
    page.get_by_role("button", name="QRIS").tap()
    page.get_by_role("button", name="Bayar sekarang").tap()
    page.wait_for_url(f"{finish}?*")
    final_url = page.url
    query = parse_qs(urlsplit(final_url).query)
    assert query == {
        "order_id": ["BF-20260101-BROWSER1-1"],
        "status_code": ["200"],
        "transaction_status": ["settlement"],
    }
    tx = SimTransaction.objects.get(order_id="BF-20260101-BROWSER1-1")
    assert (tx.payment_type, tx.transaction_status) == ("qris", "settlement")
