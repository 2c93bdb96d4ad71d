"""The simulator's HTTP notifications, received by a real local HTTP server in the test.

Every notification is checked with our verifier (payments.midtrans.signature_verify) and
with an independent SHA512 written here from the reference's formula.
"""

import hashlib
import json
import re
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from django.core.management import CommandError, call_command
from django.utils import timezone

from payments import midtrans
from payments.simulator.models import SimNotification, SimTransaction

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "SB-Mid-server-TEST123"
ORDER = "BF-20260101-NOTIFY01-1"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def independent_signature(body: dict, key: str = KEY) -> str:
    # Reference §3: hex(SHA512(order_id + status_code + gross_amount + server_key)), strings verbatim.
    return hashlib.sha512((body["order_id"] + body["status_code"] + body["gross_amount"] + key).encode()).hexdigest()


class Receiver:
    """A tiny webhook receiver: records every POST; answers from `plan` (status codes, per path) else 200."""

    def __init__(self):
        self.received: list[dict] = []
        self.plan: dict[str, list] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.received.append({"path": self.path, "headers": dict(self.headers), "raw": raw})
                    answers = receiver.plan.get(self.path) or []
                    answer = answers.pop(0) if answers else 200
                status, location = answer if isinstance(answer, tuple) else (answer, None)
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def bodies(self, path="/hook"):
        return [json.loads(r["raw"]) for r in self.received if r["path"] == path]

    def wait_for(self, count, timeout=10.0):
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def sim(midtrans_sim_alone, receiver, settings):
    settings.MIDTRANS_NOTIFICATION_URL = f"{receiver.url}/hook"
    midtrans_sim_alone.pause_deliveries()  # these tests decide when notifications go out
    return midtrans_sim_alone


def _create(order_id=ORDER, amount=99000):
    return midtrans.snap_create(
        payload={
            "transaction_details": {"order_id": order_id, "gross_amount": amount},
            "callbacks": {"finish": "http://127.0.0.1:9/selesai"},
        }
    )


def _assert_signed(body):
    assert midtrans.signature_verify(payload=body)
    assert body["signature_key"] == independent_signature(body)


# --- shapes and signatures ---------------------------------------------------------------------------


def test_va_payment_sends_signed_pending_then_settlement(sim, receiver):
    snap = _create()
    sim.choose(snap.token, "bca_va")
    sim.pay(snap.token)
    sim.deliver()
    pending, settled = receiver.bodies()
    for request in receiver.received:
        assert request["headers"]["User-Agent"] == "Veritrans"
        assert request["headers"]["Content-Type"] == "application/json"
        assert request["headers"]["Accept"] == "application/json"
    for body in (pending, settled):
        _assert_signed(body)
        assert body["order_id"] == ORDER
        assert body["gross_amount"] == "99000.00"
        assert body["currency"] == "IDR"
        assert body["payment_type"] == "bank_transfer"
        assert body["status_message"] == "midtrans payment notification"
        assert body["merchant_id"]
        assert TIME_RE.match(body["transaction_time"])
        assert body["va_numbers"][0]["bank"] == "bca"
        assert body["va_numbers"][0]["va_number"] == SimTransaction.objects.get(order_id=ORDER).va_number
    assert (pending["transaction_status"], pending["status_code"], pending["fraud_status"]) == (
        "pending",
        "201",
        "accept",
    )
    assert "settlement_time" not in pending
    assert TIME_RE.match(pending["expiry_time"])
    assert (settled["transaction_status"], settled["status_code"]) == ("settlement", "200")
    assert TIME_RE.match(settled["settlement_time"])
    assert settled["payment_amounts"] == [{"paid_at": settled["settlement_time"], "amount": "99000.00"}]
    assert pending["transaction_id"] == settled["transaction_id"]
    assert [n.status for n in sim.notifications(ORDER)] == ["delivered", "delivered"]


