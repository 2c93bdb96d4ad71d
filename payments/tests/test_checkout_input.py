"""Bad input to the checkout API: a 400 invalid_request naming every bad field at once, and
nothing changed. Also the rate limit and the error shape of the framework's own errors.

None of these requests may reach Midtrans, so they run in-process (no live server).
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from payments.services.checkout import MSG_PHONE_INVALID, MSG_PHONE_NOT_MOBILE, phone_normalize
from payments.services.discounts import (
    MSG_ENDED,
    MSG_EXHAUSTED,
    MSG_INACTIVE,
    MSG_NOT_STARTED,
    MSG_UNKNOWN,
    MSG_WRONG_PACKAGE,
)
from payments.tests.checkout_support import checkout_body, db_state
from payments.tests.factories import DiscountCodeFactory, OrderFactory, PackageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


def post(api, body, **extra):
    return api.post("/api/checkout/", body, format="json", **extra)


def assert_invalid(response, fields: dict):
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"]
    assert error["fields"] == fields


# --- phone numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["081234567890", "0812-3456-7890", "62812 3456 7890", "6281234567890", "+62 812-3456-7890", "(0812) 3456.7890"],
)
def test_indonesian_mobile_numbers_become_e164(raw):
    assert phone_normalize(raw=raw) == "+6281234567890"


def test_foreign_mobile_numbers_are_accepted():
    assert phone_normalize(raw="+60 12-345 6789") == "+60123456789"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("021 5555 1234", MSG_PHONE_NOT_MOBILE),  # a Jakarta landline
        ("+62 21 5555 1234", MSG_PHONE_NOT_MOBILE),
        ("0812", MSG_PHONE_INVALID),
        ("12345", MSG_PHONE_INVALID),
        ("nomor saya", MSG_PHONE_INVALID),
        ("0812345678901234567890", MSG_PHONE_INVALID),
    ],
)
def test_bad_phone_numbers_are_refused(raw, message):
    with pytest.raises(ValueError) as caught:
        phone_normalize(raw=raw)
    assert str(caught.value) == message


# --- 400 invalid_request ------------------------------------------------------------------------


def test_every_bad_field_is_named_in_one_answer(api):
    before = db_state()
    response = post(
        api,
        {
            "package_id": "tidak-ada",
            "name": "   ",
            "email": "bukan-email",
            "phone": "021 5555 1234",
            "discount_code": "X",
        },
    )
    assert_invalid(
        response,
        {
            "package_id": "Paket tidak ditemukan.",
            "name": "Nama wajib diisi.",
            "email": "Alamat email tidak valid.",
            "phone": MSG_PHONE_NOT_MOBILE,
            "discount_code": MSG_UNKNOWN,
        },
    )
    assert db_state() == before


def test_missing_fields_are_named(api):
    before = db_state()
    assert_invalid(
        post(api, {}),
        {
            "package_id": "Pilih paket.",
            "name": "Nama wajib diisi.",
            "email": "Email wajib diisi.",
            "phone": "Nomor WhatsApp wajib diisi.",
        },
    )
    assert db_state() == before


def test_name_longer_than_100_characters_is_refused(api):
    before = db_state()
    assert_invalid(post(api, checkout_body(name="A" * 101)), {"name": "Nama paling panjang 100 karakter."})
    assert db_state() == before


@pytest.mark.parametrize("name", ["Budi\nSantoso", "Budi\x00", "Budi\u200eSantoso"])
def test_name_with_control_characters_is_refused(api, name):
    before = db_state()
    response = post(api, checkout_body(name=name))
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"name"}
    assert db_state() == before


def test_inactive_package_is_a_field_error(api):
    PackageFactory(id="kelas-lama", is_active=False)
    before = db_state()
    assert_invalid(post(api, checkout_body(package_id="kelas-lama")), {"package_id": "Paket ini sedang tidak dijual."})
    assert db_state() == before


@pytest.mark.parametrize(
    ("code_kwargs", "message"),
    [
        ({"is_active": False}, MSG_INACTIVE),
        ({"starts_at": timezone.now() + timedelta(days=1)}, MSG_NOT_STARTED),
        ({"ends_at": timezone.now() - timedelta(seconds=1)}, MSG_ENDED),
        ({"max_uses": 3, "times_used": 3}, MSG_EXHAUSTED),
    ],
)
def test_unusable_discount_code_is_a_field_error(api, code_kwargs, message):
    DiscountCodeFactory(code="PROMO", **code_kwargs)
    before = db_state()
    assert_invalid(post(api, checkout_body(discount_code="promo")), {"discount_code": message})
    assert db_state() == before


def test_discount_code_for_another_package_is_refused(api):
    other = PackageFactory(id="kelas-lain")
    DiscountCodeFactory(code="KHUSUS", package=other)
    before = db_state()
    assert_invalid(post(api, checkout_body(discount_code="KHUSUS")), {"discount_code": MSG_WRONG_PACKAGE})
    assert db_state() == before


def test_fixed_discount_that_outgrew_a_lowered_price_is_refused(api):
    # the price was lowered after the code was made: paying Rp 0 is never allowed
    package = PackageFactory(id="kelas-murah", price=10000)
    DiscountCodeFactory(code="BESAR", kind="fixed", value=10000)
    before = db_state()
    assert_invalid(
        post(api, checkout_body(package_id=package.id, discount_code="BESAR")), {"discount_code": MSG_WRONG_PACKAGE}
    )
    assert db_state() == before


def test_body_that_is_not_json_is_invalid_request(api):
    before = db_state()
    response = api.post("/api/checkout/", "{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert db_state() == before


def test_json_that_is_not_an_object_is_invalid_request(api):
    before = db_state()
    response = api.post("/api/checkout/", "[1, 2]", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert db_state() == before


def test_form_posts_are_refused_with_415(api):
    before = db_state()
    response = api.post("/api/checkout/", checkout_body())  # multipart
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert db_state() == before


def test_wrong_method_is_405_in_the_error_shape(api):
    response = api.get("/api/checkout/")
    assert response.status_code == 405
    assert set(response.json()["error"]) == {"code", "message", "fields"}


# --- rate limit -----------------------------------------------------------------------------------


def test_checkout_is_rate_limited_per_client_ip(api, settings):
    # given
    settings.CHECKOUT_RATE_LIMIT = "2/min"
    bad = checkout_body(phone="1")  # refused before Midtrans; still counts against the limit
    assert post(api, bad).status_code == 400
    assert post(api, bad).status_code == 400
    before = db_state()

    # when
    response = post(api, checkout_body())

    # then
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert db_state() == before
    # another client is not affected
    assert post(api, bad, REMOTE_ADDR="10.1.2.3").status_code == 400


def test_pay_endpoint_shares_the_rate_limit(api, settings):
    settings.CHECKOUT_RATE_LIMIT = "1/min"
    order = OrderFactory(status="EXPIRED")
    assert api.post(f"/api/orders/{order.id}/pay/", {}, format="json").status_code == 409
    response = api.post(f"/api/orders/{order.id}/pay/", {}, format="json")
    assert response.status_code == 429
    assert "Retry-After" in response


def test_rate_limit_uses_the_address_our_proxy_saw(api, settings):
    settings.CHECKOUT_RATE_LIMIT = "1/min"
    settings.TRUSTED_PROXY_COUNT = 1
    bad = checkout_body(phone="1")
    # the client writes a fake first hop; the proxy appends the real address
    assert post(api, bad, HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.7").status_code == 400
    assert post(api, bad, HTTP_X_FORWARDED_FOR="9.9.9.9, 203.0.113.7").status_code == 429
    assert post(api, bad, HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.8").status_code == 400


def test_forwarded_for_is_ignored_without_a_trusted_proxy(api, settings):
    settings.CHECKOUT_RATE_LIMIT = "1/min"
    settings.TRUSTED_PROXY_COUNT = 0
    bad = checkout_body(phone="1")
    assert post(api, bad, HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 400
    assert post(api, bad, HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 429
