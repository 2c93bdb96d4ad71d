"""Midtrans' official Python client (midtransclient 1.4.2) as the simulator's judge.

Its own tests (github.com/Midtrans/midtrans-python-client, tests/test_snap.py and
tests/test_core_api.py) run against Midtrans' sandbox; these run the same scenarios against the
simulator over HTTP and assert what those tests assert. Where they start from Core API charge,
card tokens or direct refunds, which the simulator does not serve (README), the transaction is
made through Snap and the customer's choice on the payment page instead.

The client's base URLs are class constants of its ApiConfig; each instance gets its own values
(public attributes, no monkeypatching of the class).
"""

from datetime import datetime

import midtransclient
import pytest
from midtransclient.error_midtrans import MidtransAPIError

from payments.simulator import services
from payments.simulator.models import SimIdempotencyKey, SimTransaction

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sim(midtrans_sim_alone):
    midtrans_sim_alone.pause_deliveries()  # no notification leaves: X-Override names example.org
    return midtrans_sim_alone


def _pointed_at(client, sim):
    """The client with every base URL (sandbox and production) at the simulator."""
    config = client.api_config
    config.SNAP_SANDBOX_BASE_URL = config.SNAP_PRODUCTION_BASE_URL = f"{sim.base_url}/snap/v1"
    config.CORE_SANDBOX_BASE_URL = config.CORE_PRODUCTION_BASE_URL = sim.base_url
    return client


@pytest.fixture
def snap(sim):
    return _pointed_at(midtransclient.Snap(is_production=False, server_key=services.simulator_server_key()), sim)


@pytest.fixture
def core(sim):
    return _pointed_at(midtransclient.CoreApi(is_production=False, server_key=services.simulator_server_key()), sim)


def _order_id(suffix=""):
    # The client's own tests use the time with a space and colons in the order id.
    return f"py-midtransclient-test-{datetime.now():%Y-%m-%d %H:%M:%S}{suffix}"


def _param_min(order_id=None):
    return {
        "transaction_details": {"order_id": order_id or _order_id(), "gross_amount": 200000},
        "credit_card": {"secure": True},
    }


def _param_max():
    address = {
        "first_name": "Budi",
        "last_name": "Santoso",
        "email": "budi@example.com",
        "phone": "0812 3456 7890",
        "address": "Jl. Sudirman 1",
        "city": "Jakarta",
        "postal_code": "12190",
        "country_code": "IDN",
    }
    return {
        "transaction_details": {"order_id": _order_id("-max"), "gross_amount": 10000},
        "item_details": [
            {
                "id": "ITEM1",
                "price": 10000,
                "quantity": 1,
                "name": "Kelas Buat Film",
                "brand": "BuatFilm",
                "category": "Course",
                "merchant_name": "BuatFilm",
            }
        ],
        "customer_details": {
            "first_name": "Budi",
            "last_name": "Santoso",
            "email": "budi@example.com",
            "phone": "+628123456",
            "billing_address": address,
            "shipping_address": address,
        },
        # Old and unknown channel names too, as the client's test sends them.
        "enabled_payments": ["credit_card", "mandiri_clickpay", "bca_klikbca", "echannel", "permata_va", "bca_va"]
        + ["bni_va", "other_va", "gopay", "indomaret", "danamon_online"],
        "credit_card": {
            "secure": True,
            "channel": "migs",
            "bank": "bca",
            "installment": {"required": False, "terms": {"bni": [3, 6, 12], "offline": [6, 12]}},
            "whitelist_bins": ["48111111", "41111111"],
        },
        "bca_va": {"va_number": "12345678911", "free_text": {"inquiry": [{"en": "Pay", "id": "Bayar"}]}},
        "bni_va": {"va_number": "12345678"},
        "permata_va": {"va_number": "1234567890", "recipient_name": "BUDI"},
        "callbacks": {"finish": "https://buatfilm.example/selesai"},
        # A start_time far in the future with a plural unit.
        "expiry": {"start_time": "2030-12-20 18:11:08 +0700", "unit": "minutes", "duration": 1},
        "custom_field1": "satu",
        "custom_field2": "dua",
        "custom_field3": "tiga",
    }


def _api_error(call) -> MidtransAPIError:
    with pytest.raises(MidtransAPIError) as exc:
        call()
    return exc.value


# --- Snap (tests/test_snap.py) --------------------------------------------------------------------