@pytest.mark.parametrize(
    ("method", "payment_type", "fields", "final"),
    [
        ("qris", "qris", {"transaction_type", "issuer", "acquirer", "merchant_cross_reference_id"}, "settlement"),
        ("gopay", "gopay", set(), "settlement"),
        ("credit_card", "credit_card", {"masked_card", "card_type", "bank", "eci", "approval_code"}, "capture"),
    ],
)
def test_shapes_per_payment_type(sim, receiver, method, payment_type, fields, final):
    snap = _create()
    sim.pay(snap.token, method=method)
    sim.deliver()
    pending, paid = receiver.bodies()
    assert pending["payment_type"] == paid["payment_type"] == payment_type
    assert fields <= set(paid)
    assert "va_numbers" not in paid
    assert (paid["transaction_status"], paid["status_code"], paid["fraud_status"]) == (final, "200", "accept")
    for body in (pending, paid):
        _assert_signed(body)
    if method == "gopay":
        common = {
            "transaction_time",
            "transaction_status",
            "transaction_id",
            "status_message",
            "status_code",
            "signature_key",
            "payment_type",
            "order_id",
            "merchant_id",
            "gross_amount",
            "currency",
            "fraud_status",
            "expiry_time",
            "settlement_time",
        }
        assert set(paid) == common


def test_deny_and_expire_notifications(sim, receiver):
    deny_snap = _create()
    sim.deny(deny_snap.token, method="credit_card")
    expire_snap = _create(order_id="BF-20260101-NOTIFY01-2")
    sim.expire(expire_snap.token, method="bca_va")
    sim.deliver()
    finals = {b["order_id"]: b for b in receiver.bodies() if b["transaction_status"] != "pending"}
    denied, expired = finals[ORDER], finals["BF-20260101-NOTIFY01-2"]
    assert (denied["transaction_status"], denied["status_code"], denied["channel_response_code"]) == (
        "deny",
        "202",
        "05",
    )
    # The docs' expire notification says "202" (the status API says "407").
    assert (expired["transaction_status"], expired["status_code"]) == ("expire", "202")
    for body in receiver.bodies():
        _assert_signed(body)


def test_notification_signed_with_midtrans_key_fails_our_verifier_when_keys_differ(sim, receiver, settings):
    snap = _create()
    other = "SB-Mid-server-SOMEONE-ELSE"
    settings.MIDTRANS_SIMULATOR_SERVER_KEY = other  # "Midtrans" now signs with a key we do not have
    sim.choose(snap.token, "gopay")
    sim.deliver()
    (body,) = receiver.bodies()
    assert body["signature_key"] == independent_signature(body, key=other)
    assert not midtrans.signature_verify(payload=body)
    assert midtrans.signature_verify(payload=body, server_key=other)


# --- asynchronous delivery ---------------------------------------------------------------------------


def test_background_sender_delivers_without_being_asked(midtrans_sim_alone, receiver, settings):
    settings.MIDTRANS_NOTIFICATION_URL = f"{receiver.url}/hook"
    snap = _create()  # an HTTP request to the simulator starts its sender thread
    midtrans_sim_alone.choose(snap.token, "gopay")
    received = receiver.wait_for(1)
    assert len(received) == 1
    body = json.loads(received[0]["raw"])
    assert body["transaction_status"] == "pending"
    _assert_signed(body)


def test_first_request_of_any_kind_starts_the_sender_which_drains_what_was_scheduled(
    midtrans_sim_alone, receiver, settings
):
    from payments.simulator import dispatcher

    settings.MIDTRANS_NOTIFICATION_URL = f"{receiver.url}/hook"
    # As a web process finds the queue after a restart: a notification due, a pending
    # transaction past its expiry time, and no sender thread yet.
    dispatcher.dispatcher_autostart(False)
    snap = _create()
    midtrans_sim_alone.choose(snap.token, "gopay")
    SimTransaction.objects.filter(order_id=ORDER).update(expiry_time=timezone.now() - timedelta(seconds=1))
    assert not dispatcher.dispatcher_running()

    dispatcher.dispatcher_autostart(True)
    response = requests.get(f"{midtrans_sim_alone.live_url}/not-a-simulator-path", timeout=10)

    assert response.status_code == 404
    assert dispatcher.dispatcher_running()
    receiver.wait_for(2)
    assert [b["transaction_status"] for b in receiver.bodies()] == ["pending", "expire"]
    assert SimTransaction.objects.get(order_id=ORDER).transaction_status == "expire"


