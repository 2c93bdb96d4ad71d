"""The Midtrans client against the simulator over real HTTP (live_server)."""

import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from payments import midtrans
from payments.simulator.models import SimApiCall, SimTransaction

ORDER = "BF-20260101-ABCDEFGH-1"
KEY = "SB-Mid-server-TEST123"


def _payload(order_id=ORDER, amount=99000, **extra):
    return {
        "transaction_details": {"order_id": order_id, "gross_amount": amount},
        "item_details": [{"id": "kelas", "name": "Buat Film Pakai AI", "price": amount, "quantity": 1}],
        "customer_details": {"first_name": "Budi", "email": "budi@example.com", "phone": "+6281234567890"},
        "callbacks": {"finish": "http://127.0.0.1:9/selesai"},
        **extra,
    }


def _sha512(*parts: str) -> str:
    return hashlib.sha512("".join(parts).encode()).hexdigest()


@pytest.fixture
def sim(transactional_db, midtrans_sim_alone, settings):
    # Only tests that talk to the simulator pay for a transactional database.
    settings.MIDTRANS_STATUS_RETRIES = 2
    settings.MIDTRANS_BREAKER_FAILURES = 50  # tests about the breaker lower it
    return midtrans_sim_alone


# --- signatures -----------------------------------------------------------------------------------


def test_signature_matches_reference_test_vector():
    expected = (
        "a3873b6d0fa5b7f7519b55b9ce7a3e7c88fa4f0247c29028bbff5aced17958bf"
        "152cbe71803bc32d809ca69a28bc84b88540ec226fb8a318fd303556c6367e89"
    )
    got = midtrans.signature_compute(order_id="ORDER-101", status_code="200", gross_amount="99000.00", server_key=KEY)
    assert got == expected
    assert midtrans.signature_verify(
        payload={"order_id": "ORDER-101", "status_code": "200", "gross_amount": "99000.00", "signature_key": expected},
        server_key=KEY,
    )


def test_signature_uses_configured_key_by_default(settings):
    settings.MIDTRANS_SERVER_KEY = KEY
    sig = _sha512("X-1", "201", "5000.00", KEY)
    assert midtrans.signature_compute(order_id="X-1", status_code="201", gross_amount="5000.00") == sig
    assert midtrans.signature_verify(
        payload={"order_id": "X-1", "status_code": "201", "gross_amount": "5000.00", "signature_key": sig}
    )


@pytest.mark.parametrize(
    "change",
    [
        {"gross_amount": "99000.0"},  # re-rendered amount: not verbatim
        {"gross_amount": "99001.00"},  # tampered amount
        {"status_code": 200},  # int, not the received string
        {"order_id": "ORDER-102"},
        {"signature_key": "0" * 128},
        {"signature_key": ""},
        {"signature_key": None},
        {"signature_key": "é" * 128},  # non-ASCII must not crash the constant-time compare
    ],
)
def test_signature_verify_rejects_anything_not_signed_verbatim(change):
    payload = {
        "order_id": "ORDER-101",
        "status_code": "200",
        "gross_amount": "99000.00",
        "signature_key": _sha512("ORDER-101", "200", "99000.00", KEY),
    }
    assert midtrans.signature_verify(payload=payload, server_key=KEY)
    payload.update(change)
    assert not midtrans.signature_verify(payload=payload, server_key=KEY)


@pytest.mark.parametrize("missing", ["order_id", "status_code", "gross_amount", "signature_key"])
def test_signature_verify_false_on_missing_field(missing):
    payload = {
        "order_id": "ORDER-101",
        "status_code": "200",
        "gross_amount": "99000.00",
        "signature_key": _sha512("ORDER-101", "200", "99000.00", KEY),
    }
    del payload[missing]
    assert midtrans.signature_verify(payload=payload, server_key=KEY) is False


def test_signature_verify_false_for_wrong_key_and_non_dict():
    sig = _sha512("ORDER-101", "200", "99000.00", KEY)
    payload = {"order_id": "ORDER-101", "status_code": "200", "gross_amount": "99000.00", "signature_key": sig}
    assert not midtrans.signature_verify(payload=payload, server_key="SB-Mid-server-OTHER")
    assert not midtrans.signature_verify(payload=payload, server_key="")
    assert not midtrans.signature_verify(payload=["not", "a", "dict"], server_key=KEY)


# --- Snap create and status -------------------------------------------------------------------------


def test_snap_create_then_status_is_404_data_until_a_method_is_chosen(sim):
    snap = midtrans.snap_create(payload=_payload())
    assert snap.token
    assert snap.redirect_url == f"{sim.base_url}/snap/v4/redirection/{snap.token}"

    body = midtrans.transaction_status(midtrans_order_id=ORDER)
    assert body["status_code"] == "404"
    assert "transaction_status" not in body

    sim.choose(snap.token, "bca_va")
    body = midtrans.transaction_status(midtrans_order_id=ORDER)
    assert (body["status_code"], body["transaction_status"], body["gross_amount"]) == ("201", "pending", "99000.00")
    assert body["va_numbers"][0]["bank"] == "bca"
    assert midtrans.signature_verify(payload=body)
    assert body["signature_key"] == _sha512(ORDER, "201", "99000.00", KEY)