def test_snap_create_transaction_min(snap):
    transaction = snap.create_transaction(_param_min())
    assert isinstance(transaction, dict)
    assert isinstance(transaction["token"], str) and transaction["token"]
    assert isinstance(transaction["redirect_url"], str)
    assert transaction["redirect_url"].endswith(transaction["token"])


def test_snap_create_transaction_max(snap):
    transaction = snap.create_transaction(_param_max())
    assert isinstance(transaction["token"], str)
    assert isinstance(transaction["redirect_url"], str)
    tx = SimTransaction.objects.get(token=transaction["token"])
    assert tx.order_id.endswith("-max") and " " in tx.order_id


def test_snap_create_transaction_token_and_redirect_url(snap):
    assert isinstance(snap.create_transaction_token(_param_min(_order_id("-a"))), str)
    assert isinstance(snap.create_transaction_redirect_url(_param_min(_order_id("-b"))), str)


def test_snap_status_fail_404(snap):
    err = _api_error(lambda: snap.transactions.status("non-exist-order-id"))
    assert "404" in err.message
    assert "exist" in err.message


def test_snap_request_fail_401(snap):
    snap.api_config.server_key = "dummy"
    err = _api_error(lambda: snap.create_transaction(_param_min()))
    assert "401" in err.message
    assert "unauthorized" in err.message
    assert err.http_status_code == 401
    assert SimTransaction.objects.count() == 0


def test_snap_request_fail_empty_param(snap):
    err = _api_error(lambda: snap.create_transaction(None))
    assert "400" in err.message
    assert "is required" in err.message
    assert SimTransaction.objects.count() == 0


def test_snap_request_fail_zero_gross_amount(snap):
    param = _param_min()
    param["transaction_details"]["gross_amount"] = 0
    err = _api_error(lambda: snap.create_transaction(param))
    assert err.http_status_code == 400
    assert SimTransaction.objects.count() == 0


def test_snap_exception_midtrans_api_error(snap):
    snap.api_config.server_key = "dummy"
    err = _api_error(lambda: snap.create_transaction(_param_min()))
    assert isinstance(err.message, str)
    assert isinstance(err.api_response_dict, dict)
    assert isinstance(err.http_status_code, int)


def test_snap_create_transaction_min_with_custom_headers_via_setter(snap):
    order_id = _order_id("-headers")
    snap.create_transaction(_param_min(order_id))
    snap.api_config.custom_headers = {"X-Override-Notification": "https://example.org"}
    # The same order id again before a method is chosen: a new token, as the client's test expects.
    transaction = snap.create_transaction(_param_min(order_id))
    assert isinstance(transaction["token"], str)
    tx = SimTransaction.objects.get(order_id=order_id)
    assert (tx.token, tx.notification_override_urls) == (transaction["token"], ["https://example.org"])


# --- Core API (tests/test_core_api.py) ------------------------------------------------------------


def _pending_va(snap, sim, suffix):
    """What the client's test gets from charging a BCA VA: a pending transaction."""
    order_id = f"py-midtransclient-test{suffix}-{datetime.now():%Y%m%d%H%M%S%f}"
    token = snap.create_transaction_token(_param_min(order_id))
    sim.choose(token, "bca_va")
    return order_id


def _captured_card(snap, sim, suffix):
    """What the client's test gets from charging a card: capture, fraud accept."""
    order_id = f"py-midtransclient-test{suffix}-{datetime.now():%Y%m%d%H%M%S%f}"
    sim.pay(snap.create_transaction_token(_param_min(order_id)), method="credit_card")
    return order_id


def test_core_api_status_and_notification(snap, core, sim):
    order_id = _pending_va(snap, sim, "1")
    response = core.transactions.status(order_id)
    assert int(response["status_code"]) == 201
    assert response["transaction_status"] == "pending"
    # notification() reads the status again by the body's transaction_id, from a dict or JSON text
    import json

    for notification in (response, json.dumps(response)):
        again = core.transactions.notification(notification)
        assert (int(again["status_code"]), again["transaction_status"]) == (201, "pending")


def test_core_api_expire(snap, core, sim):
    order_id = _pending_va(snap, sim, "1")
    response = core.transactions.expire(order_id)
    assert int(response["status_code"]) == 407  # data to the client, not an error
    assert response["transaction_status"] == "expire"


def test_core_api_approve_and_deny_fail_cannot_be_updated(snap, core, sim):
    order_id = _captured_card(snap, sim, "2")
    assert "412" in _api_error(lambda: core.transactions.approve(order_id)).message
    assert "412" in _api_error(lambda: core.transactions.deny(order_id)).message
    assert SimTransaction.objects.get(order_id=order_id).transaction_status == "capture"