def test_sender_is_not_started_by_commands_nor_with_the_simulator_off(midtrans_sim_alone, receiver, settings):
    from payments.simulator import dispatcher

    settings.MIDTRANS_NOTIFICATION_URL = f"{receiver.url}/hook"
    dispatcher.dispatcher_autostart(False)
    _create()
    dispatcher.dispatcher_autostart(True)
    call_command("midtrans_sim", ORDER, "settlement", "--no-send")
    call_command("midtrans_sim_faults")
    assert not dispatcher.dispatcher_running()
    settings.MIDTRANS_SIMULATOR = False
    requests.get(f"{midtrans_sim_alone.live_url}/not-a-simulator-path", timeout=10)
    assert not dispatcher.dispatcher_running()
    assert receiver.received == []


def test_notification_url_is_read_at_send_time(sim, receiver, settings):
    snap = _create()
    sim.choose(snap.token, "gopay")
    settings.MIDTRANS_NOTIFICATION_URL = f"{receiver.url}/moved-here"
    sim.deliver()
    assert [r["path"] for r in receiver.received] == ["/moved-here"]


# --- retries -----------------------------------------------------------------------------------------


def _make_due(row):
    SimNotification.objects.filter(pk=row.pk).update(due_at=timezone.now())


def test_retry_schedule_follows_midtrans_and_gives_up_after_five_retries(sim, receiver, settings):
    settings.MIDTRANS_SIMULATOR_TIME_COMPRESSION = 1
    receiver.plan["/hook"] = [502] * 10
    snap = _create()
    sim.choose(snap.token, "gopay")
    (row,) = sim.notifications(ORDER)
    for expected_minutes in (2, 10, 30, 90, 210):
        sim.deliver()
        row.refresh_from_db()
        assert row.status == "pending"
        gap = (row.due_at - timezone.now()).total_seconds()
        # Midtrans shifts each retry randomly; the simulator by at most ±10 %.
        assert expected_minutes * 60 * 0.85 < gap <= expected_minutes * 60 * 1.1
        _make_due(row)  # time passes
    sim.deliver()
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("failed", 6)
    assert [h["http_status"] for h in row.history] == [502] * 6
    assert len(receiver.received) == 6


def test_retry_delays_are_divided_by_time_compression(sim, receiver, settings):
    settings.MIDTRANS_SIMULATOR_TIME_COMPRESSION = 120
    receiver.plan["/hook"] = [503]
    snap = _create()
    sim.choose(snap.token, "gopay")
    sim.deliver()
    (row,) = sim.notifications(ORDER)
    gap = (row.due_at - timezone.now()).total_seconds()
    assert 0 < gap <= 2 * 60 / 120 * 1.1
    delivered = sim.deliver_all(wait_seconds=20)
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_http_status) == ("delivered", 2, 200)
    assert [h["http_status"] for h in row.history] == [503, 200]
    assert delivered and len(receiver.received) == 2


@pytest.mark.parametrize(
    ("code", "attempts"),
    [(500, 2), (503, 5), (400, 3), (404, 3), (401, 6), (301, 1), (302, 1), (303, 1)],
)
def test_retry_count_depends_on_the_answer(sim, receiver, settings, code, attempts):
    settings.MIDTRANS_SIMULATOR_TIME_COMPRESSION = 1_000_000
    receiver.plan["/hook"] = [(code, "/elsewhere") if code in (301, 302, 303) else code] * 10
    snap = _create()
    sim.choose(snap.token, "gopay")
    sim.deliver_all(wait_seconds=20)
    (row,) = sim.notifications(ORDER)
    assert (row.status, row.attempts) == ("failed", attempts)
    assert len(receiver.received) == attempts
    assert all(r["path"] == "/hook" for r in receiver.received)  # 30x is not followed