def test_expired_status_407_is_data_not_an_error(sim):
    snap = midtrans.snap_create(payload=_payload())
    sim.expire(snap.token)
    body = midtrans.transaction_status(midtrans_order_id=ORDER)
    assert (body["status_code"], body["transaction_status"]) == ("407", "expire")


def test_unauthorized_key_raises_typed_error_and_creates_nothing(sim, settings):
    settings.MIDTRANS_SIMULATOR_SERVER_KEY = "SB-Mid-server-WHAT-MIDTRANS-HAS"
    with pytest.raises(midtrans.MidtransUnauthorized) as exc:
        midtrans.snap_create(payload=_payload())
    assert exc.value.http_status == 401
    assert exc.value.operation == "snap_create"
    assert exc.value.midtrans_order_id == ORDER
    assert "unauthorized" in exc.value.messages[0]
    assert SimTransaction.objects.count() == 0
    with pytest.raises(midtrans.MidtransUnauthorized):
        midtrans.transaction_status(midtrans_order_id=ORDER)


def test_validation_error_carries_midtrans_messages_and_creates_nothing(sim):
    payload = _payload()
    payload["item_details"][0]["price"] = 98000
    with pytest.raises(midtrans.MidtransValidationError) as exc:
        midtrans.snap_create(payload=payload)
    assert not isinstance(exc.value, midtrans.MidtransDuplicateOrderId)
    assert exc.value.http_status == 400
    assert exc.value.messages == ["transaction_details.gross_amount is not equal to the sum of item_details"]
    assert SimTransaction.objects.count() == 0


def test_reused_order_id_after_method_chosen_is_duplicate_order_id(sim):
    first = midtrans.snap_create(payload=_payload())
    # Before a method is chosen the same id gives a new token (the old one dies).
    second = midtrans.snap_create(payload=_payload())
    assert second.token != first.token
    sim.choose(second.token, "gopay")
    with pytest.raises(midtrans.MidtransDuplicateOrderId) as exc:
        midtrans.snap_create(payload=_payload())
    assert isinstance(exc.value, midtrans.MidtransValidationError)
    assert exc.value.messages == ["transaction_details.order_id sudah digunakan"]
    assert SimTransaction.objects.get(order_id=ORDER).token == second.token

    sim.pay(second.token)
    with pytest.raises(midtrans.MidtransDuplicateOrderId) as exc:
        midtrans.snap_create(payload=_payload())
    assert "paid and utilized" in exc.value.messages[0]


def test_http_404_is_not_found(sim):
    with pytest.raises(midtrans.MidtransNotFound) as exc:
        midtrans.snap_cancel(token="no-such-token")
    assert exc.value.http_status == 404
    assert exc.value.messages == ["token not found"]


def test_status_read_http_404_with_midtrans_body_is_data(sim):
    # Midtrans' own "Transaction doesn't exist" body, delivered with HTTP 404 instead of 200.
    sim.faults(core_errors_as_http=True)
    body = midtrans.transaction_status(midtrans_order_id=ORDER)
    assert (body["status_code"], body["status_message"]) == ("404", "Transaction doesn't exist.")
    assert [c.http_status for c in sim.api_calls("status")] == [404]
    # An action on an unknown transaction is still an error.
    with pytest.raises(midtrans.MidtransNotFound) as exc:
        midtrans.transaction_cancel(midtrans_order_id=ORDER)
    assert (exc.value.http_status, exc.value.status_code) == (404, "404")


def test_status_read_spring_style_or_non_json_404_is_not_found(sim, settings):
    sim.faults(answer_status=404, answer_next=1)  # {"timestamp", "status": 404, "error": "Not Found", "path"}
    with pytest.raises(midtrans.MidtransNotFound) as exc:
        midtrans.transaction_status(midtrans_order_id=ORDER)
    assert exc.value.http_status == 404
    assert [c.http_status for c in sim.api_calls("status")] == [404]  # not retried
    settings.MIDTRANS_API_URL = f"{sim.live_url}/no-such-prefix"  # Django's HTML 404 page
    with pytest.raises(midtrans.MidtransNotFound):
        midtrans.transaction_status(midtrans_order_id=ORDER)
    assert midtrans.circuit_state()["failures"] == 0


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_redirect_is_a_configuration_error_never_success_nor_breaker_failure(sim, settings, code):
    settings.MIDTRANS_BREAKER_FAILURES = 1
    sim.faults(answer_status=code, answer_next=1)
    with pytest.raises(midtrans.MidtransConfigurationError) as exc:
        midtrans.transaction_status(midtrans_order_id=ORDER)
    assert exc.value.http_status == code
    assert exc.value.location.startswith("https://")
    assert not isinstance(exc.value, midtrans.MidtransUnavailable)
    assert [c.http_status for c in sim.api_calls("status")] == [code]  # not retried
    assert midtrans.circuit_state()["core"] == {"state": "closed", "failures": 0, "opened_at": None}

    sim.faults(answer_status=code, answer_next=1)
    with pytest.raises(midtrans.MidtransConfigurationError):
        midtrans.snap_create(payload=_payload())
    assert SimTransaction.objects.count() == 0
    assert midtrans.circuit_state()["state"] == "closed"


