"""The simulator's API against the reference (../shared/reference/midtrans-api.md), over real HTTP."""

import base64
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from payments.simulator import services
from payments.simulator.models import SimApiCall, SimFault, SimTransaction

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "SB-Mid-server-TEST123"
ORDER = "BF-20260101-SIMTEST1-1"


def _auth(key=KEY, colon=True):
    raw = f"{key}:" if colon else key
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


def _payload(order_id=ORDER, amount=99000, items=None, **extra):
    body = {"transaction_details": {"order_id": order_id, "gross_amount": amount}}
    body["item_details"] = (
        items if items is not None else [{"id": "kelas", "name": "Buat Film Pakai AI", "price": amount, "quantity": 1}]
    )
    body.update(extra)
    return body


@pytest.fixture
def sim(midtrans_sim_alone):
    return midtrans_sim_alone


def _create(sim, payload, headers=None):
    return requests.post(
        f"{sim.base_url}/snap/v1/transactions",
        json=payload,
        headers={"Accept": "application/json", **(_auth() if headers is None else headers)},
        timeout=10,
    )


def _status(sim, order_id=ORDER, headers=None):
    return requests.get(
        f"{sim.base_url}/v2/{order_id}/status", headers=_auth() if headers is None else headers, timeout=10
    )


# --- Snap create ------------------------------------------------------------------------------------


def test_create_answers_201_with_token_and_redirect_url(sim):
    response = _create(sim, _payload())
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"token", "redirect_url"}
    assert body["redirect_url"].endswith(body["token"])
    assert SimTransaction.objects.get(order_id=ORDER).gross_amount == 99000


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no Authorization
        _auth("SB-Mid-server-WRONG"),
        _auth(KEY, colon=False),  # the colon is required
        {"Authorization": "Bearer " + KEY},
        {"Authorization": "Basic not-base64!"},
    ],
)
def test_create_with_bad_key_is_401_and_creates_nothing(sim, headers):
    response = _create(sim, _payload(), headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "error_messages": ["Access denied due to unauthorized transaction, please check client or server key"]
    }
    assert SimTransaction.objects.count() == 0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_payload(amount=99000.5, items=[]), "transaction_details.gross_amount must be an integer"),
        (_payload(amount=99000.0, items=[]), "transaction_details.gross_amount must be an integer"),
        (_payload(amount="99000", items=[]), "transaction_details.gross_amount must be an integer"),
        (_payload(amount=0, items=[]), "transaction_details.gross_amount must be greater than 0"),
        (_payload(amount=-5, items=[]), "transaction_details.gross_amount must be greater than 0"),
        (
            _payload(items=[{"name": "Kelas", "price": 90000, "quantity": 1}]),
            "transaction_details.gross_amount is not equal to the sum of item_details",
        ),
        (_payload(order_id="B" * 51), "transaction_details.order_id too long"),
        # Snap accepts more than the documented characters (a space, "#", "/"), but not these.
        (_payload(order_id="BF\t1"), "transaction_details.order_id contains invalid characters"),
        (_payload(order_id="BF-\u00e9"), "transaction_details.order_id contains invalid characters"),
        (_payload(order_id=""), "transaction_details.order_id is required"),
        ({"item_details": []}, "transaction_details is required"),
        (_payload(items=[{"name": "Kelas", "price": 99000, "quantity": 0}]), "item_details[0].quantity"),
        (_payload(items=[{"name": "Kelas", "price": 99000.0, "quantity": 1}]), "item_details[0].price"),
        (_payload(items=[{"price": 99000, "quantity": 1}]), "item_details[0].name is required"),
        (_payload(items=[{"name": "K" * 51, "price": 99000, "quantity": 1}]), "item_details[0].name too long"),
    ],
)
def test_create_validations_answer_400_error_messages_and_create_nothing(sim, payload, message):
    response = _create(sim, payload)
    assert response.status_code == 400
    messages = response.json()["error_messages"]
    assert any(m.startswith(message) for m in messages), messages
    assert SimTransaction.objects.count() == 0