def test_temporary_redirect_is_followed_with_the_same_body(sim, receiver):
    receiver.plan["/hook"] = [(307, "/hook-v2")]
    snap = _create()
    sim.choose(snap.token, "gopay")
    sim.deliver()
    assert [r["path"] for r in receiver.received] == ["/hook", "/hook-v2"]
    assert receiver.received[0]["raw"] == receiver.received[1]["raw"]
    (row,) = sim.notifications(ORDER)
    assert (row.status, row.attempts, row.url) == ("delivered", 1, f"{receiver.url}/hook-v2")


def test_unreachable_receiver_is_retried(sim, settings):
    settings.MIDTRANS_NOTIFICATION_URL = "http://127.0.0.1:9/hook"
    snap = _create()
    sim.choose(snap.token, "gopay")
    sim.deliver()
    (row,) = sim.notifications(ORDER)
    assert (row.status, row.attempts, row.last_http_status) == ("pending", 1, None)
    assert "ConnectionError" in row.last_error


# --- the trigger command -------------------------------------------------------------------------------


def _trigger(*args):
    call_command("midtrans_sim", *args)


def test_trigger_settlement_with_duplicates(sim, receiver, capsys):
    _create()
    _trigger(ORDER, "settlement", "--duplicate", "3")
    statuses = [b["transaction_status"] for b in receiver.bodies()]
    assert statuses == ["pending", "settlement", "settlement", "settlement"]
    assert len({b["signature_key"] for b in receiver.bodies()[1:]}) == 1
    for body in receiver.bodies():
        _assert_signed(body)
    assert midtrans.transaction_status(midtrans_order_id=ORDER)["transaction_status"] == "settlement"
    out = capsys.readouterr().out
    assert out.count(": delivered after 1 attempt(s), HTTP 200") == 4


def test_trigger_out_of_order_sends_the_outcome_before_pending(sim, receiver):
    _create()
    _trigger(ORDER, "settlement", "--out-of-order")
    assert [b["transaction_status"] for b in receiver.bodies()] == ["settlement", "pending"]


def test_trigger_out_of_order_on_a_later_event_resends_the_previous_state_late(sim, receiver):
    snap = _create()
    sim.pay(snap.token, method="gopay")
    sim.deliver()
    receiver.received.clear()
    _trigger(ORDER, "refund", "--out-of-order")
    assert [b["transaction_status"] for b in receiver.bodies()] == ["refund", "settlement"]


def test_trigger_tampered_amount_is_validly_signed_but_differs_from_status(sim, receiver):
    _create()
    _trigger(ORDER, "settlement", "--amount", "1000")
    tampered = receiver.bodies()[-1]
    assert tampered["gross_amount"] == "1000.00"
    _assert_signed(tampered)
    assert midtrans.transaction_status(midtrans_order_id=ORDER)["gross_amount"] == "99000.00"


def test_trigger_bad_signature(sim, receiver):
    _create()
    _trigger(ORDER, "settlement", "--bad-signature")
    pending, forged = receiver.bodies()
    _assert_signed(pending)
    assert not midtrans.signature_verify(payload=forged)
    assert forged["signature_key"] != independent_signature(forged)


def test_trigger_stale_pending_after_settlement(sim, receiver):
    snap = _create()
    sim.pay(snap.token)
    _trigger(ORDER, "pending")
    stale = receiver.bodies()[-1]
    assert (stale["transaction_status"], stale["status_code"]) == ("pending", "201")
    _assert_signed(stale)
    assert midtrans.transaction_status(midtrans_order_id=ORDER)["transaction_status"] == "settlement"