def test_action_on_unknown_transaction_is_not_found(sim):
    with pytest.raises(midtrans.MidtransNotFound) as exc:
        midtrans.transaction_cancel(midtrans_order_id="BF-UNKNOWN-1")
    assert exc.value.status_code == "404"


def test_ids_are_url_encoded(sim):
    body = midtrans.transaction_status(midtrans_order_id="BF-1?x=y#z")
    assert body["status_code"] == "404"
    assert SimApiCall.objects.get(operation="status").order_id == "BF-1?x=y#z"


# --- cancel, expire, refund --------------------------------------------------------------------------


def test_cancel_expire_and_wrong_state(sim):
    snap = midtrans.snap_create(payload=_payload())
    sim.choose(snap.token, "bca_va")
    body = midtrans.transaction_cancel(midtrans_order_id=ORDER)
    assert (body["status_code"], body["transaction_status"]) == ("200", "cancel")
    with pytest.raises(midtrans.MidtransWrongState) as exc:
        midtrans.transaction_expire(midtrans_order_id=ORDER)
    assert exc.value.status_code == "412"
    assert exc.value.messages == ["Merchant cannot modify the status of the transaction"]
    assert SimTransaction.objects.get(order_id=ORDER).transaction_status == "cancel"

    other = "BF-20260101-ABCDEFGH-2"
    snap = midtrans.snap_create(payload=_payload(order_id=other))
    sim.choose(snap.token, "qris")
    body = midtrans.transaction_expire(midtrans_order_id=other)
    assert (body["status_code"], body["transaction_status"]) == ("407", "expire")


def _idempotency_keys_expire():
    """Five minutes pass: Midtrans forgets every Idempotency-Key."""
    from django.utils import timezone

    from payments.simulator.models import SimIdempotencyKey

    return SimIdempotencyKey.objects.update(expires_at=timezone.now())


def test_refund_retried_with_its_key_replays_the_first_result_then_is_duplicate(sim):
    snap = midtrans.snap_create(payload=_payload())
    sim.pay(snap.token, method="gopay")
    body = midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-1", amount=40000, reason="minta")
    assert (body["status_code"], body["transaction_status"], body["refund_amount"]) == (
        "200",
        "partial_refund",
        "40000.00",
    )
    # A retry of the same refund sends the same Idempotency-Key: Midtrans replays the first answer.
    assert midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-1", amount=40000) == body
    assert len(SimTransaction.objects.get(order_id=ORDER).refunds) == 1
    # Once the key is forgotten, the refund_key still stops a second refund.
    assert _idempotency_keys_expire() == 1
    with pytest.raises(midtrans.MidtransDuplicateRefundKey) as exc:
        midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-1", amount=40000)
    assert exc.value.status_code == "406"
    tx = SimTransaction.objects.get(order_id=ORDER)
    assert (tx.refund_amount, len(tx.refunds)) == (40000, 1)

    body = midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-2")
    assert body["transaction_status"] == "refund"
    assert midtrans.transaction_status(midtrans_order_id=ORDER)["refund_amount"] == "99000.00"


def test_core_api_errors_delivered_as_http_4xx_map_to_the_same_errors(sim, settings):
    settings.MIDTRANS_BREAKER_FAILURES = 1
    sim.faults(core_errors_as_http=True)  # 412/406/414 as HTTP statuses, not HTTP 200 + body code
    snap = midtrans.snap_create(payload=_payload())
    sim.pay(snap.token, method="gopay")
    midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-1", amount=40000)
    _idempotency_keys_expire()  # else the repeat below is answered with the first call's success

    with pytest.raises(midtrans.MidtransDuplicateRefundKey) as exc:
        midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-1", amount=40000)
    assert (exc.value.http_status, exc.value.status_code, exc.value.messages) == (406, "406", ["Duplicate refund ID"])
    with pytest.raises(midtrans.MidtransWrongState) as exc:
        midtrans.transaction_cancel(midtrans_order_id=ORDER)
    assert (exc.value.http_status, exc.value.status_code) == (412, "412")
    assert exc.value.messages == ["Merchant cannot modify the status of the transaction"]
    with pytest.raises(midtrans.MidtransError) as exc:
        midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-2", amount=90000)
    assert (type(exc.value), exc.value.http_status, exc.value.status_code) == (midtrans.MidtransError, 414, "414")

    assert [c.http_status for c in sim.api_calls() if c.operation != "snap_create"] == [200, 406, 412, 414]
    tx = SimTransaction.objects.get(order_id=ORDER)
    assert (tx.transaction_status, tx.refund_amount) == ("partial_refund", 40000)
    assert midtrans.circuit_state()["state"] == "closed"  # answers, not outages


def test_refund_of_virtual_account_is_wrong_state(sim):
    snap = midtrans.snap_create(payload=_payload())
    sim.pay(snap.token, method="bca_va")
    with pytest.raises(midtrans.MidtransWrongState):
        midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-1")
    assert SimTransaction.objects.get(order_id=ORDER).transaction_status == "settlement"


def test_refund_amount_must_be_positive_int():
    with pytest.raises(ValueError):
        midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="k", amount=0)
    with pytest.raises(ValueError):
        midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="k", amount=1000.0)


