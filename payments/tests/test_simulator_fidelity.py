"""Where the simulator follows what Midtrans really does (issue 13, section 3), over real HTTP:
Snap expiry and page expiry, Idempotency-Key, per-transaction notification URLs, JSON for every
path it does not serve, and the smaller shapes (messages, status codes, refund entries, order ids).
"""

import base64
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests
from django.utils import timezone

from payments import midtrans
from payments.simulator import services
from payments.simulator.models import SimApiCall, SimIdempotencyKey, SimNotification, SimTransaction
from payments.tests.test_simulator_notifications import Receiver

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "SB-Mid-server-TEST123"
ORDER = "BF-20260101-FIDELITY-1"
JAKARTA = ZoneInfo("Asia/Jakarta")


def _auth(key=KEY):
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _payload(order_id=ORDER, amount=99000, **extra):
    return {
        "transaction_details": {"order_id": order_id, "gross_amount": amount},
        "item_details": [{"id": "kelas", "name": "Buat Film Pakai AI", "price": amount, "quantity": 1}],
        **extra,
    }


def _start_time(moment: datetime) -> str:
    return moment.astimezone(JAKARTA).strftime("%Y-%m-%d %H:%M:%S %z")


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def sim(midtrans_sim_alone, receiver, settings):
    settings.MIDTRANS_NOTIFICATION_URL = f"{receiver.url}/hook"
    midtrans_sim_alone.pause_deliveries()
    return midtrans_sim_alone


def _create(sim, payload, headers=None):
    return requests.post(
        f"{sim.base_url}/snap/v1/transactions", json=payload, headers={**_auth(), **(headers or {})}, timeout=10
    )


def _post(sim, order_id, action, json=None, headers=None):
    return requests.post(
        f"{sim.base_url}/v2/{order_id}/{action}", json=json, headers={**_auth(), **(headers or {})}, timeout=10
    )


def _status(sim, identifier=ORDER):
    return requests.get(f"{sim.base_url}/v2/{identifier}/status", headers=_auth(), timeout=10)


# --- expiry: counted from start_time ---------------------------------------------------------------


def test_expiry_counts_from_start_time_not_from_when_the_method_is_chosen(sim):
    # given: a Snap request that started 50 minutes ago with one hour to pay (as our checkout sends)
    started = (timezone.now() - timedelta(minutes=50)).replace(microsecond=0)
    token = _create(
        sim, _payload(expiry={"start_time": _start_time(started), "unit": "minute", "duration": 60})
    ).json()["token"]

    # when: the customer picks a VA only now
    sim.choose(token, "bca_va")

    # then: ten minutes are left, not an hour
    tx = SimTransaction.objects.get(order_id=ORDER)
    assert tx.expiry_time == started + timedelta(minutes=60)
    assert _status(sim).json()["expiry_time"] == services.time_format(started + timedelta(minutes=60))


def test_expiry_without_start_time_counts_from_the_transaction_time(sim):
    token = _create(sim, _payload(expiry={"unit": "hours", "duration": 2})).json()["token"]
    before = timezone.now()
    sim.choose(token, "gopay")
    tx = SimTransaction.objects.get(order_id=ORDER)
    assert tx.expiry_time - tx.transaction_time == timedelta(hours=2)
    assert tx.transaction_time >= before


@pytest.mark.parametrize(
    ("unit", "duration", "expected"),
    [
        ("second", 45, timedelta(seconds=45)),
        ("seconds", 45, timedelta(seconds=45)),
        ("minute", 1, timedelta(minutes=1)),
        ("minutes", 30, timedelta(minutes=30)),
        ("hour", 3, timedelta(hours=3)),
        ("HOURS", 3, timedelta(hours=3)),
        ("day", 2, timedelta(days=2)),
        ("days", 6, timedelta(days=6)),
    ],
)
def test_expiry_units_singular_and_plural(sim, unit, duration, expected):
    started = timezone.now().replace(microsecond=0) + timedelta(seconds=5)
    token = _create(sim, _payload(expiry={"start_time": _start_time(started), "unit": unit, "duration": duration}))
    assert token.status_code == 201, token.json()
    sim.choose(token.json()["token"], "bca_va")
    assert SimTransaction.objects.get(order_id=ORDER).expiry_time == started + expected