@pytest.mark.parametrize(
    ("setup", "event", "extra", "expected"),
    [
        ("settle", "reversal", [], ("deny", "202")),
        ("settle", "chargeback", [], ("chargeback", "200")),
        ("settle", "refund", [], ("refund", "200")),
        ("settle", "partial_refund", ["--refund-amount", "10000"], ("partial_refund", "200")),
        (None, "challenge", [], ("capture", "201")),
        (None, "deny", [], ("deny", "202")),
        (None, "cancel", [], ("cancel", "202")),
        (None, "expire", [], ("expire", "202")),  # the status API answers 407 (below)
    ],
)
def test_trigger_events(sim, receiver, setup, event, extra, expected):
    snap = _create()
    if setup == "settle":
        sim.pay(snap.token, method="gopay")
    _trigger(ORDER, event, *extra)
    body = receiver.bodies()[-1]
    assert (body["transaction_status"], body["status_code"]) == expected
    _assert_signed(body)
    status = midtrans.transaction_status(midtrans_order_id=ORDER)
    # The status API says 407 for expire and 200 for cancel (their notifications: 202).
    read_as = {"expire": ("expire", "407"), "cancel": ("cancel", "200")}.get(event, expected)
    assert (status["transaction_status"], status["status_code"]) == read_as
    if event == "challenge":
        assert (body["fraud_status"], body["payment_type"]) == ("challenge", "credit_card")
    if event == "partial_refund":
        assert body["refund_amount"] == "10000.00"


def test_trigger_refund_sends_a_second_notification_when_the_bank_confirms(sim, receiver, settings):
    settings.MIDTRANS_SIMULATOR_TIME_COMPRESSION = 1_000_000
    snap = _create()
    sim.pay(snap.token, method="gopay")
    midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-1")
    sim.deliver_all(wait_seconds=10)
    refunds = [b for b in receiver.bodies() if b["transaction_status"] == "refund"]
    assert "bank_confirmed_at" not in refunds[0]["refunds"][0]
    assert refunds[0]["refunds"][0]["refund_method"] == "online"
    assert TIME_RE.match(refunds[1]["refunds"][0]["bank_confirmed_at"])
    for body in refunds:
        _assert_signed(body)


def _confirmations_due(**filters):
    from payments.simulator.models import SimRefundConfirmation

    return SimRefundConfirmation.objects.filter(**filters).update(due_at=timezone.now())


def test_bank_confirmation_shows_in_status_only_with_its_notification(sim, receiver, settings):
    settings.MIDTRANS_SIMULATOR_TIME_COMPRESSION = 1  # the bank confirms 60 s after the refund
    snap = _create()
    sim.pay(snap.token, method="gopay")
    sim.deliver()
    receiver.received.clear()

    midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-1", amount=40000)
    sim.deliver()

    # Not confirmed yet: neither the status API nor any notification says so.
    assert "bank_confirmed_at" not in midtrans.transaction_status(midtrans_order_id=ORDER)["refunds"][0]
    (first,) = receiver.bodies()
    assert "bank_confirmed_at" not in first["refunds"][0]
    assert [n.payload["refunds"][0].get("bank_confirmed_at") for n in sim.notifications(ORDER)[2:]] == [None]

    assert _confirmations_due(refund_chargeback_id=1) == 1  # 60 s pass
    status = midtrans.transaction_status(midtrans_order_id=ORDER)
    confirmed_at = status["refunds"][0]["bank_confirmed_at"]
    assert TIME_RE.match(confirmed_at)
    # The notification announcing it was queued with it, and says the same.
    assert [n.payload["refunds"][0].get("bank_confirmed_at") for n in sim.notifications(ORDER)[2:]] == [
        None,
        confirmed_at,
    ]
    sim.deliver()
    second = receiver.bodies()[-1]
    assert (second["transaction_status"], second["refunds"][0]["bank_confirmed_at"]) == (
        "partial_refund",
        confirmed_at,
    )
    _assert_signed(second)