def test_create_accepts_discount_items_that_sum_to_gross(sim):
    items = [
        {"id": "kelas", "name": "Kelas", "price": 100000, "quantity": 1},
        {"id": "diskon", "name": "Diskon", "price": -10000, "quantity": 1},
        {"id": "bonus", "name": "Modul", "price": 4500, "quantity": 2},
    ]
    assert _create(sim, _payload(amount=99000, items=items)).status_code == 201


def test_order_id_of_exactly_50_allowed_characters_is_accepted(sim):
    order_id = ("Ab9-_~." * 8)[:50]
    assert _create(sim, _payload(order_id=order_id)).status_code == 201


def test_same_order_id_before_a_method_is_chosen_gives_a_new_token_and_the_old_one_dies(sim):
    old = _create(sim, _payload()).json()
    new = _create(sim, _payload(amount=50000)).json()
    assert new["token"] != old["token"]
    assert requests.get(old["redirect_url"], timeout=10).status_code == 404
    assert requests.get(new["redirect_url"], timeout=10).status_code == 200
    assert SimTransaction.objects.get(order_id=ORDER).gross_amount == 50000


def test_reused_order_id_after_a_method_is_chosen_is_400_and_changes_nothing(sim):
    token = _create(sim, _payload()).json()["token"]
    sim.choose(token, "bca_va")
    before = SimTransaction.objects.values().get(order_id=ORDER)
    response = _create(sim, _payload(amount=1000, items=[]))
    assert response.status_code == 400
    assert response.json() == {"error_messages": ["transaction_details.order_id sudah digunakan"]}
    assert SimTransaction.objects.values().get(order_id=ORDER) == before

    sim.pay(token)
    response = _create(sim, _payload())
    assert response.json() == {
        "error_messages": ["transaction_details.order_id has been paid and utilized, please use another order ID"]
    }


def test_concurrent_creates_of_a_new_order_id_keep_one_row_with_an_answered_token(sim):
    # given: eight checkouts creating the same brand-new order id at once
    barrier = threading.Barrier(8)

    def create(_):
        barrier.wait()
        try:
            return services.snap_create(payload=_payload(), redirect_base="http://sim.test")
        finally:
            connection.close()

    # when
    with ThreadPoolExecutor(8) as pool:
        tokens = {answer["token"] for answer in pool.map(create, range(8))}

    # then: each got its own token (before a method is chosen a new one replaces the old),
    # and one row holds the token of whichever create came last
    assert len(tokens) == 8
    assert SimTransaction.objects.filter(order_id=ORDER).count() == 1
    assert SimTransaction.objects.get(order_id=ORDER).token in tokens