def test_expiry_beyond_seven_days_is_cut_to_seven_days_after_the_token(sim):
    token = _create(sim, _payload(expiry={"unit": "day", "duration": 30})).json()["token"]
    sim.choose(token, "bca_va")
    tx = SimTransaction.objects.get(order_id=ORDER)
    assert tx.expiry_time == tx.token_created_at + timedelta(days=7)
    assert tx.page_expires_at == tx.token_created_at + timedelta(days=7)


@pytest.mark.parametrize(
    ("expiry", "message"),
    [
        ({"unit": "week", "duration": 1}, "expiry.unit must be one of: second, minute, hour, day"),
        ({"unit": 5, "duration": 1}, "expiry.unit must be one of"),
        ({"duration": 10}, "expiry.unit is required"),
        ({"unit": "minute"}, "expiry.duration is required"),
        ({"unit": "minute", "duration": 0}, "expiry.duration must be a positive integer"),
        ({"unit": "minute", "duration": 1.5}, "expiry.duration must be a positive integer"),
        ({"unit": "minute", "duration": "10"}, "expiry.duration must be a positive integer"),
        ({"unit": "second", "duration": 19}, "expiry must end at least 20 seconds"),
        (
            {"start_time": "2026-01-01T10:00:00+07:00", "unit": "minute", "duration": 10},
            services.MSG_START_TIME,
        ),
        ({"start_time": "2026-02-30 10:00:00 +0700", "unit": "minute", "duration": 10}, services.MSG_START_TIME),
        ({"start_time": 1767236400, "unit": "minute", "duration": 10}, services.MSG_START_TIME),
        # started long ago: it would be over before anyone could pay
        ({"start_time": "2020-01-01 10:00:00 +0700", "unit": "hour", "duration": 1}, "expiry must end at least 20"),
        ("1 hour", "expiry must be an object"),
    ],
)
def test_bad_expiry_is_400_in_midtrans_shape_and_creates_nothing(sim, expiry, message):
    response = _create(sim, _payload(expiry=expiry))
    assert response.status_code == 400
    assert set(response.json()) == {"error_messages"}
    assert any(m.startswith(message) for m in response.json()["error_messages"]), response.json()
    assert SimTransaction.objects.count() == 0


@pytest.mark.parametrize(
    ("page_expiry", "message"),
    [
        ({"unit": "minutes", "duration": 4}, "page_expiry must be at least 5 minutes"),
        ({"unit": "fortnight", "duration": 1}, "page_expiry.unit must be one of"),
        ({"unit": "hour"}, "page_expiry.duration is required"),
        ({"duration": 3}, "page_expiry.unit is required"),
        (["3 hours"], "page_expiry must be an object"),
    ],
)
def test_bad_page_expiry_is_400_and_creates_nothing(sim, page_expiry, message):
    response = _create(sim, _payload(page_expiry=page_expiry))
    assert response.status_code == 400
    assert any(m.startswith(message) for m in response.json()["error_messages"]), response.json()
    assert SimTransaction.objects.count() == 0


# --- page expiry ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "page_open_for"),
    [
        ({}, timedelta(hours=24)),  # the default
        ({"page_expiry": {"duration": 3, "unit": "hours"}}, timedelta(hours=3)),
        ({"expiry": {"unit": "minute", "duration": 90}}, timedelta(minutes=90)),
        # page_expiry comes first, then expiry ("Expire a Snap Session", priority)
        (
            {"page_expiry": {"duration": 10, "unit": "minute"}, "expiry": {"unit": "day", "duration": 1}},
            timedelta(minutes=10),
        ),
    ],
)
def test_the_payment_page_closes_per_page_expiry_then_expiry_then_24_hours(sim, extra, page_open_for):
    _create(sim, _payload(**extra))
    tx = SimTransaction.objects.get(order_id=ORDER)
    assert tx.page_expires_at - tx.token_created_at == page_open_for