def test_core_api_cancel_then_status_after_a_server_key_change(snap, core, sim):
    order_id = _captured_card(snap, sim, "2")
    response = core.transactions.cancel(order_id)
    assert int(response["status_code"]) == 200
    assert response["transaction_status"] == "cancel"

    # test_core_api_status_server_key_change_via_property
    keyless = _pointed_at(midtransclient.CoreApi(is_production=False, server_key="", client_key=""), sim)
    keyless.api_config.server_key = services.simulator_server_key()
    response = keyless.transactions.status(order_id)
    assert (int(response["status_code"]), response["transaction_status"]) == (200, "cancel")

    # test_core_api_status_server_key_change_via_setter
    assert "404" in _api_error(lambda: keyless.transactions.status("non-exist-order-id")).message
    keyless.api_config.set(is_production=True, server_key="abc")
    assert (keyless.api_config.is_production, keyless.api_config.server_key) == (True, "abc")
    assert "401" in _api_error(lambda: keyless.transactions.status(order_id)).message
    keyless.api_config.set(is_production=False, server_key=services.simulator_server_key())
    response = keyless.transactions.status(order_id)
    assert (int(response["status_code"]), response["transaction_status"]) == (200, "cancel")


def test_core_api_refund_fail_not_yet_settlement(snap, core, sim):
    order_id = _captured_card(snap, sim, "3")
    params = {"refund_key": "order1-ref1", "amount": 5000, "reason": "for some reason"}
    assert "412" in _api_error(lambda: core.transactions.refund(order_id, params)).message
    assert SimTransaction.objects.get(order_id=order_id).refunds == []


def test_core_api_status_fail_404_and_the_exception(core):
    err = _api_error(lambda: core.transactions.status("non-exist-order-id"))
    assert "404" in err.message
    assert "exist" in err.message
    assert isinstance(err.api_response_dict, dict)
    assert err.api_response_dict["status_message"] == "Transaction doesn't exist."
    assert isinstance(err.http_status_code, int)


# --- refund, which the client's tests only see refused -------------------------------------------


def test_core_api_refund_of_a_settled_payment(snap, core, sim):
    # given: a settled GoPay payment
    order_id = f"py-midtransclient-refund-{datetime.now():%Y%m%d%H%M%S%f}"
    sim.pay(snap.create_transaction_token(_param_min(order_id)), method="gopay")
    params = {"refund_key": "order1-ref1", "amount": 5000, "reason": "for some reason"}

    # when: refunded with an Idempotency-Key, then the same call repeated
    core.api_config.custom_headers = {"Idempotency-Key": "py-client-refund-1"}
    response = core.transactions.refund(order_id, params)
    again = core.transactions.refund(order_id, params)

    # then: the docs' response shape; the repeat is the first answer, not a second refund
    assert (int(response["status_code"]), response["status_message"]) == (200, "Success, refund request is approved")
    assert (response["transaction_status"], response["refund_amount"], response["refund_key"]) == (
        "partial_refund",
        "5000.00",
        "order1-ref1",
    )
    assert response["refund_chargeback_id"] == 1
    assert again == response
    assert SimIdempotencyKey.objects.filter(key="py-client-refund-1").count() == 1
    status = core.transactions.status(order_id)
    assert status["refund_amount"] == "5000.00"
    assert [(r["refund_key"], r["refund_method"]) for r in status["refunds"]] == [("order1-ref1", "online")]


# --- what the simulator does not serve: a Midtrans-shaped JSON error, never an HTML page -----------


@pytest.mark.parametrize("call", ["charge", "refund_direct", "statusb2b"])
def test_endpoints_the_simulator_does_not_serve_fail_as_api_errors(snap, core, sim, call):
    order_id = _captured_card(snap, sim, "4")
    action = {
        "charge": lambda: core.charge({"payment_type": "bank_transfer", "transaction_details": {"order_id": "x"}}),
        "refund_direct": lambda: core.transactions.refundDirect(order_id, {"refund_key": "r1", "amount": 5000}),
        "statusb2b": lambda: core.transactions.statusb2b(order_id),
    }[call]
    err = _api_error(action)  # the client parsed JSON: no JSONDecodeError
    assert err.http_status_code == 404
    assert "does not serve" in err.api_response_dict["status_message"]
    assert SimTransaction.objects.get(order_id=order_id).transaction_status == "capture"