def test_each_bank_confirmation_stamps_its_own_refund(sim, receiver, settings):
    settings.MIDTRANS_SIMULATOR_TIME_COMPRESSION = 1
    snap = _create()
    sim.pay(snap.token, method="qris")
    midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-1", amount=30000)
    midtrans.transaction_refund(midtrans_order_id=ORDER, refund_key="rf-2", amount=20000)
    sim.deliver()
    receiver.received.clear()

    def confirmed():
        refunds = SimTransaction.objects.get(order_id=ORDER).refunds
        return [(r["refund_chargeback_id"], "bank_confirmed_at" in r) for r in refunds]

    assert confirmed() == [(1, False), (2, False)]

    # The first refund's confirmation falls due after the second refund was made.
    _confirmations_due(refund_chargeback_id=1)
    sim.deliver_all(wait_seconds=5)
    assert confirmed() == [(1, True), (2, False)]
    (body,) = receiver.bodies()
    assert ["bank_confirmed_at" in r for r in body["refunds"]] == [True, False]

    _confirmations_due(refund_chargeback_id=2)
    sim.deliver_all(wait_seconds=5)
    assert confirmed() == [(1, True), (2, True)]
    first, second = receiver.bodies()
    assert second["refunds"][0]["bank_confirmed_at"] == first["refunds"][0]["bank_confirmed_at"]  # stamped once
    assert second["refunds"][1]["bank_confirmed_at"]


@pytest.mark.parametrize("event", ["refund", "partial_refund"])
def test_trigger_refund_sends_both_notifications(sim, receiver, settings, capsys, event):
    settings.MIDTRANS_SIMULATOR_TIME_COMPRESSION = 1_000_000
    snap = _create()
    sim.pay(snap.token, method="gopay")
    sim.deliver()
    receiver.received.clear()

    _trigger(ORDER, event, "--wait", "5")

    bodies = receiver.bodies()
    assert [b["transaction_status"] for b in bodies] == [event, event]
    assert "bank_confirmed_at" not in bodies[0]["refunds"][0]
    assert TIME_RE.match(bodies[1]["refunds"][0]["bank_confirmed_at"])
    for body in bodies:
        _assert_signed(body)
    assert capsys.readouterr().out.count(": delivered after 1 attempt(s), HTTP 200") == 2


def test_trigger_refund_without_wait_leaves_the_confirmation_to_the_web_process(sim, receiver, capsys):
    snap = _create()
    sim.pay(snap.token, method="gopay")
    sim.deliver()
    receiver.received.clear()
    _trigger(ORDER, "refund")
    assert ["bank_confirmed_at" in b["refunds"][0] for b in receiver.bodies()] == [False]
    assert "refund 1: the bank confirms at" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["BF-NOPE-1", "settlement"], "no simulated transaction"),
        ([ORDER, "refund"], "no payment method chosen yet"),
        ([ORDER, "settlement", "--duplicate", "0"], "duplicate must be at least 1"),
        ([ORDER, "settlement", "--amount", "0"], "amount must be a positive"),
    ],
)
def test_trigger_bad_input_changes_nothing(sim, receiver, args, message):
    _create()
    before = SimTransaction.objects.values().get(order_id=ORDER)
    with pytest.raises(CommandError, match=message):
        _trigger(*args)
    assert SimTransaction.objects.values().get(order_id=ORDER) == before
    assert SimNotification.objects.count() == 0


def test_trigger_invalid_transition_changes_nothing(sim, receiver):
    snap = _create()
    sim.expire(snap.token)
    before = SimTransaction.objects.values().get(order_id=ORDER)
    count = SimNotification.objects.count()
    with pytest.raises(CommandError, match="expire"):
        _trigger(ORDER, "settlement")
    assert SimTransaction.objects.values().get(order_id=ORDER) == before
    assert SimNotification.objects.count() == count


def test_trigger_no_send_leaves_rows_queued(sim, receiver):
    _create()
    _trigger(ORDER, "settlement", "--no-send")
    assert receiver.received == []
    assert [n.status for n in sim.notifications(ORDER)] == ["pending", "pending"]
    assert SimNotification.objects.filter(due_at__lte=timezone.now() + timedelta(seconds=1)).count() == 2