def test_an_expired_page_cannot_be_paid_and_sends_no_notification(sim):
    # given: a token whose page closed before the customer picked a method
    token = _create(sim, _payload(page_expiry={"duration": 5, "unit": "minutes"})).json()["token"]
    SimTransaction.objects.filter(order_id=ORDER).update(page_expires_at=timezone.now() - timedelta(seconds=1))
    before = SimTransaction.objects.values().get(order_id=ORDER)

    # when / then: the page is gone, no method can be chosen, the status API still knows nothing
    assert requests.get(sim.page_url(ORDER), timeout=10).status_code == 404
    with pytest.raises(services.SimStateError, match="kedaluwarsa"):
        sim.choose(token, "gopay")
    assert _status(sim).json()["status_code"] == "404"
    assert SimTransaction.objects.values().get(order_id=ORDER) == before
    assert SimNotification.objects.count() == 0


def test_a_method_chosen_after_the_expiry_ended_is_refused(sim):
    # given: ten minutes to pay from start_time; the page itself stays open for a day
    expiry = {"start_time": _start_time(timezone.now() - timedelta(minutes=5)), "unit": "minute", "duration": 10}
    token = _create(sim, _payload(expiry=expiry, page_expiry={"duration": 1, "unit": "day"})).json()["token"]
    # six minutes pass (the request is stored as sent, so its start_time moves back)
    tx = SimTransaction.objects.get(order_id=ORDER)
    tx.request_payload["expiry"]["start_time"] = _start_time(timezone.now() - timedelta(minutes=11))
    tx.save()

    # when / then
    with pytest.raises(services.SimStateError, match="Batas waktu"):
        sim.choose(token, "bca_va")
    assert SimTransaction.objects.get(order_id=ORDER).transaction_status == ""
    assert SimNotification.objects.count() == 0


def test_our_checkout_expiry_at_the_simulator_ends_with_the_order(midtrans_sim, settings):
    # given: a checkout through the real API (it sends expiry.start_time and our window)
    from rest_framework.test import APIClient

    from payments.models import Order
    from payments.tests.checkout_support import checkout_body, launch_package_ensure

    launch_package_ensure()
    midtrans_sim.pause_deliveries()
    client = APIClient(HTTP_USER_AGENT="Mozilla/5.0 Test")
    response = client.post("/api/checkout/", checkout_body(), format="json")
    assert response.status_code == 201, response.json()
    order = Order.objects.get(pk=response.json()["order_id"])
    attempt = order.attempts.get()

    # when: the customer picks a method later
    midtrans_sim.choose(attempt.midtrans_order_id, "bca_va")

    # then: Midtrans closes the payment when our order's window closes (start_time has whole
    # seconds, the duration whole minutes, rounded up)
    tx = SimTransaction.objects.get(order_id=attempt.midtrans_order_id)
    assert -timedelta(seconds=1) < tx.expiry_time - order.expires_at < timedelta(minutes=1)


# --- Idempotency-Key -----------------------------------------------------------------------------


@pytest.fixture
def paid(sim):
    token = _create(sim, _payload()).json()["token"]
    sim.pay(token, method="gopay")
    return sim