@pytest.mark.parametrize("refund_key", ["", "   ", "k" * 101, None, 12345])
def test_refund_key_empty_or_too_long_is_refused_before_any_call(sim, refund_key):
    snap = midtrans.snap_create(payload=_payload())
    sim.pay(snap.token, method="gopay")
    before = SimTransaction.objects.values().get(order_id=ORDER)
    with pytest.raises(ValueError, match="refund_key"):
        midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key=refund_key, amount=1000)
    assert sim.api_calls("refund") == []
    assert SimTransaction.objects.values().get(order_id=ORDER) == before
    # The longest allowed key goes through.
    body = midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="k" * 100, amount=1000)
    assert body["refund_key"] == "k" * 100


def test_snap_cancel(sim):
    snap = midtrans.snap_create(payload=_payload())
    assert "canceled_at" in midtrans.snap_cancel(token=snap.token)
    with pytest.raises(midtrans.MidtransWrongState) as exc:
        midtrans.snap_cancel(token=snap.token)
    assert exc.value.messages == ["token already canceled"]


# --- server errors, retries, timeouts ---------------------------------------------------------------


def test_snap_create_is_never_retried(sim):
    sim.faults(fail_next=1)
    with pytest.raises(midtrans.MidtransServerError) as exc:
        midtrans.snap_create(payload=_payload())
    assert exc.value.http_status == 500
    assert [(c.order_id, c.http_status) for c in sim.api_calls("snap_create")] == [(ORDER, 500)]
    assert SimTransaction.objects.count() == 0


@pytest.mark.parametrize("operation", ["cancel", "expire", "refund"])
def test_actions_are_never_retried(sim, operation):
    snap = midtrans.snap_create(payload=_payload())
    sim.pay(snap.token, method="gopay") if operation == "refund" else sim.choose(snap.token, "gopay")
    sim.faults(fail_next=1)
    call = {
        "cancel": lambda: midtrans.transaction_cancel(midtrans_order_id=ORDER),
        "expire": lambda: midtrans.transaction_expire(midtrans_order_id=ORDER),
        "refund": lambda: midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf"),
    }[operation]
    with pytest.raises(midtrans.MidtransServerError):
        call()
    assert [c.http_status for c in sim.api_calls(operation)] == [500]


def test_status_read_is_retried_and_succeeds(sim):
    sim.faults(fail_next=2)
    body = midtrans.transaction_status(midtrans_order_id=ORDER)
    assert body["status_code"] == "404"
    assert [c.http_status for c in sim.api_calls("status")] == [500, 500, 200]


def test_status_read_retries_are_bounded(sim, settings):
    settings.MIDTRANS_STATUS_RETRIES = 1
    sim.faults(error_rate=1.0)
    with pytest.raises(midtrans.MidtransServerError):
        midtrans.transaction_status(midtrans_order_id=ORDER)
    assert len(sim.api_calls("status")) == 2


def test_non_json_answer_is_server_error(sim, settings):
    settings.MIDTRANS_STATUS_RETRIES = 0
    sim.faults(down=True)
    with pytest.raises(midtrans.MidtransServerError) as exc:
        midtrans.transaction_status(midtrans_order_id=ORDER)
    assert exc.value.http_status == 503
    assert isinstance(exc.value, midtrans.MidtransUnavailable)


def test_read_timeout_raises_timeout(sim, settings):
    settings.MIDTRANS_STATUS_RETRIES = 0
    sim.faults(timeout=True, timeout_seconds=1.0)
    with pytest.raises(midtrans.MidtransTimeout) as exc:
        midtrans.transaction_status(midtrans_order_id=ORDER, timeout=0.2)
    assert exc.value.http_status is None
    assert isinstance(exc.value, midtrans.MidtransUnavailable)
    # Let the held request finish so it does not write into the next test.
    deadline = time.monotonic() + 10
    while not SimApiCall.objects.filter(fault="timeout").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert SimApiCall.objects.filter(fault="timeout").count() == 1


def test_status_read_429_waits_retry_after_then_retries(sim, settings):
    settings.MIDTRANS_BREAKER_FAILURES = 1
    sim.faults(answer_status=429, answer_next=1, retry_after_seconds=1)
    body = midtrans.transaction_status(midtrans_order_id=ORDER)
    assert body["status_code"] == "404"
    first, second = sim.api_calls("status")
    assert (first.http_status, second.http_status) == (429, 200)
    # Midtrans asked for a second: the retry did not come earlier.
    assert (second.created_at - first.created_at).total_seconds() >= 1.0
    assert midtrans.circuit_state()["core"]["state"] == "closed"


def test_429_is_rate_limited_unavailable_and_never_opens_the_breaker(sim, settings):
    settings.MIDTRANS_BREAKER_FAILURES = 1
    # Retry-After beyond the read's budget (3 tries x 2 s): no retry, fail fast.
    sim.faults(answer_status=429, answer_next=3, retry_after_seconds=30)
    with pytest.raises(midtrans.MidtransRateLimited) as exc:
        midtrans.transaction_status(midtrans_order_id=ORDER)
    assert isinstance(exc.value, midtrans.MidtransUnavailable)
    assert (exc.value.http_status, exc.value.retry_after, exc.value.status_code) == (429, 30.0, "429")
    assert [c.http_status for c in sim.api_calls("status")] == [429]
    # Snap create is never retried; a throttled Snap answers at once too.
    with pytest.raises(midtrans.MidtransRateLimited) as exc:
        midtrans.snap_create(payload=_payload())
    assert exc.value.messages == ["Too many requests, please slow down"]
    assert SimTransaction.objects.count() == 0
    state = midtrans.circuit_state()
    assert (state["snap"]["failures"], state["core"]["failures"], state["state"]) == (0, 0, "closed")


