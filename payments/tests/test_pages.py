"""The customer's pages as HTML: landing with the package and the form, and the order page."""

import re

import pytest
from django.utils import timezone

from payments.models import Package
from payments.tests.checkout_support import LAUNCH_PACKAGE_ID
from payments.tests.factories import OrderFactory, PackageFactory

pytestmark = pytest.mark.django_db


def test_landing_shows_the_package_price_and_the_form_in_bahasa(client):
    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert '<html lang="id">' in html
    assert 'name="viewport"' in html  # usable on a phone
    assert "Buat Film Pakai AI" in html
    assert "Rp99.000" in html
    for field in ('name="name"', 'name="email"', 'name="phone"', 'name="discount_code"'):
        assert field in html
    assert f'name="package_id" value="{LAUNCH_PACKAGE_ID}"' in html
    assert "Nomor WhatsApp" in html and "Kode diskon" in html and "Bayar sekarang" in html
    assert "Idempotency-Key" in html and "/api/checkout/" in html
    assert response["Cache-Control"].startswith("max-age=0")


def test_landing_lets_the_customer_choose_between_packages(client):
    PackageFactory(id="kelas-pro", name="Kelas Pro", price=249000)
    PackageFactory(id="kelas-penuh", name="Kelas Penuh", price=149000, capacity=0)

    html = client.get("/?package=kelas-pro").content.decode()

    assert html.count('type="radio" name="package_id"') == 3
    assert "Rp249.000" in html and "Rp149.000" in html
    assert re.search(r'value="kelas-pro"\s+checked', html)
    assert not re.search(r'value="kelas-penuh"\s+checked', html)
    assert "(kuota habis)" in html


def test_landing_says_so_when_everything_is_sold_out(client):
    Package.objects.filter(pk=LAUNCH_PACKAGE_ID).update(capacity=0)
    html = client.get("/").content.decode()
    assert "Kuota habis" in html
    assert 'id="pay-button" disabled' in html


def test_landing_without_packages_says_nothing_is_for_sale(client):
    Package.objects.update(is_active=False)
    html = client.get("/").content.decode()
    assert "Belum ada kelas yang dijual" in html
    assert "checkout-form" not in html.split("<script>")[0]


def test_order_page_shows_the_order_without_personal_data(client):
    order = OrderFactory(customer_name="Nama Rahasia", customer_email="rahasia@example.com")

    response = client.get(f"/orders/{order.id}/?order_id={order.id}-1&status_code=201&transaction_status=pending")

    assert response.status_code == 200
    html = response.content.decode()
    assert order.id in html
    assert "Rp99.000" in html
    assert f'data-status="{order.status}"' in html
    assert "Menunggu pembayaran" in html and "Pembayaran diterima" in html and "Bayar lagi" in html
    assert "/api/orders/" in html
    assert "Nama Rahasia" not in html and "rahasia@example.com" not in html


def test_order_page_of_a_paid_order_starts_in_the_paid_state(client):
    order = OrderFactory(status="PAID", paid_at=timezone.now())
    assert 'data-status="PAID"' in client.get(f"/orders/{order.id}/").content.decode()


def test_unknown_order_page_is_404(client):
    assert client.get("/orders/BF-20260101-NOPE2345/").status_code == 404