def test_a_repeated_refund_with_one_key_is_replayed_not_refunded_twice(paid):
    headers = {"Idempotency-Key": "refund-key-1"}
    first = _post(paid, ORDER, "refund", json={"refund_key": "rf-1", "amount": 10000}, headers=headers)
    # the repeat may differ in body: Midtrans answers with the first result whatever the body
    second = _post(paid, ORDER, "refund", json={"refund_key": "rf-2", "amount": 20000}, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    tx = SimTransaction.objects.get(order_id=ORDER)
    assert (tx.refund_amount, len(tx.refunds)) == (10000, 1)
    assert [n.payload["transaction_status"] for n in SimNotification.objects.order_by("id")][-1:] == ["partial_refund"]
    assert SimNotification.objects.filter(payload__transaction_status="partial_refund").count() == 1


def test_the_key_is_global_across_endpoints(paid):
    headers = {"Idempotency-Key": "one-key-for-everything"}
    refund = _post(paid, ORDER, "refund", json={"refund_key": "rf-1", "amount": 10000}, headers=headers).json()
    cancel = _post(paid, ORDER, "cancel", headers=headers).json()
    assert cancel == refund


def test_only_successes_are_replayed(sim):
    token = _create(sim, _payload()).json()["token"]
    sim.choose(token, "gopay")
    headers = {"Idempotency-Key": "refund-before-settlement"}
    refused = _post(sim, ORDER, "refund", json={"refund_key": "rf-1"}, headers=headers).json()
    assert refused["status_code"] == "412"
    assert SimIdempotencyKey.objects.count() == 0  # a failure is not stored
    sim.pay(token)
    done = _post(sim, ORDER, "refund", json={"refund_key": "rf-1"}, headers=headers).json()
    assert (done["status_code"], done["transaction_status"]) == ("200", "refund")


def test_a_repeat_while_the_first_call_runs_answers_202_and_changes_nothing(paid):
    # given: the first call with this key is still running (claimed, not finished)
    claim = services.idempotency_claim(key="slow-refund", operation="refund")
    assert claim.owned
    before = SimTransaction.objects.values().get(order_id=ORDER)

    # when
    response = _post(paid, ORDER, "refund", json={"refund_key": "rf-1"}, headers={"Idempotency-Key": "slow-refund"})

    # then
    assert response.status_code == 202
    assert response.json()["status_code"] == "202"
    assert SimTransaction.objects.values().get(order_id=ORDER) == before


def test_a_key_is_forgotten_after_five_minutes(paid):
    headers = {"Idempotency-Key": "refund-key-1"}
    _post(paid, ORDER, "refund", json={"refund_key": "rf-1", "amount": 10000}, headers=headers)
    row = SimIdempotencyKey.objects.get(key="refund-key-1")
    assert timedelta(minutes=4, seconds=59) < row.expires_at - row.created_at <= timedelta(minutes=5)
    SimIdempotencyKey.objects.update(expires_at=timezone.now())
    again = _post(paid, ORDER, "refund", json={"refund_key": "rf-2", "amount": 20000}, headers=headers).json()
    assert again["refund_amount"] == "20000.00"
    assert SimTransaction.objects.get(order_id=ORDER).refund_amount == 30000


def test_a_key_longer_than_46_characters_is_ignored(paid):
    headers = {"Idempotency-Key": "k" * 47}
    _post(paid, ORDER, "refund", json={"refund_key": "rf-1", "amount": 10000}, headers=headers)
    _post(paid, ORDER, "refund", json={"refund_key": "rf-2", "amount": 10000}, headers=headers)
    assert SimTransaction.objects.get(order_id=ORDER).refund_amount == 20000
    assert SimIdempotencyKey.objects.count() == 0


def test_the_client_sends_a_key_on_every_core_post(sim):
    token = _create(sim, _payload()).json()["token"]
    sim.pay(token, method="gopay")
    midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-1", amount=1000)
    other = "BF-20260101-FIDELITY-2"
    sim.choose(_create(sim, _payload(order_id=other)).json()["token"], "gopay")
    midtrans.transaction_cancel(midtrans_order_id=other)
    third = "BF-20260101-FIDELITY-3"
    sim.choose(_create(sim, _payload(order_id=third)).json()["token"], "gopay")
    midtrans.transaction_expire(midtrans_order_id=third)

    keys = dict(SimIdempotencyKey.objects.values_list("operation", "key"))
    assert set(keys) == {"refund", "cancel", "expire"}
    assert all(len(key) <= 46 for key in keys.values())
    assert keys["refund"] == midtrans.refund_idempotency_key(midtrans_order_id=ORDER, refund_key="rf-1")
    # a different order with the same refund_key gets a different key (Midtrans' keys are global)
    assert keys["refund"] != midtrans.refund_idempotency_key(midtrans_order_id=other, refund_key="rf-1")


def test_the_client_reports_a_refund_still_in_progress_and_refunds_nothing(paid):
    key = midtrans.refund_idempotency_key(midtrans_order_id=ORDER, refund_key="rf-1")
    assert services.idempotency_claim(key=key, operation="refund").owned  # the first call still runs
    with pytest.raises(midtrans.MidtransInProgress) as exc:
        midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-1")
    assert exc.value.http_status == 202
    assert isinstance(exc.value, midtrans.MidtransUnavailable)  # callers retry later
    assert SimTransaction.objects.get(order_id=ORDER).refunds == []
    assert midtrans.circuit_state()["state"] == "closed"


@pytest.mark.parametrize("refund_key", ["rf 1", "rf/1", "rf.1", "rf#1", "réfund"])
def test_refund_key_characters_are_checked_before_any_call(paid, refund_key):
    before = SimTransaction.objects.values().get(order_id=ORDER)
    with pytest.raises(ValueError, match="letters, digits"):
        midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key=refund_key)
    assert paid.api_calls("refund") == []
    # the simulator refuses them too, as Midtrans does, and changes nothing
    body = _post(paid, ORDER, "refund", json={"refund_key": refund_key}).json()
    assert body["status_code"] == "400"
    assert "dash (-), and underscore (_)" in body["status_message"]
    assert SimTransaction.objects.values().get(order_id=ORDER) == before