def test_retry_after_header_forms():
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    assert midtrans._retry_after_seconds("7") == 7.0
    assert midtrans._retry_after_seconds(None) is None
    assert midtrans._retry_after_seconds("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < midtrans._retry_after_seconds(later) <= 30
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert midtrans._retry_after_seconds(earlier) == 0.0


def _wait_for_held_calls(count, timeout=10.0):
    # The simulator finishes a request the client gave up on later; let it write its row
    # before the database is flushed.
    deadline = time.monotonic() + timeout
    while SimApiCall.objects.filter(operation="status").count() < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_webhook_status_budget_is_a_hard_limit(sim, settings, caplog):
    from payments.services.events import status_confirm

    # 5 tries of 0.3 s each would fill the 1.5 s budget alone; backoff between them comes on top.
    settings.WEBHOOK_STATUS_BUDGET = 1.5
    settings.MIDTRANS_STATUS_RETRIES = 4
    sim.faults(latency_ms=400)  # every try times out
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="payments.midtrans"), pytest.raises(midtrans.MidtransTimeout):
        status_confirm(midtrans_order_id=ORDER)
    elapsed = time.monotonic() - started
    # A timeout behaviour, not a speed figure: the budget plus a small margin for the last answer.
    assert elapsed < 1.5 + 0.25, elapsed
    tries = [r for r in caplog.records if r.getMessage() == "midtrans_call"]
    assert 1 <= len(tries) < 5  # what did not fit was skipped
    assert midtrans.circuit_state()["core"]["failures"] == 1
    _wait_for_held_calls(len(tries))


def test_status_budget_cuts_a_try_to_the_time_left(sim, settings):
    settings.MIDTRANS_STATUS_RETRIES = 2
    sim.faults(latency_ms=800)
    started = time.monotonic()
    with pytest.raises(midtrans.MidtransTimeout):
        # Per-try timeout 2 s, but only 0.5 s for everything.
        midtrans.transaction_status(midtrans_order_id=ORDER, timeout=2.0, budget=0.5)
    assert time.monotonic() - started < 0.5 + 0.25
    _wait_for_held_calls(1)
    assert len(sim.api_calls("status")) == 1


def test_connection_refused_is_timeout(settings):
    settings.MIDTRANS_SNAP_URL = "http://127.0.0.1:9"
    with pytest.raises(midtrans.MidtransTimeout):
        midtrans.snap_create(payload=_payload())


# --- circuit breaker ---------------------------------------------------------------------------------


def test_breaker_opens_fails_fast_and_closes_after_good_probe(sim, settings):
    settings.MIDTRANS_BREAKER_FAILURES = 3
    settings.MIDTRANS_BREAKER_COOLDOWN = 600
    settings.MIDTRANS_STATUS_RETRIES = 0
    sim.faults(error_rate=1.0)
    for _ in range(2):
        with pytest.raises(midtrans.MidtransServerError):
            midtrans.transaction_status(midtrans_order_id=ORDER)
    assert midtrans.circuit_state()["state"] == "closed"
    with pytest.raises(midtrans.MidtransServerError):
        midtrans.transaction_status(midtrans_order_id=ORDER)
    state = midtrans.circuit_state()
    assert (state["state"], state["failures"]) == ("open", 3)
    assert state["opened_at"]
    assert state["core"] == {key: state[key] for key in ("state", "failures", "opened_at")}
    assert state["snap"]["state"] == "closed"  # only the Core API failed

    # Open: fails fast, no HTTP call reaches Midtrans.
    refused_before = refused_count("core", "circuit_open")
    with pytest.raises(midtrans.MidtransCircuitOpen) as exc:
        midtrans.transaction_cancel(midtrans_order_id=ORDER)
    assert refused_count("core", "circuit_open") == refused_before + 1
    assert (exc.value.operation, exc.value.breaker) == ("cancel", "core")
    assert 590 < exc.value.retry_after <= 600
    assert len(sim.api_calls()) == 3

    # Cool-down over: the next call is the probe; a failing probe opens the circuit again.
    settings.MIDTRANS_BREAKER_COOLDOWN = 0
    assert midtrans.circuit_state()["state"] == "half_open"
    with pytest.raises(midtrans.MidtransServerError):
        midtrans.transaction_status(midtrans_order_id=ORDER)
    settings.MIDTRANS_BREAKER_COOLDOWN = 600
    assert midtrans.circuit_state()["state"] == "open"
    assert len(sim.api_calls()) == 4

    # A good probe closes it.
    settings.MIDTRANS_BREAKER_COOLDOWN = 0
    sim.faults_reset()
    assert midtrans.transaction_status(midtrans_order_id=ORDER)["status_code"] == "404"
    closed = {"state": "closed", "failures": 0, "opened_at": None}
    assert midtrans.circuit_state() == {**closed, "snap": closed, "core": closed}
    midtrans.snap_create(payload=_payload())