def test_invalid_json_is_400(sim):
    response = requests.post(
        f"{sim.base_url}/snap/v1/transactions",
        data=b"{not json",
        headers={**_auth(), "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error_messages"]
    assert SimTransaction.objects.count() == 0


# --- status --------------------------------------------------------------------------------------------


def test_status_is_http_200_body_404_unknown_and_before_method(sim):
    response = _status(sim, "BF-NOPE-1")
    assert response.status_code == 200
    body = response.json()
    assert (body["status_code"], body["status_message"]) == ("404", "Transaction doesn't exist.")
    assert body["id"]

    _create(sim, _payload())
    assert _status(sim).json()["status_code"] == "404"


def test_status_after_method_chosen_has_midtrans_formats(sim):
    token = _create(sim, _payload()).json()["token"]
    sim.choose(token, "bca_va")
    body = _status(sim).json()
    tx = SimTransaction.objects.get(order_id=ORDER)
    assert body["status_code"] == "201"
    assert body["status_message"] == "Success, transaction is found"
    assert body["transaction_status"] == "pending"
    assert body["gross_amount"] == "99000.00"
    assert body["currency"] == "IDR"
    assert body["payment_type"] == "bank_transfer"
    assert body["va_numbers"] == [{"bank": "bca", "va_number": tx.va_number}]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", body["transaction_time"])
    # GMT+7: the string is the Jakarta wall-clock time of the transaction.
    jakarta = datetime.strptime(body["transaction_time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo("Asia/Jakarta"))
    assert abs(jakarta - tx.transaction_time) < timedelta(seconds=1)
    assert body["transaction_id"] == tx.transaction_id
    # Also findable by transaction_id, as Midtrans allows.
    assert _status(sim, tx.transaction_id).json()["order_id"] == ORDER


def test_status_reads_the_transaction_exactly_as_stored(sim):
    # given: a settled, partly refunded GoPay payment (JSON columns, times, amounts all set)
    token = _create(sim, _payload(customer_details={"first_name": "Budi"})).json()["token"]
    sim.pay(token, "gopay")
    sim.trigger(ORDER, "partial_refund", refund_amount=10000)

    # when
    body = _status(sim).json()

    # then: the body is the stored row's, and the row read for it equals the ORM's
    stored = SimTransaction.objects.get(order_id=ORDER)
    assert body == services.transaction_body(stored, for_notification=False)
    assert body["refunds"] and body["refund_amount"] == "10000.00"
    read = services._find(ORDER)
    attnames = [field.attname for field in SimTransaction._meta.concrete_fields]
    assert {name: getattr(read, name) for name in attnames} == {name: getattr(stored, name) for name in attnames}
    assert read._state.adding is False


def test_every_api_call_is_logged_with_its_answer(sim):
    # given
    started = timezone.now()

    # when: a create, a status read, one with a wrong key, one for an over-long unknown id
    _create(sim, _payload())
    _status(sim)
    _status(sim, headers=_auth("SB-Mid-server-WRONG"))
    _status(sim, order_id="X" * 70)

    # then
    calls = list(SimApiCall.objects.order_by("id"))
    assert [(c.operation, c.order_id, c.http_status, c.fault) for c in calls] == [
        ("snap_create", ORDER, 201, ""),
        ("status", ORDER, 200, ""),
        ("status", ORDER, 401, ""),
        ("status", "X" * 64, 200, ""),
    ]
    assert all(started <= c.created_at <= timezone.now() for c in calls)


def test_status_with_bad_key_is_401(sim):
    response = _status(sim, headers=_auth("SB-Mid-server-WRONG"))
    assert response.status_code == 401
    assert response.json()["status_code"] == "401"


@pytest.mark.parametrize(
    ("method", "payment_type", "extra_fields"),
    [
        ("qris", "qris", {"acquirer", "issuer", "transaction_type"}),
        ("gopay", "gopay", set()),
        ("credit_card", "credit_card", {"masked_card", "card_type", "bank", "eci"}),
    ],
)
def test_status_fields_per_payment_type(sim, method, payment_type, extra_fields):
    token = _create(sim, _payload()).json()["token"]
    sim.choose(token, method)
    body = _status(sim).json()
    assert body["payment_type"] == payment_type
    assert extra_fields <= set(body)
    assert "va_numbers" not in body


# --- cancel, expire, refund -----------------------------------------------------------------------------


def _post(sim, action, order_id=ORDER, json=None):
    return requests.post(f"{sim.base_url}/v2/{order_id}/{action}", json=json, headers=_auth(), timeout=10)


def test_cancel_after_settlement_is_412_and_changes_nothing(sim):
    token = _create(sim, _payload()).json()["token"]
    sim.pay(token)
    response = _post(sim, "cancel")
    assert response.json()["status_code"] == "412"
    assert response.json()["status_message"] == "Merchant cannot modify the status of the transaction"
    assert SimTransaction.objects.get(order_id=ORDER).transaction_status == "settlement"
    assert _post(sim, "expire").json()["status_code"] == "412"
    assert SimTransaction.objects.get(order_id=ORDER).transaction_status == "settlement"


def test_cancel_of_card_capture_is_allowed(sim):
    token = _create(sim, _payload()).json()["token"]
    sim.pay(token, method="credit_card")
    assert SimTransaction.objects.get(order_id=ORDER).transaction_status == "capture"
    body = _post(sim, "cancel").json()
    assert (body["status_code"], body["transaction_status"]) == ("200", "cancel")


def test_expire_pending_answers_407(sim):
    token = _create(sim, _payload()).json()["token"]
    sim.choose(token, "bca_va")
    body = _post(sim, "expire").json()
    assert (body["status_code"], body["status_message"], body["transaction_status"]) == (
        "407",
        "Success, transaction has expired",
        "expire",
    )
    assert _status(sim).json()["status_code"] == "407"


def test_refund_before_settlement_is_412(sim):
    token = _create(sim, _payload()).json()["token"]
    sim.choose(token, "gopay")
    assert _post(sim, "refund", json={"refund_key": "a"}).json()["status_code"] == "412"
    tx = SimTransaction.objects.get(order_id=ORDER)
    assert (tx.transaction_status, tx.refunds) == ("pending", [])


def test_refund_reused_key_406_and_over_refund_414_change_nothing(sim):
    token = _create(sim, _payload()).json()["token"]
    sim.pay(token, method="qris")
    first = _post(sim, "refund", json={"refund_key": "k-1", "amount": 60000, "reason": "batal"}).json()
    assert (first["status_code"], first["transaction_status"], first["refund_amount"]) == (
        "200",
        "partial_refund",
        "60000.00",
    )
    before = SimTransaction.objects.values().get(order_id=ORDER)
    dup = _post(sim, "refund", json={"refund_key": "k-1", "amount": 60000}).json()
    assert (dup["status_code"], dup["status_message"]) == ("406", "Duplicate refund ID")
    over = _post(sim, "refund", json={"refund_key": "k-2", "amount": 40000}).json()
    assert over["status_code"] == "414"
    bad = _post(sim, "refund", json={"refund_key": "k-3", "amount": 10.5}).json()
    assert bad["status_code"] == "400"
    assert SimTransaction.objects.values().get(order_id=ORDER) == before

    rest = _post(sim, "refund", json={"refund_key": "k-4"}).json()
    assert (rest["transaction_status"], rest["refund_amount"]) == ("refund", "39000.00")
    body = _status(sim).json()
    assert body["refund_amount"] == "99000.00"
    assert [r["refund_amount"] for r in body["refunds"]] == ["60000.00", "39000.00"]


def test_refund_of_virtual_account_is_refused(sim):
    token = _create(sim, _payload()).json()["token"]
    sim.pay(token, method="bca_va")
    assert _post(sim, "refund", json={"refund_key": "a"}).json()["status_code"] == "412"


def test_actions_on_unknown_order_are_404(sim):
    for action in ("cancel", "expire", "refund"):
        assert _post(sim, action, order_id="BF-NOPE-1", json={}).json()["status_code"] == "404"


# --- Snap cancel ------------------------------------------------------------------------------------------


def test_snap_cancel_rules(sim):
    token = _create(sim, _payload()).json()["token"]
    url = f"{sim.base_url}/snap/v1/transactions/{token}/cancel"
    first = requests.post(url, headers=_auth(), timeout=10)
    assert first.status_code == 200 and first.json()["canceled_at"]
    again = requests.post(url, headers=_auth(), timeout=10)
    assert again.json() == {"error_messages": ["token already canceled"]}
    assert requests.post(f"{sim.base_url}/snap/v1/transactions/nope/cancel", headers=_auth(), timeout=10).json() == {
        "error_messages": ["token not found"]
    }

    token = _create(sim, _payload(order_id="BF-20260101-SIMTEST1-2")).json()["token"]
    sim.choose(token, "gopay")
    on_progress = requests.post(f"{sim.base_url}/snap/v1/transactions/{token}/cancel", headers=_auth(), timeout=10)
    assert on_progress.json() == {"error_messages": ["Transaction is on progress"]}
    assert SimTransaction.objects.get(order_id="BF-20260101-SIMTEST1-2").token_canceled_at is None


# --- faults -----------------------------------------------------------------------------------------------


def test_fault_endpoint_sets_reads_and_clears(sim):
    url = f"{sim.base_url}/_faults"
    assert requests.post(url, json={"down": True}, timeout=10).json()["down"] is True
    response = _status(sim)
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/html")
    assert requests.get(url, timeout=10).json()["down"] is True
    requests.delete(url, timeout=10)
    assert _status(sim).status_code == 200
    assert [c.fault for c in SimApiCall.objects.order_by("id")] == ["down", ""]


@pytest.mark.parametrize(
    "change",
    [{"error_rate": 2}, {"latency_ms": -1}, {"down": "yes"}, {"bogus": 1}, {"timeout_seconds": 0}, ["down"]],
)
def test_fault_endpoint_rejects_bad_values_and_changes_nothing(sim, change):
    url = f"{sim.base_url}/_faults"
    requests.post(url, json={"latency_ms": 5}, timeout=10)
    response = requests.post(url, json=change, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]
    fault = SimFault.objects.get(pk=1)
    assert (fault.latency_ms, fault.error_rate, fault.down, fault.timeout_seconds) == (5, 0.0, False, 30.0)


def test_fail_next_fails_exactly_n_calls(sim):
    sim.faults(fail_next=2)
    codes = [_status(sim).status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert _status(sim).json()["status_code"] == "404"


def test_fault_command(sim, capsys):
    call_command("midtrans_sim_faults", "--error-rate", "1", "--latency-ms", "10")
    assert '"error_rate": 1.0' in capsys.readouterr().out
    assert _status(sim).status_code == 500
    call_command("midtrans_sim_faults", "--reset")
    assert _status(sim).status_code == 200


def _fault_values():
    return {k: v for k, v in SimFault.objects.values().get(pk=1).items() if k != "updated_at"}


@pytest.mark.parametrize(
    "args",
    [
        ["--error-rate", "1.5"],
        ["--reset", "--error-rate", "5"],  # the reset must not happen before the bad value is seen
        ["--reset", "--latency-ms", "-1"],
        ["--reset", "--timeout-seconds", "0"],
    ],
)
def test_fault_command_bad_value_changes_nothing(sim, args):
    # Non-default faults first, so a reset that slipped through would show.
    call_command("midtrans_sim_faults", "--latency-ms", "7", "--error-rate", "0.25", "--timeout-seconds", "9")
    before = _fault_values()
    assert (before["latency_ms"], before["error_rate"], before["timeout_seconds"]) == (7, 0.25, 9.0)
    with pytest.raises(CommandError):
        call_command("midtrans_sim_faults", *args)
    assert _fault_values() == before


def test_fault_command_reset_and_set_together(sim, capsys):
    call_command("midtrans_sim_faults", "--latency-ms", "7", "--down")
    call_command("midtrans_sim_faults", "--reset", "--error-rate", "0.5")
    fault = SimFault.objects.get(pk=1)
    assert (fault.latency_ms, fault.down, fault.error_rate) == (0, False, 0.5)


def test_answer_status_429_for_the_next_calls_with_retry_after(sim):
    sim.faults(answer_status=429, answer_next=2, retry_after_seconds=3)
    first, second, third = (_status(sim) for _ in range(3))
    for response in (first, second):
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "3"
        assert response.json()["status_code"] == "429"
    assert third.status_code == 200
    assert [c.fault for c in SimApiCall.objects.order_by("id")] == ["answer_429", "answer_429", ""]
    sim.faults(answer_status=429, answer_next=1)
    snap = _create(sim, _payload())
    assert snap.status_code == 429 and snap.json()["error_messages"]
    assert SimTransaction.objects.count() == 0


def test_answer_status_404_is_spring_style_and_3xx_redirects(sim):
    sim.faults(answer_status=404, answer_next=1)
    response = _status(sim)
    assert response.status_code == 404
    assert {"timestamp", "status", "error", "path"} <= set(response.json())
    assert "status_code" not in response.json()

    sim.faults(answer_status=302, answer_next=1)
    response = requests.get(f"{sim.base_url}/v2/{ORDER}/status", headers=_auth(), timeout=10, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("https://")
    assert response.headers["Location"].endswith(f"/v2/{ORDER}/status")


def test_core_errors_as_http_statuses(sim):
    sim.faults(core_errors_as_http=True)
    unknown = _status(sim, "BF-NOPE-1")
    assert (unknown.status_code, unknown.json()["status_code"]) == (404, "404")
    token = _create(sim, _payload()).json()["token"]
    sim.pay(token, method="gopay")
    assert _post(sim, "refund", json={"refund_key": "k-1", "amount": 1000}).status_code == 200
    duplicate = _post(sim, "refund", json={"refund_key": "k-1", "amount": 1000})
    assert (duplicate.status_code, duplicate.json()["status_code"]) == (406, "406")
    wrong_state = _post(sim, "cancel")
    assert (wrong_state.status_code, wrong_state.json()["status_code"]) == (412, "412")
    other = "BF-20260101-SIMTEST1-2"
    sim.choose(_create(sim, _payload(order_id=other)).json()["token"], "gopay")
    expired = _post(sim, "expire", order_id=other)
    assert (expired.status_code, expired.json()["status_code"]) == (200, "407")  # a success, not an error


@pytest.mark.parametrize(
    "change",
    [
        {"answer_status": 500, "answer_next": 1},
        {"answer_next": 2},  # which status?
        {"answer_status": 429, "answer_next": -1},
        {"core_errors_as_http": "yes"},
        {"reset": "yes"},
    ],
)
def test_answer_faults_reject_bad_values_and_change_nothing(sim, change):
    url = f"{sim.base_url}/_faults"
    requests.post(url, json={"latency_ms": 5}, timeout=10)
    before = {k: v for k, v in SimFault.objects.values().get(pk=1).items() if k != "updated_at"}
    response = requests.post(url, json=change, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]
    assert {k: v for k, v in SimFault.objects.values().get(pk=1).items() if k != "updated_at"} == before


# --- the simulator is not served unless switched on --------------------------------------------------------


def test_simulator_urls_mounted_only_when_enabled():
    import importlib

    from django.test import override_settings
    from django.urls import clear_url_caches

    import buatfilm.urls

    with override_settings(MIDTRANS_SIMULATOR=False):
        module = importlib.reload(buatfilm.urls)
        assert not any(str(p.pattern) == "sandbox/midtrans/" for p in module.urlpatterns)
    module = importlib.reload(buatfilm.urls)
    clear_url_caches()
    assert any(str(p.pattern) == "sandbox/midtrans/" for p in module.urlpatterns)


def test_expiry_from_the_snap_request_is_honoured(sim):
    token = _create(sim, _payload(expiry={"unit": "minutes", "duration": 30})).json()["token"]
    before = timezone.now()
    sim.choose(token, "bca_va")
    tx = SimTransaction.objects.get(order_id=ORDER)
    assert timedelta(minutes=29) < tx.expiry_time - before < timedelta(minutes=31)


def test_pending_past_its_expiry_time_reads_as_expired_and_notifies(sim):
    token = _create(sim, _payload()).json()["token"]
    sim.choose(token, "gopay")
    SimTransaction.objects.filter(order_id=ORDER).update(expiry_time=timezone.now() - timedelta(seconds=1))
    body = _status(sim).json()
    assert (body["transaction_status"], body["status_code"]) == ("expire", "407")
    assert [n.payload["transaction_status"] for n in sim.notifications(ORDER)] == ["pending", "expire"]


def test_sender_round_expires_due_transactions(sim):
    from payments.simulator.services import transactions_expire_due

    sim.pause_deliveries()  # the sender thread would otherwise race this test to it
    token = _create(sim, _payload()).json()["token"]
    sim.choose(token, "gopay")
    assert transactions_expire_due() == 0
    SimTransaction.objects.filter(order_id=ORDER).update(expiry_time=timezone.now() - timedelta(seconds=1))
    assert transactions_expire_due() == 1
    assert SimTransaction.objects.get(order_id=ORDER).transaction_status == "expire"