# --- X-Override-Notification / X-Append-Notification ----------------------------------------------


def test_override_sends_notifications_only_to_its_urls(sim, receiver):
    headers = {"X-Override-Notification": f"{receiver.url}/one, {receiver.url}/two"}
    token = _create(sim, _payload(), headers=headers).json()["token"]
    sim.pay(token, method="bca_va")
    sim.deliver()
    assert receiver.bodies("/hook") == []
    for path in ("/one", "/two"):
        assert [b["transaction_status"] for b in receiver.bodies(path)] == ["pending", "settlement"]


def test_append_sends_notifications_to_the_configured_url_and_its_urls(sim, receiver):
    token = _create(sim, _payload(), headers={"X-Append-Notification": f"{receiver.url}/extra"}).json()["token"]
    sim.pay(token, method="gopay")
    sim.deliver()
    for path in ("/hook", "/extra"):
        assert [b["transaction_status"] for b in receiver.bodies(path)] == ["pending", "settlement"]


def test_override_wins_over_append(sim, receiver):
    headers = {
        "X-Override-Notification": f"{receiver.url}/override",
        "X-Append-Notification": f"{receiver.url}/append",
    }
    token = _create(sim, _payload(), headers=headers).json()["token"]
    sim.choose(token, "gopay")
    sim.deliver()
    assert {r["path"] for r in receiver.received} == {"/override"}


def test_each_url_is_retried_on_its_own(sim, receiver, settings):
    settings.MIDTRANS_SIMULATOR_TIME_COMPRESSION = 1_000_000
    receiver.plan["/extra"] = [503]
    token = _create(sim, _payload(), headers={"X-Append-Notification": f"{receiver.url}/extra"}).json()["token"]
    sim.choose(token, "gopay")
    sim.deliver_all(wait_seconds=10)
    rows = {row.target_url: row for row in SimNotification.objects.all()}
    assert (rows[""].attempts, rows[""].status) == (1, "delivered")
    assert (rows[f"{receiver.url}/extra"].attempts, rows[f"{receiver.url}/extra"].status) == (2, "delivered")


def test_a_core_call_names_where_its_notification_goes(sim, receiver):
    token = _create(sim, _payload()).json()["token"]
    sim.choose(token, "gopay")
    sim.deliver()
    response = _post(sim, ORDER, "cancel", headers={"X-Override-Notification": f"{receiver.url}/cancelled"})
    assert response.json()["transaction_status"] == "cancel"
    sim.deliver()
    assert [b["transaction_status"] for b in receiver.bodies("/hook")] == ["pending"]
    assert [b["transaction_status"] for b in receiver.bodies("/cancelled")] == ["cancel"]


def test_the_official_client_custom_header_reaches_the_simulator(sim, receiver):
    # What midtransclient's own test sends: X-Override-Notification through custom_headers.
    import midtransclient

    snap = midtransclient.Snap(
        is_production=False, server_key=KEY, custom_headers={"X-Override-Notification": f"{receiver.url}/judge"}
    )
    snap.api_config.SNAP_SANDBOX_BASE_URL = f"{sim.base_url}/snap/v1"
    token = snap.create_transaction_token(_payload())
    sim.choose(token, "qris")
    sim.deliver()
    assert [b["transaction_status"] for b in receiver.bodies("/judge")] == ["pending"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (
            {
                "X-Override-Notification": "https://a.example/1,https://a.example/2,https://a.example/3,https://a.example/4"
            },
            "at most 3",
        ),
        ({"X-Append-Notification": "ftp://a.example/hook"}, "http(s) URLs"),
        ({"X-Override-Notification": "not a url"}, "http(s) URLs"),
    ],
)
def test_bad_notification_headers_are_400_and_change_nothing(sim, headers, message):
    response = _create(sim, _payload(), headers=headers)
    assert response.status_code == 400
    assert message in response.json()["error_messages"][0]
    assert SimTransaction.objects.count() == 0

    token = _create(sim, _payload()).json()["token"]
    sim.choose(token, "gopay")
    before = SimTransaction.objects.values().get(order_id=ORDER)
    body = _post(sim, ORDER, "cancel", headers=headers).json()
    assert body["status_code"] == "400"
    assert message in body["status_message"]
    assert SimTransaction.objects.values().get(order_id=ORDER) == before


