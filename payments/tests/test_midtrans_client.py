"""The Midtrans client against the simulator over real HTTP (live_server)."""

import hashlib

import pytest

from payments import midtrans

pytestmark = pytest.mark.django_db(transaction=True)


def _payload(order_id="BF-20260101-ABCDEFGH-1", amount=99000, **extra):
    return {
        "transaction_details": {"order_id": order_id, "gross_amount": amount},
        "item_details": [{"id": "kelas", "name": "Buat Film Pakai AI", "price": amount, "quantity": 1}],
        "customer_details": {"first_name": "Budi", "email": "budi@example.com", "phone": "+6281234567890"},
        "callbacks": {"finish": "http://127.0.0.1:9/selesai"},
        **extra,
    }


def test_signature_matches_reference_test_vector():
    expected = (
        "a3873b6d0fa5b7f7519b55b9ce7a3e7c88fa4f0247c29028bbff5aced17958bf"
        "152cbe71803bc32d809ca69a28bc84b88540ec226fb8a318fd303556c6367e89"
    )
    got = midtrans.signature_compute(
        order_id="ORDER-101", status_code="200", gross_amount="99000.00", server_key="SB-Mid-server-TEST123"
    )
    assert got == expected


def test_snap_create_then_status_404_until_method_chosen(midtrans_sim_alone):
    snap = midtrans.snap_create(payload=_payload())
    assert snap.token and snap.redirect_url.startswith(midtrans_sim_alone.base_url)

    body = midtrans.transaction_status(midtrans_order_id="BF-20260101-ABCDEFGH-1")
    assert body["status_code"] == "404"

    midtrans_sim_alone.choose(snap.token, "bca_va")
    body = midtrans.transaction_status(midtrans_order_id="BF-20260101-ABCDEFGH-1")
    assert body["status_code"] == "201"
    assert body["transaction_status"] == "pending"
    assert body["gross_amount"] == "99000.00"
    assert midtrans.signature_verify(payload=body)
    assert (
        hashlib.sha512(("BF-20260101-ABCDEFGH-1" + "201" + "99000.00" + "SB-Mid-server-TEST123").encode()).hexdigest()
        == body["signature_key"]
    )
