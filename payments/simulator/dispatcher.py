"""Delivers the simulator's HTTP notifications from a database queue (SimNotification rows).

A row per delivery, with its due time and attempts, so deliveries survive restarts and
retries can be watched. A daemon thread in the web process drains the queue; it is
started by the first request of any kind a web process serves while MIDTRANS_SIMULATOR
is on (Django's request_started signal, connected in apps.py), so after a restart the
retries and expiries already scheduled go on without waiting for a simulator call. Never
at import, so `migrate`, other management commands and the Celery worker start none; the
tests start it only when they ask (the midtrans_sim fixture). The trigger command drains
synchronously instead. Claims are conditional UPDATEs, so several gunicorn workers (each
with a thread) never send a row twice.

Midtrans' behaviour that is reproduced (reference §3): POST with `User-Agent: Veritrans`,
JSON body; any 2xx is success; retries by the answer: 500 -> 1, 503 -> 4, 400/404 -> 2,
301/302/303 -> none, 307/308 -> re-POST to the new location (at most 5 redirects),
anything else (timeout, 401, 403, 502 ...) -> 5; retries at 2, 10, 30, 90 and 210 minutes
after the previous attempt, randomly shifted, divided by MIDTRANS_SIMULATOR_TIME_COMPRESSION.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from datetime import timedelta
from urllib.parse import urljoin

import requests
from django.conf import settings
from django.db import connections
from django.db.models import Q
from django.utils import timezone

from payments.simulator import services
from payments.simulator.models import SimNotification, SimRefundConfirmation
from payments.simulator.outbox import sender_wake

logger = logging.getLogger(__name__)

RETRY_SCHEDULE_MINUTES = (2, 10, 30, 90, 210)
SEND_TIMEOUT_SECONDS = 15.0
MAX_REDIRECTS = 5
LEASE_SECONDS = 120
IDLE_POLL_SECONDS = 1.0


def retries_allowed(http_status: int | None) -> int:
    """How many retries Midtrans makes after an answer with this HTTP status (None = no answer)."""
    if http_status in (301, 302, 303):
        return 0
    if http_status == 500:
        return 1
    if http_status == 503:
        return 4
    if http_status in (400, 404):
        return 2
    return 5


# --- Delivery ---------------------------------------------------------------------------------------


def _claimable(now) -> Q:
    return Q(status=SimNotification.Status.PENDING, due_at__lte=now) | Q(
        status=SimNotification.Status.SENDING, locked_until__lt=now
    )


def _claim_next(*, only_ids: list[int] | None = None) -> SimNotification | None:
    now = timezone.now()
    candidates = SimNotification.objects.filter(_claimable(now))
    if only_ids is not None:
        candidates = candidates.filter(id__in=only_ids)
    for row_id in candidates.order_by("due_at", "id").values_list("id", flat=True)[:10]:
        claimed = SimNotification.objects.filter(_claimable(now), id=row_id).update(
            status=SimNotification.Status.SENDING, locked_until=now + timedelta(seconds=LEASE_SECONDS)
        )
        if claimed:
            return SimNotification.objects.get(id=row_id)
    return None


def _post(body: bytes, target_url: str = "") -> tuple[str, int | None, str]:
    """POST like Midtrans; returns (final url, HTTP status or None, error text)."""
    url = target_url or settings.MIDTRANS_NOTIFICATION_URL  # read at send time
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": "Veritrans",
        "Connection": "close",
    }
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = requests.post(
                url, data=body, headers=headers, timeout=SEND_TIMEOUT_SECONDS, allow_redirects=False
            )
        except requests.RequestException as exc:
            return url, None, f"{type(exc).__name__}: {exc}"[:500]
        if response.status_code in (307, 308) and response.headers.get("Location"):
            url = urljoin(url, response.headers["Location"])
            continue
        return url, response.status_code, ""
    return url, None, "too many redirects"


def delivery_attempt(row: SimNotification) -> SimNotification:
    """Send one claimed row once and book the outcome (delivered, retry later, or given up)."""
    body = json.dumps(row.payload, ensure_ascii=False).encode("utf-8")
    started = time.monotonic()
    url, http_status, error = _post(body, row.target_url)
    now = timezone.now()
    row.attempts += 1
    row.url = url
    row.last_http_status = http_status
    row.last_error = error
    row.locked_until = None
    row.history = [*row.history, {"at": now.isoformat(), "url": url, "http_status": http_status, "error": error}]
    if http_status is not None and 200 <= http_status < 300:
        row.status = SimNotification.Status.DELIVERED
        row.delivered_at = now
        outcome = "delivered"
    elif row.attempts - 1 < min(retries_allowed(http_status), len(RETRY_SCHEDULE_MINUTES)):
        compression = max(float(settings.MIDTRANS_SIMULATOR_TIME_COMPRESSION), 1e-9)
        delay = RETRY_SCHEDULE_MINUTES[row.attempts - 1] * 60 / compression * random.uniform(0.9, 1.1)
        row.status = SimNotification.Status.PENDING
        row.due_at = now + timedelta(seconds=delay)
        outcome = "retry_scheduled"
    else:
        row.status = SimNotification.Status.FAILED
        outcome = "given_up"
    row.save()
    logger.info(
        "midtrans_sim_notification",
        extra={
            "midtrans_order_id": row.payload.get("order_id"),
            "transaction_status": row.payload.get("transaction_status"),
            "status_code": row.payload.get("status_code"),
            "url": url,
            "http_status": http_status,
            "attempt": row.attempts,
            "outcome": outcome,
            "next_due_at": row.due_at.isoformat() if outcome == "retry_scheduled" else None,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "error": error or None,
        },
    )
    return row


def deliveries_settle(*, timeout: float = 10.0) -> list[SimNotification]:
    """Deliver everything due now and wait for attempts in flight (e.g. in the thread) to finish.

    Retries scheduled for later are left alone. Returns the rows this call attempted.
    """
    deadline = time.monotonic() + timeout
    sent: list[SimNotification] = []
    while True:
        sent.extend(deliveries_drain())
        now = timezone.now()
        busy = SimNotification.objects.filter(
            Q(status=SimNotification.Status.SENDING) | Q(status=SimNotification.Status.PENDING, due_at__lte=now)
        ).exists()
        if not busy or time.monotonic() >= deadline:
            return sent
        time.sleep(0.02)


def deliveries_await(*, ids: list[int], timeout: float) -> list[SimNotification]:
    """The rows, once none of them is mid-send (another process may be sending them)."""
    deadline = time.monotonic() + timeout
    while (
        SimNotification.objects.filter(id__in=ids, status=SimNotification.Status.SENDING).exists()
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    return list(SimNotification.objects.filter(id__in=ids).order_by("due_at", "id"))


def _refund_confirmations_apply_due(transaction_pks: list[int] | None) -> list[int]:
    return services.refund_confirmations_apply_due(transaction_pks=transaction_pks)


def _refund_confirmation_next_due(transaction_pks: list[int] | None = None):
    due = SimRefundConfirmation.objects.filter(applied_at__isnull=True)
    if transaction_pks is not None:
        due = due.filter(transaction_id__in=transaction_pks)
    return due.order_by("due_at").values_list("due_at", flat=True).first()


def deliveries_drain(*, only_ids: list[int] | None = None, wait_seconds: float = 0.0) -> list[SimNotification]:
    """Send every due row now (in due order), in this thread.

    Refund confirmations that fall due meanwhile are applied first (all of them, or those of
    the transactions of `only_ids`), and their notifications sent too. With `wait_seconds`,
    keep going until the rows in `only_ids` (or all rows) are delivered or given up and those
    confirmations applied, sleeping until the next one is due, for at most that long.
    """
    deadline = time.monotonic() + wait_seconds
    sent: list[SimNotification] = []
    tx_pks = None
    if only_ids is not None:
        only_ids = list(only_ids)
        tx_pks = list(SimNotification.objects.filter(id__in=only_ids).values_list("transaction_id", flat=True))
    while True:
        confirmed = _refund_confirmations_apply_due(tx_pks)
        if only_ids is not None:
            only_ids.extend(confirmed)
        row = _claim_next(only_ids=only_ids)
        if row is not None:
            sent.append(delivery_attempt(row))
            continue
        open_rows = SimNotification.objects.filter(
            status__in=[SimNotification.Status.PENDING, SimNotification.Status.SENDING]
        )
        if only_ids is not None:
            open_rows = open_rows.filter(id__in=only_ids)
        due_times = [
            open_rows.order_by("due_at").values_list("due_at", flat=True).first(),
            _refund_confirmation_next_due(tx_pks),
        ]
        next_due = min((d for d in due_times if d is not None), default=None)
        if next_due is None or time.monotonic() >= deadline:
            return sent
        pause = max(0.01, min((next_due - timezone.now()).total_seconds(), deadline - time.monotonic(), 1.0))
        time.sleep(pause)


# --- The background thread -----------------------------------------------------------------------

_lock = threading.Lock()
_stop = threading.Event()
_thread: threading.Thread | None = None


def dispatcher_running() -> bool:
    return _thread is not None and _thread.is_alive()


_autostart = True


def dispatcher_autostart(enabled: bool) -> bool:
    """Let (or stop) requests start the thread; returns the previous setting.

    The test suite turns it off for every test (conftest.py); tests that want the thread
    turn it on (the midtrans_sim fixture), tests that deliver by hand turn it off again.
    """
    global _autostart
    previous, _autostart = _autostart, enabled
    return previous


def dispatcher_on_request(sender, **kwargs) -> None:
    """request_started receiver: the first request a web process serves starts its thread.

    Any request, not only a simulator call: after a restart the queue (retries, expiries)
    must drain even if nobody calls the simulator. Cheap when the thread runs already.
    """
    if _autostart and not dispatcher_running() and settings.MIDTRANS_SIMULATOR:
        dispatcher_ensure_started()


def dispatcher_ensure_started() -> None:
    """Start this process's delivery thread once (see dispatcher_on_request)."""
    global _thread
    if not _autostart or dispatcher_running():
        return
    with _lock:
        if dispatcher_running():
            return
        _stop.clear()
        _thread = threading.Thread(target=_run, name="midtrans-sim-dispatcher", daemon=True)
        _thread.start()