# --- paths it does not serve -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "shape"),
    [
        ("POST", "/v2/charge", 404, "core"),
        ("POST", "/v2/capture", 404, "core"),
        ("GET", "/v2/point_inquiry/abc", 404, "core"),
        ("POST", f"/v2/{ORDER}/refund/online/direct", 404, "core"),
        ("GET", f"/v2/{ORDER}/status/b2b", 404, "core"),
        ("GET", "/v1/subscriptions/abc", 404, "core"),
        ("GET", "/", 404, "core"),
        ("GET", "/nothing/here", 404, "core"),
        ("POST", "/snap/v2/transactions", 404, "snap"),
        ("GET", "/snap/v1/transactions/abc", 404, "snap"),
        ("GET", "/v2/BF/1/status", 404, "spring"),  # a "/" in the order id
        ("POST", "/v2/BF/1/cancel", 404, "spring"),
        ("GET", "/snap/v1/transactions", 405, "snap"),
        ("PUT", "/snap/v1/transactions/abc/cancel", 405, "snap"),
        ("POST", f"/v2/{ORDER}/status", 405, "core"),
        ("GET", f"/v2/{ORDER}/refund", 405, "core"),
        ("DELETE", f"/v2/{ORDER}/approve", 405, "core"),
    ],
)
def test_every_path_it_does_not_serve_answers_json_in_midtrans_shape(sim, method, path, status, shape):
    response = requests.request(method, f"{sim.base_url}{path}", headers=_auth(), timeout=10)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    if shape == "core":
        assert body["status_code"] == str(status)
        assert body["status_message"]
    elif shape == "snap":
        assert set(body) == {"error_messages"} and body["error_messages"]
    else:
        assert (body["status"], body["error"], body["path"]) == (404, "Not Found", f"/sandbox/midtrans{path}")
        assert "status_code" not in body


def test_an_order_id_with_a_slash_through_the_client_is_not_found(sim):
    with pytest.raises(midtrans.MidtransNotFound) as exc:
        midtrans.transaction_status(midtrans_order_id="BF/1")
    assert exc.value.http_status == 404


# --- smaller shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("id", "transaction_details.order_id sudah digunakan"),
        ("en", "transaction_details.order_id has already been taken"),
    ],
)
def test_duplicate_order_id_in_either_language_is_recognised_by_the_client(sim, settings, language, message):
    settings.MIDTRANS_SIMULATOR_LANGUAGE = language
    snap = midtrans.snap_create(payload=_payload())
    sim.choose(snap.token, "bca_va")
    with pytest.raises(midtrans.MidtransDuplicateOrderId) as exc:
        midtrans.snap_create(payload=_payload())
    assert (exc.value.http_status, exc.value.messages) == (400, [message])


@pytest.mark.parametrize("code", ["202", "407"])
def test_expire_notification_code_is_selectable_and_the_status_read_says_407(sim, receiver, settings, code):
    settings.MIDTRANS_SIMULATOR_EXPIRE_NOTIFICATION_CODE = code
    token = _create(sim, _payload()).json()["token"]
    sim.expire(token, method="bca_va")
    sim.deliver()
    expired = receiver.bodies()[-1]
    assert (expired["transaction_status"], expired["status_code"]) == ("expire", code)
    assert midtrans.signature_verify(payload=expired)
    assert _status(sim).json()["status_code"] == "407"
    assert _post(sim, ORDER, "expire").json()["status_code"] == "412"  # already expired