def test_a_status_read_counts_one_failure_after_its_retries(sim, settings):
    settings.MIDTRANS_BREAKER_FAILURES = 3
    settings.MIDTRANS_BREAKER_COOLDOWN = 600
    settings.MIDTRANS_STATUS_RETRIES = 2
    sim.faults(error_rate=1.0)
    for calls in (1, 2):
        with pytest.raises(midtrans.MidtransServerError):
            midtrans.transaction_status(midtrans_order_id=ORDER)
        assert len(sim.api_calls("status")) == 3 * calls  # every try reached Midtrans
        assert midtrans.circuit_state()["core"] == {"state": "closed", "failures": calls, "opened_at": None}
    # A read whose retry succeeds is a success: it resets the count.
    sim.faults(error_rate=0.0, fail_next=2)
    assert midtrans.transaction_status(midtrans_order_id=ORDER)["status_code"] == "404"
    assert midtrans.circuit_state()["core"]["failures"] == 0
    sim.faults(error_rate=1.0)
    for _ in range(3):
        with pytest.raises(midtrans.MidtransServerError):
            midtrans.transaction_status(midtrans_order_id=ORDER)
    assert midtrans.circuit_state()["core"]["state"] == "open"  # after three failed calls, not three tries


@pytest.fixture
def checkout_api(transactional_db, midtrans_sim):
    from rest_framework.test import APIClient

    from payments.tests.checkout_support import launch_package_ensure

    launch_package_ensure()
    client = APIClient()
    client.sim = midtrans_sim
    return client


def test_snap_breaker_stays_closed_while_the_core_api_fails(checkout_api, settings):
    from payments.models import Order, OrderStatus
    from payments.tests.checkout_support import checkout_body

    settings.MIDTRANS_BREAKER_FAILURES = 2
    settings.MIDTRANS_BREAKER_COOLDOWN = 600
    settings.MIDTRANS_STATUS_RETRIES = 0
    settings.MIDTRANS_API_URL = "http://127.0.0.1:9"  # the Core API host is unreachable; Snap is fine
    for _ in range(3):
        with pytest.raises(midtrans.MidtransUnavailable):
            midtrans.transaction_status(midtrans_order_id=ORDER)
    state = midtrans.circuit_state()
    assert (state["state"], state["core"]["state"], state["snap"]["state"]) == ("open", "open", "closed")

    # Checkout needs only Snap: it still works.
    response = checkout_api.post("/api/checkout/", checkout_body(), format="json")
    assert response.status_code in (200, 201), response.content
    assert Order.objects.get().status == OrderStatus.PENDING_PAYMENT
    assert [c.http_status for c in checkout_api.sim.api_calls("snap_create")] == [201]

    # /health shows both breakers, the worse one at the top.
    health = checkout_api.get("/health").json()
    circuit = health["checks"]["midtrans_circuit"]
    assert (circuit["ok"], circuit["state"], circuit["core"]["state"], circuit["snap"]["state"]) == (
        False,
        "open",
        "open",
        "closed",
    )
    assert health["status"] == "degraded"


def test_half_open_lets_only_one_probe_through(sim, settings):
    settings.MIDTRANS_BREAKER_FAILURES = 1
    settings.MIDTRANS_STATUS_RETRIES = 0
    sim.faults(fail_next=1)
    with pytest.raises(midtrans.MidtransServerError):
        midtrans.transaction_status(midtrans_order_id=ORDER)
    settings.MIDTRANS_BREAKER_COOLDOWN = 0
    assert midtrans._circuit_admit(midtrans.CORE) is True  # another process took the probe
    with pytest.raises(midtrans.MidtransCircuitOpen):
        midtrans.transaction_status(midtrans_order_id=ORDER)
    assert len(sim.api_calls("status")) == 1


def test_client_errors_do_not_count_as_failures(sim, settings):
    settings.MIDTRANS_BREAKER_FAILURES = 2
    settings.MIDTRANS_SIMULATOR_SERVER_KEY = "SB-Mid-server-OTHER"
    for _ in range(3):
        with pytest.raises(midtrans.MidtransUnauthorized):
            midtrans.transaction_status(midtrans_order_id=ORDER)
    assert midtrans.circuit_state()["state"] == "closed"


def test_breaker_state_is_shared_with_other_processes(sim, settings):
    settings.MIDTRANS_BREAKER_FAILURES = 1
    settings.MIDTRANS_STATUS_RETRIES = 0
    sim.faults(fail_next=1)
    with pytest.raises(midtrans.MidtransServerError):
        midtrans.transaction_status(midtrans_order_id=ORDER)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "buatfilm.testing",
        "CACHE_KEY_PREFIX": settings.CACHE_KEY_PREFIX,
        "REDIS_URL": settings.REDIS_URL,
        "MIDTRANS_BREAKER_COOLDOWN": "600",
    }
    code = "import django; django.setup(); from payments import midtrans; print(midtrans.circuit_state()['state'])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "open"