def dispatcher_stop(timeout: float = 20.0) -> None:
    """Stop the thread and wait for it (tests call this before the database is flushed)."""
    global _thread
    with _lock:
        thread = _thread
        if thread is None:
            return
        _stop.set()
        sender_wake.set()
    thread.join(timeout)
    with _lock:
        if _thread is thread and not thread.is_alive():
            _thread = None


def _next_pause() -> float:
    due_times = [
        SimNotification.objects.filter(status=SimNotification.Status.PENDING)
        .order_by("due_at")
        .values_list("due_at", flat=True)
        .first(),
        _refund_confirmation_next_due(),
    ]
    next_due = min((d for d in due_times if d is not None), default=None)
    if next_due is None:
        return IDLE_POLL_SECONDS
    return max(0.0, min(IDLE_POLL_SECONDS, (next_due - timezone.now()).total_seconds()))


def _run() -> None:
    try:
        while not _stop.is_set():
            pause = IDLE_POLL_SECONDS
            try:
                services.transactions_expire_due()
                _refund_confirmations_apply_due(None)
                while not _stop.is_set():
                    row = _claim_next()
                    if row is None:
                        break
                    delivery_attempt(row)
                pause = _next_pause()
            except Exception:
                logger.exception("midtrans_sim_dispatcher_error")
                # A broken connection must not poison the next round.
                connections.close_all()
            if pause > 0:
                sender_wake.wait(pause)
            sender_wake.clear()
    finally:
        connections.close_all()