def test_refund_entries_have_refund_method_and_bank_confirmed_at_only_once_confirmed(paid):
    _post(paid, ORDER, "refund", json={"refund_key": "rf-1", "amount": 10000})
    (entry,) = _status(paid).json()["refunds"]
    assert entry["refund_method"] == "online"
    assert "bank_confirmed_at" not in entry
    from payments.simulator.models import SimRefundConfirmation

    SimRefundConfirmation.objects.update(due_at=timezone.now())
    (entry,) = _status(paid).json()["refunds"]
    assert entry["bank_confirmed_at"]


@pytest.mark.parametrize("order_id", ["BF 20260101 1", "py-midtransclient-test-2026-01-01 10:00:00", "BF#1", "BF/1"])
def test_snap_accepts_order_ids_midtrans_accepts_and_only_the_transaction_id_reads_them(sim, order_id):
    response = _create(sim, _payload(order_id=order_id))
    assert response.status_code == 201, response.json()
    sim.choose(response.json()["token"], "gopay")
    tx = SimTransaction.objects.get(order_id=order_id)
    # The Core API cannot find such an order by its id (midtrans-go#32); its transaction_id works.
    body = services.status_read(identifier=order_id)
    assert body["status_code"] == "404"
    read = _status(sim, tx.transaction_id).json()
    assert (read["order_id"], read["status_code"]) == (order_id, "201")


def test_approve_and_deny_resolve_only_a_challenged_card_payment(sim):
    token = _create(sim, _payload()).json()["token"]
    sim.trigger(ORDER, "challenge")
    approved = _post(sim, ORDER, "approve").json()
    assert (approved["status_code"], approved["transaction_status"], approved["fraud_status"]) == (
        "200",
        "capture",
        "accept",
    )
    assert _post(sim, ORDER, "approve").json()["status_code"] == "412"
    assert _post(sim, ORDER, "deny").json()["status_code"] == "412"

    other = "BF-20260101-FIDELITY-2"
    _create(sim, _payload(order_id=other))
    sim.trigger(other, "challenge")
    denied = _post(sim, other, "deny").json()
    assert (denied["status_code"], denied["transaction_status"]) == ("200", "deny")
    assert SimTransaction.objects.get(order_id=ORDER).fraud_status == "accept"
    assert token


def test_unserved_calls_are_logged(sim):
    requests.post(f"{sim.base_url}/v2/charge", json={}, headers=_auth(), timeout=10)
    assert [(c.operation, c.http_status) for c in SimApiCall.objects.all()] == [("not_served", 404)]


@pytest.mark.parametrize("code", ["202", "407"])
def test_our_webhook_applies_an_expire_notification_with_either_code(midtrans_sim, settings, code):
    # given: an open attempt of ours at the simulator, our webhook as the notification URL
    from payments.models import PaymentAttempt
    from payments.tests.payment_support import refreshed, sim_attempt_create

    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = True
    settings.MIDTRANS_SIMULATOR_EXPIRE_NOTIFICATION_CODE = code
    midtrans_sim.pause_deliveries()
    attempt = sim_attempt_create()

    # when: the VA expires at Midtrans and its notifications arrive
    midtrans_sim.expire(attempt.snap_token, method="bca_va")
    delivered = midtrans_sim.deliver()

    # then: answered 200 and applied (the status API, asked to confirm, says 407)
    assert [row.payload["status_code"] for row in delivered] == ["201", code]
    assert [row.last_http_status for row in delivered] == [200, 200]
    assert refreshed(attempt)[1] == PaymentAttempt.Status.EXPIRED


@pytest.mark.parametrize(
    ("overrides", "check_id", "names"),
    [
        ({"MIDTRANS_SIMULATOR_LANGUAGE": "jv"}, "buatfilm.E131", ["MIDTRANS_SIMULATOR_LANGUAGE", "id", "en"]),
        (
            {"MIDTRANS_SIMULATOR_EXPIRE_NOTIFICATION_CODE": "200"},
            "buatfilm.E132",
            ["MIDTRANS_SIMULATOR_EXPIRE_NOTIFICATION_CODE", "202", "407"],
        ),
    ],
)
def test_simulator_settings_are_checked_at_start_up(overrides, check_id, names):
    from buatfilm.tests.test_startup_checks import run_check

    result = run_check(**overrides)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert check_id in output
    for name in names:
        assert name in output
    assert "Traceback" not in output
    assert run_check(**{name: "en" if "LANGUAGE" in name else "407" for name in overrides}).returncode == 0