def test_breaker_without_cache_behaves_closed_and_stops_asking_the_cache(sim, settings, monkeypatch, caplog):
    monkeypatch.setattr(midtrans, "_cache_down_until", 0.0)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    with caplog.at_level(logging.WARNING, logger="payments.midtrans"):
        assert midtrans.transaction_status(midtrans_order_id=ORDER)["status_code"] == "404"
        assert midtrans.transaction_status(midtrans_order_id=ORDER)["status_code"] == "404"
        assert midtrans.circuit_state()["state"] == "closed"
    # One failed cache lookup, then the cache is left alone for a while.
    assert [r.getMessage() for r in caplog.records].count("midtrans_circuit_cache_unavailable") == 1
    assert midtrans._cache_down_until > time.monotonic()


def _success_elsewhere():
    # What another process's successful call does to the breaker's keys.
    from django.core.cache import cache

    cache.delete_many(list(midtrans._cb_keys(midtrans.CORE)))


@pytest.mark.parametrize("backend", ["redis", "locmem"])
def test_failure_count_survives_a_concurrent_reset_and_the_cache_is_not_declared_down(
    settings, monkeypatch, caplog, backend
):
    from django.core.cache import cache, caches

    if backend == "locmem":
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    monkeypatch.setattr(midtrans, "_cache_down_until", 0.0)
    settings.MIDTRANS_BREAKER_FAILURES = 50
    settings.MIDTRANS_BREAKER_COOLDOWN = 600
    # Deterministic interleaving: another process's success lands right after this process's
    # first write of the failure (between an add() and an incr(), where the old code had them).
    backend_class = type(caches["default"])
    real_add = backend_class.add
    interleaved = []

    def add_then_success_elsewhere(self, key, *args, **kwargs):
        added = real_add(self, key, *args, **kwargs)
        if key == midtrans._cb_keys(midtrans.CORE)[0] and not interleaved:
            interleaved.append(key)
            _success_elsewhere()
        return added

    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, logger="payments.midtrans"):
        patch.setattr(backend_class, "add", add_then_success_elsewhere)
        midtrans._circuit_failure(midtrans.CORE, probe=False)

    assert midtrans._cache_down_until == 0.0
    assert "midtrans_circuit_cache_unavailable" not in [r.getMessage() for r in caplog.records]
    assert midtrans.circuit_state()["core"]["failures"] == 1
    # The cache is still trusted: an open breaker is honoured.
    cache.set(midtrans._cb_keys(midtrans.CORE)[1], time.time(), 600)
    with pytest.raises(midtrans.MidtransCircuitOpen):
        midtrans._circuit_admit(midtrans.CORE)


def test_failures_racing_resets_in_threads_never_declare_the_cache_down(settings, monkeypatch, caplog):
    import threading

    monkeypatch.setattr(midtrans, "_cache_down_until", 0.0)
    settings.MIDTRANS_BREAKER_FAILURES = 1_000_000

    def failures():
        for _ in range(300):
            midtrans._circuit_failure(midtrans.CORE, probe=False)

    def resets():
        for _ in range(300):
            _success_elsewhere()

    with caplog.at_level(logging.WARNING, logger="payments.midtrans"):
        threads = [threading.Thread(target=failures), threading.Thread(target=resets)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert midtrans._cache_down_until == 0.0
    assert "midtrans_circuit_cache_unavailable" not in [r.getMessage() for r in caplog.records]
    assert 0 <= midtrans.circuit_state()["core"]["failures"] <= 300


# --- call slots ----------------------------------------------------------------------------------


def refused_count(breaker: str, reason: str) -> float:
    """buatfilm_midtrans_calls_refused_total for these labels, as /metrics reports it."""
    from common.metrics import REGISTRY

    return (
        REGISTRY.get_sample_value("buatfilm_midtrans_calls_refused_total", {"breaker": breaker, "reason": reason})
        or 0.0
    )


@pytest.fixture
def slots_taken(settings):
    """Every call slot of this process held, as by calls in flight to a slow Midtrans; yields
    a function that gives one back."""
    settings.MIDTRANS_MAX_CONCURRENT_CALLS = 2
    slots = midtrans._call_slots(midtrans.SNAP)
    held = [slots.acquire(blocking=False) for _ in range(2)]
    assert held == [True, True]

    def give_back():
        slots.release()
        held.pop()

    yield give_back
    for _ in held:
        slots.release()


def test_a_call_with_every_slot_taken_fails_fast_as_busy_without_calling_midtrans(sim, slots_taken, caplog):
    # given two calls in flight in this process, the limit
    busy_before = refused_count("snap", "busy")

    # when
    with caplog.at_level(logging.INFO, logger="payments.midtrans"), pytest.raises(midtrans.MidtransBusy) as exc:
        midtrans.snap_create(payload=_payload())

    # then: an "unavailable" answer (callers answer 503 / retry later), and no HTTP call
    assert isinstance(exc.value, midtrans.MidtransUnavailable)
    assert (exc.value.operation, exc.value.midtrans_order_id, exc.value.retry_after) == ("snap_create", ORDER, 2)
    assert sim.api_calls() == []
    assert not SimTransaction.objects.exists()
    refused = [r for r in caplog.records if r.getMessage() == "midtrans_call_refused"]
    assert [(r.operation, r.reason, r.breaker) for r in refused] == [("snap_create", "busy", "snap")]
    assert refused_count("snap", "busy") == busy_before + 1
    assert not [r for r in caplog.records if r.getMessage() == "midtrans_call"]
    # slow is not down: the breaker did not count it
    assert (midtrans.circuit_state()["snap"]["state"], midtrans.circuit_state()["snap"]["failures"]) == ("closed", 0)

    # the other host's slots are its own: a status read still goes out
    assert midtrans.transaction_status(midtrans_order_id=ORDER)["status_code"] == "404"
    assert len(sim.api_calls("status")) == 1

    # and once a call in flight ends, the next one goes out
    slots_taken()
    assert midtrans.snap_create(payload=_payload()).token
    assert len(sim.api_calls("snap_create")) == 1


def test_every_way_a_call_ends_gives_its_slot_back(sim, settings):
    # given one slot: a call that kept it would make the next one busy
    settings.MIDTRANS_MAX_CONCURRENT_CALLS = 1
    settings.MIDTRANS_STATUS_RETRIES = 1
    settings.MIDTRANS_READ_TIMEOUT = 0.3

    # when: an answer, a refusal (4xx), a 5xx after a retry, a timeout, and a connection refused
    midtrans.snap_create(payload=_payload())
    with pytest.raises(midtrans.MidtransNotFound):
        midtrans.transaction_cancel(midtrans_order_id="BF-NOBODY-1")
    sim.faults(error_rate=1.0)
    with pytest.raises(midtrans.MidtransServerError):
        midtrans.transaction_status(midtrans_order_id=ORDER)
    sim.faults(error_rate=0.0, latency_ms=1000)
    with pytest.raises(midtrans.MidtransTimeout):
        midtrans.snap_create(payload=_payload("BF-SLOT-2"))
    sim.faults_reset()
    # (the simulator finishes that call later: let it write its rows before the next test)
    deadline = time.monotonic() + 10
    while not SimTransaction.objects.filter(order_id="BF-SLOT-2").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    settings.MIDTRANS_API_URL = "http://127.0.0.1:9"
    with pytest.raises(midtrans.MidtransTimeout):
        midtrans.transaction_status(midtrans_order_id=ORDER)

    # then: each host's slot is free again
    for breaker in midtrans.BREAKERS:
        assert midtrans._call_slots(breaker).acquire(blocking=False)
        midtrans._call_slots(breaker).release()


def test_a_webhook_status_read_waits_for_a_slot_only_within_its_budget(sim, settings, slots_taken):
    from payments.services.events import status_confirm

    # given the Core API's slots all taken (slots_taken holds Snap's: take Core's too)
    core = midtrans._call_slots(midtrans.CORE)
    held = 0
    settings.WEBHOOK_STATUS_BUDGET = 0.1
    try:
        for _ in range(2):
            assert core.acquire(blocking=False)
            held += 1
        # when
        started = time.monotonic()
        with pytest.raises(midtrans.MidtransBusy):
            status_confirm(midtrans_order_id=ORDER)
        elapsed = time.monotonic() - started
    finally:
        for _ in range(held):
            core.release()

    # then: a timeout behaviour, not a speed figure: the budget, not SLOT_WAIT_SECONDS (0.5 s)
    assert elapsed < 0.1 + 0.25, elapsed
    assert sim.api_calls() == []


def test_a_slot_freed_too_close_to_the_deadline_makes_no_call_and_counts_no_failure(sim, settings, monkeypatch):
    from payments.services.events import status_confirm

    # given the only Core API slot, freed when less than a try's worth (0.25 s) of the
    # status read's 0.5 s budget is left
    monkeypatch.setattr(midtrans, "_MIN_TRY_SECONDS", 0.25)
    settings.MIDTRANS_MAX_CONCURRENT_CALLS = 1
    settings.WEBHOOK_STATUS_BUDGET = 0.5
    core = midtrans._call_slots(midtrans.CORE)
    assert core.acquire(blocking=False)
    releaser = threading.Timer(0.35, core.release)
    releaser.start()
    try:
        # when
        with pytest.raises(midtrans.MidtransBusy):
            status_confirm(midtrans_order_id=ORDER)
    finally:
        releaser.join()

    # then it did not call (a try cut that short could only time out) and the breaker is untouched
    assert sim.api_calls() == []
    assert midtrans.circuit_state()["core"]["failures"] == 0
    assert core.acquire(blocking=False)
    core.release()


# --- logging -----------------------------------------------------------------------------------------


def test_every_call_logs_one_structured_line(sim, caplog):
    sim.faults(fail_next=1)
    with caplog.at_level(logging.INFO, logger="payments.midtrans"):
        midtrans.transaction_status(midtrans_order_id=ORDER)
    lines = [r for r in caplog.records if r.getMessage() == "midtrans_call"]
    assert [(r.operation, r.midtrans_order_id, r.http_status, r.attempt) for r in lines] == [
        ("status", ORDER, 500, 1),
        ("status", ORDER, 200, 2),
    ]
    assert all(isinstance(r.duration_ms, float) for r in lines)
    assert lines[0].outcome == "MidtransServerError"
