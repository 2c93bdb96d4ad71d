"""The only module that talks to Midtrans (Snap API and Core API), over urllib3.

Why not the official `midtransclient`: it sets no timeouts, never checks signatures,
does not URL-encode ids and is unmaintained (see ../shared/reference/midtrans-api.md §5).

Every call:
- reads its settings at call time (base URLs, key, timeouts), so tests can override them;
- has a connect and a read timeout;
- passes through a circuit breaker whose state lives in the Django cache (Redis in
  production), so every web and worker process of a deployment shares it; Snap and the
  Core API have one breaker each, counting one failure per call (after its retries);
- holds one of this process's MIDTRANS_MAX_CONCURRENT_CALLS slots for its host while it
  runs, so calls to a slow Midtrans hold at most that many threads per host;
- logs exactly one structured line per HTTP call (`midtrans_call`), or one
  `midtrans_call_refused` line when the open breaker or a full set of slots refused it
  without a call.

Only status reads are retried (with backoff): they are safe to repeat. Snap create is
never retried here: a repeated create could issue a second token for one order; the
caller decides (it retries with the same Midtrans order id, which Midtrans answers
with a fresh token while no method is chosen).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import requests
import urllib3
from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from urllib3.util import create_urllib3_context

from common.metrics import midtrans_call_seconds, midtrans_calls_refused_total

logger = logging.getLogger(__name__)

# Midtrans' answers to a reused order id (Indonesian and English variants, §1 and §6).
DUPLICATE_ORDER_ID_MARKERS = ("sudah digunakan", "has already been taken", "has been paid and utilized")

# Body status codes that are data, not errors: "404" on a status read means unknown or
# no method chosen yet; "407" means expired. All official clients exclude 407.
_STATUS_DATA_CODES = {"404", "407"}

# The reference gives no limit for refund_key; the simulator refuses longer keys, and ours
# (attempt id + a counter) are far shorter.
REFUND_KEY_MAX_LENGTH = 100
# Midtrans' refund API: "Allowed characters are alphabets, numbers, dash (-), and underscore (_)".
REFUND_KEY_CHARACTERS = re.compile(r"^[A-Za-z0-9_-]+$")

_RETRY_BACKOFF_BASE = 0.1  # seconds; doubled per retry, with jitter
_RETRY_BACKOFF_MAX = 1.0


# --- Errors ----------------------------------------------------------------------------------


class MidtransError(Exception):
    """A Midtrans call that did not succeed. `messages` holds Midtrans' own words."""

    def __init__(
        self,
        message: str = "",
        *,
        operation: str = "",
        midtrans_order_id: str = "",
        http_status: int | None = None,
        messages: list[str] | None = None,
        status_code: str = "",
    ):
        self.operation = operation
        self.midtrans_order_id = midtrans_order_id
        self.http_status = http_status
        self.messages = list(messages or [])
        # The body's status_code (Core API), when there was one, e.g. "412".
        self.status_code = status_code
        super().__init__(message or "; ".join(self.messages) or type(self).__name__)


class MidtransUnauthorized(MidtransError):
    """401: the server key is wrong or from the other environment."""


class MidtransValidationError(MidtransError):
    """400 with `error_messages`: Midtrans refused the request as sent."""


class MidtransDuplicateOrderId(MidtransValidationError):
    """The Midtrans order id was already used once a method was chosen (or paid)."""


class MidtransNotFound(MidtransError):
    """HTTP 404 (or a 404 answer to an action); a status read's body "404" is data instead."""


class MidtransWrongState(MidtransError):
    """412: the transaction is not in a state that allows this action (e.g. cancel after settlement)."""


class MidtransDuplicateRefundKey(MidtransError):
    """406 on a refund: this refund_key was already used, so the refund was already requested."""


class MidtransConfigurationError(MidtransError):
    """Our configuration is wrong, not Midtrans: a 3xx redirect (a base URL with the wrong scheme
    or host, a proxy in the way; `location` is where it pointed), or a CA bundle that cannot be
    loaded. Not retried, and not a breaker failure: Midtrans is not down, we cannot reach it
    as configured."""

    location: str = ""


class MidtransUnavailable(MidtransError):
    """Midtrans could not answer: callers answer 503 / retry later."""


class MidtransServerError(MidtransUnavailable):
    """5xx, or an answer that is not JSON (a proxy's HTML error page)."""


class MidtransTimeout(MidtransUnavailable):
    """Connect or read timeout, or the connection was refused."""


class MidtransRateLimited(MidtransUnavailable):
    """429: Midtrans is up but throttling us. Callers fail fast (503 / retry later); status reads
    retry once Retry-After has passed if that fits their budget. Not a breaker failure: the
    breaker guards against a Midtrans that is down or hanging, and a throttled call answers at
    once, so opening it (and refusing Snap checkouts for a cool-down) would only add an outage.
    `retry_after`: seconds Midtrans asked us to wait (Retry-After), None when it did not say."""

    retry_after: float | None = None


class MidtransInProgress(MidtransUnavailable):
    """HTTP 202 to a call that sent an Idempotency-Key: Midtrans is still running the first call
    with that key. No result yet; a later retry with the same key gets the first call's result."""


class MidtransBusy(MidtransUnavailable):
    """This process already has MIDTRANS_MAX_CONCURRENT_CALLS calls to this host in flight
    (Midtrans is answering slowly): failed fast without calling, so the process keeps threads
    for requests that never call Midtrans. Not a breaker failure: slow is not down.
    `retry_after`: seconds to wait before trying again."""

    retry_after: float | None = None


class MidtransCircuitOpen(MidtransUnavailable):
    """The circuit breaker is open: failed fast without calling Midtrans.

    `breaker`: "snap" or "core" (which host's breaker); `retry_after`: seconds until it lets
    a probe call through (the rest of the cool-down)."""

    breaker: str = ""
    retry_after: float | None = None


@dataclass(frozen=True)
class SnapTransaction:
    token: str
    redirect_url: str


# --- Signature ----------------------------------------------------------------------------------


def signature_compute(*, order_id: str, status_code: str, gross_amount: str, server_key: str | None = None) -> str:
    """hex(SHA512(order_id + status_code + gross_amount + server_key)) of the strings verbatim."""
    key = settings.MIDTRANS_SERVER_KEY if server_key is None else server_key
    raw = f"{order_id}{status_code}{gross_amount}{key}".encode()
    return hashlib.sha512(raw).hexdigest()


def signature_verify(*, payload: dict, server_key: str | None = None) -> bool:
    """True only when `signature_key` matches the payload's own strings (constant-time)."""
    if not isinstance(payload, dict):
        return False
    fields = [payload.get(name) for name in ("order_id", "status_code", "gross_amount", "signature_key")]
    # Verbatim strings only: an int status_code or a float amount would sign differently.
    if not all(isinstance(value, str) and value for value in fields):
        return False
    order_id, status_code, gross_amount, received = fields
    key = settings.MIDTRANS_SERVER_KEY if server_key is None else server_key
    if not key:
        return False
    expected = signature_compute(order_id=order_id, status_code=status_code, gross_amount=gross_amount, server_key=key)
    return hmac.compare_digest(expected.encode(), received.strip().lower().encode())


# --- Call slots (per process) ---------------------------------------------------------------------

# A call holds its thread for up to its timeouts. Without a limit, a burst of checkouts
# against a Snap that answers in seconds takes every thread of a web worker, and requests
# that never call Midtrans (the course platform's entitlement check, the finish page's
# polling, health checks, the admin) wait behind them. Each host has its own slots, as it
# has its own breaker: a slow Core API (webhook status reads) must not stop checkouts, nor
# a slow Snap the webhooks. Both hosts' slots together stay below the web worker's thread
# count (start-up check buatfilm.E017).
SLOT_WAIT_SECONDS = 0.5  # a burst on a healthy Midtrans waits this long for a slot
BUSY_RETRY_AFTER_SECONDS = 2
# A call that would have less than this left before its deadline once it has a slot is not
# made: a try cut that short would only time out and count against a healthy Midtrans.
_MIN_TRY_SECONDS = 0.1
_slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}


def _call_slots(breaker: str) -> threading.BoundedSemaphore:
    """This process's slots for calls to `breaker`'s host (setdefault is atomic under the GIL)."""
    key = (breaker, int(settings.MIDTRANS_MAX_CONCURRENT_CALLS))
    return _slots.get(key) or _slots.setdefault(key, threading.BoundedSemaphore(key[1]))


# A process forked while a thread held a slot would inherit one slot fewer for good.
os.register_at_fork(after_in_child=_slots.clear)


@contextmanager
def _call_slot_held(*, breaker: str, deadline: float | None, operation: str, midtrans_order_id: str):
    """Hold one of this process's slots for `breaker`'s host; MidtransBusy when none frees up in
    time: within SLOT_WAIT_SECONDS, and early enough before `deadline` for a try."""
    slots = _call_slots(breaker)
    wait = SLOT_WAIT_SECONDS
    if deadline is not None:
        wait = min(wait, deadline - time.monotonic() - _MIN_TRY_SECONDS)
    acquired = slots.acquire(timeout=max(0.0, wait))
    if acquired and deadline is not None and deadline - time.monotonic() < _MIN_TRY_SECONDS:
        slots.release()  # got it too late after all (the thread was not scheduled in time)
        acquired = False
    if not acquired:
        busy = MidtransBusy(
            f"{settings.MIDTRANS_MAX_CONCURRENT_CALLS} calls to Midtrans {breaker} already in flight in this "
            "process; failing fast"
        )
        busy.retry_after = BUSY_RETRY_AFTER_SECONDS
        raise _refused(busy, operation=operation, midtrans_order_id=midtrans_order_id, breaker=breaker, reason="busy")
    try:
        yield
    finally:
        slots.release()


def _refused(error: MidtransUnavailable, *, operation: str, midtrans_order_id: str, breaker: str, reason: str):
    error.operation, error.midtrans_order_id = operation, midtrans_order_id
    midtrans_calls_refused_total.labels(breaker=breaker, reason=reason).inc()
    logger.warning(
        "midtrans_call_refused",
        extra={"operation": operation, "midtrans_order_id": midtrans_order_id, "reason": reason, "breaker": breaker},
    )
    return error


# --- Circuit breaker (state in the shared cache) -----------------------------------------------------

# One breaker per Midtrans host: Snap (app.midtrans.com) and the Core API (api.midtrans.com)
# fail independently, and a Core outage (status reads from webhooks and the reconciler) must
# not stop checkouts, which need only Snap.
SNAP = "snap"
CORE = "core"
BREAKERS = (SNAP, CORE)
_CB_TTL = 24 * 3600
_STATE_RANK = {"closed": 0, "half_open": 1, "open": 2}


def _cb_keys(breaker: str) -> tuple[str, str, str]:
    """The cache keys of one breaker: failure count, opened-at time, half-open probe."""
    return (
        f"midtrans:circuit:{breaker}:failures",
        f"midtrans:circuit:{breaker}:opened_at",
        f"midtrans:circuit:{breaker}:probe",
    )


# A broken cache must never break payments: the breaker then behaves as closed. After a
# cache error this process leaves the cache alone for a while, so a Redis outage costs
# each Midtrans call nothing instead of a socket timeout per breaker lookup.
_CACHE_RETRY_AFTER = 10.0
_cache_down_until = 0.0


def _cache_call(fn, *args, default=None, **kwargs):
    global _cache_down_until
    if time.monotonic() < _cache_down_until:
        return default
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        # A cache answer, not an outage (e.g. incr() of a key another process just deleted):
        # the cache stays in use, and an open breaker stays honoured.
        logger.info("midtrans_circuit_cache_value_error", extra={"error": str(exc)[:300]})
        return default
    except Exception as exc:
        _cache_down_until = time.monotonic() + _CACHE_RETRY_AFTER
        logger.warning(
            "midtrans_circuit_cache_unavailable",
            extra={"error": f"{type(exc).__name__}: {exc}"[:300], "retry_after_s": _CACHE_RETRY_AFTER},
        )
        return default


def _counter_incr(key: str, ttl: int) -> int:
    """Add one to a shared counter, creating it when missing, atomically; returns the new count.

    Django's RedisCache.incr() is EXISTS then INCR and raises ValueError when the key vanished
    in between (another process's success resets the breaker): with Redis, INCR and EXPIRE go
    in one MULTI pipeline instead (INCR creates a missing key). Other backends (locmem) get
    add() then incr(), again if the key vanished in between.
    """
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        full_key = backend.make_and_validate_key(key)
        pipe = backend._cache.get_client(full_key, write=True).pipeline(transaction=True)
        pipe.incr(full_key)
        pipe.expire(full_key, ttl)
        count, _ = pipe.execute()
        return int(count)
    for _ in range(3):
        backend.add(key, 0, ttl)
        try:
            return backend.incr(key)
        except ValueError:
            continue  # deleted between add() and incr(): add it again
    return 1


def _breaker_keys_read(breaker: str) -> dict:
    failures_key, opened_key, _ = _cb_keys(breaker)
    found = _cache_call(cache.get_many, [failures_key, opened_key], default={}) or {}
    return {"failures": found.get(failures_key), "opened_at": found.get(opened_key)}


def _breaker_state(breaker: str) -> dict:
    found = _breaker_keys_read(breaker)
    opened_at = found["opened_at"]
    if opened_at is None:
        state = "closed"
    elif time.time() - float(opened_at) < float(settings.MIDTRANS_BREAKER_COOLDOWN):
        state = "open"
    else:
        state = "half_open"
    return {
        "state": state,
        "failures": int(found["failures"] or 0),
        "opened_at": datetime.fromtimestamp(float(opened_at), UTC).isoformat() if opened_at is not None else None,
    }


def circuit_state() -> dict:
    """The breakers as /health shows them: closed, open (failing fast) or half_open (next call probes).

    {"state", "failures", "opened_at"} at the top are the worse of the two breakers (so a
    reader of one state keeps working), then each breaker on its own under "snap" and "core".
    """
    each = {breaker: _breaker_state(breaker) for breaker in BREAKERS}
    # The worst state; between two equally bad ones the later opening (the longer wait).
    worst = max(each.values(), key=lambda b: (_STATE_RANK[b["state"]], b["opened_at"] or "", b["failures"]))
    return {**worst, **each}


def _circuit_admit(breaker: str) -> bool:
    """Whether a call may go out. Returns True when this call is the half-open probe."""
    return _circuit_admit_state(breaker)[0]


def _circuit_admit_state(breaker: str) -> tuple[bool, dict]:
    """_circuit_admit(), plus the breaker's keys as read (so a success needs no second read)."""
    state = _breaker_keys_read(breaker)
    opened_at = state["opened_at"]
    if opened_at is None:
        return False, state
    cooldown = float(settings.MIDTRANS_BREAKER_COOLDOWN)
    remaining = cooldown - (time.time() - float(opened_at))
    if remaining > 0:
        error = MidtransCircuitOpen(f"Midtrans {breaker} circuit is open; failing fast")
        error.breaker, error.retry_after = breaker, remaining
        raise error
    # Cool-down over: exactly one caller (across processes, via cache.add) probes.
    probe_ttl = int(float(settings.MIDTRANS_CONNECT_TIMEOUT) + float(settings.MIDTRANS_READ_TIMEOUT)) + 5
    if _cache_call(cache.add, _cb_keys(breaker)[2], 1, probe_ttl):
        return True, state
    error = MidtransCircuitOpen(f"Midtrans {breaker} circuit is half-open and a probe call is in flight; failing fast")
    error.breaker, error.retry_after = breaker, 1.0
    raise error


def _circuit_success(breaker: str, *, probe: bool, state: dict | None = None) -> None:
    """Reset the breaker after an answer. `state`: the keys as read when the call was admitted.

    Judging by what was read at admission keeps a normal call at one cache round trip; a
    failure another process records while this call is in flight is reset by the next success.
    """
    if state is None:
        state = _breaker_keys_read(breaker)
    if probe or state.get("failures") or state.get("opened_at") is not None:
        _cache_call(cache.delete_many, list(_cb_keys(breaker)))
        if state.get("opened_at") is not None:
            logger.info("midtrans_circuit_closed", extra={"breaker": breaker})


def _circuit_failure(breaker: str, *, probe: bool) -> None:
    """Count one failed call (after its retries); opens the breaker at MIDTRANS_BREAKER_FAILURES."""
    failures_key, opened_key, probe_key = _cb_keys(breaker)
    if probe:
        # The probe failed: open again for a full cool-down.
        _cache_call(cache.set, opened_key, time.time(), _CB_TTL)
        _cache_call(cache.delete, probe_key)
        logger.warning("midtrans_circuit_reopened", extra={"breaker": breaker})
        return
    failures = _cache_call(_counter_incr, failures_key, _CB_TTL) or 0
    # add(): when several processes cross the threshold together, the first one's time stands.
    if failures >= int(settings.MIDTRANS_BREAKER_FAILURES) and _cache_call(cache.add, opened_key, time.time(), _CB_TTL):
        logger.warning("midtrans_circuit_opened", extra={"breaker": breaker, "failures": failures})


def _circuit_release(breaker: str, *, probe: bool) -> None:
    """An outcome that says nothing about Midtrans' health: a probe hands its turn back."""
    if probe:
        _cache_call(cache.delete, _cb_keys(breaker)[2])


# --- HTTP ----------------------------------------------------------------------------------------

# One urllib3 PoolManager per base URL and process, shared by the process's threads (a PoolManager
# and its pools are thread-safe), so consecutive calls reuse a kept-alive connection: no TCP (in
# production TLS) handshake per call, for us or for Midtrans. urllib3 directly instead of requests:
# requests cost ~0.4 ms of CPU per call on top of it (request preparation, environment merging,
# its Response), and a web request spends ~5 ms in all.
# A connection idle for longer than this is dropped instead of reused: a server may close an idle
# connection at any moment (gunicorn's default keep-alive is 2 s), and a request written onto a
# connection the server is just closing fails although nothing is wrong. Under load calls follow
# each other closely and reuse; a quiet process opens a fresh connection per call, as before.
_KEEPALIVE_IDLE_SECONDS = 1.0
# Connections kept per host and process: enough for every thread of a gthread worker or a threaded
# Celery worker to keep its own. More calls at once still go out; the surplus connections are closed
# after use instead of kept.
_POOL_MAXSIZE = 32


class _IdleLimitedPoolMixin:
    """A connection idle in the pool for longer than _KEEPALIVE_IDLE_SECONDS is closed when taken
    out; the request then connects afresh (as urllib3 does for a connection the server closed).

    _get_conn/_put_conn are the pool's own hooks for taking and returning a connection (urllib3 is
    pinned in requirements.txt; test_midtrans_http checks the rule over real connections)."""

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        idle_since = getattr(conn, "midtrans_idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since > _KEEPALIVE_IDLE_SECONDS:
            conn.close()
        return conn

    def _put_conn(self, conn) -> None:
        if conn is not None:
            conn.midtrans_idle_since = time.monotonic()
        super()._put_conn(conn)


class _HTTPPool(_IdleLimitedPoolMixin, urllib3.HTTPConnectionPool):
    pass


class _HTTPSPool(_IdleLimitedPoolMixin, urllib3.HTTPSConnectionPool):
    pass


class _Pools:
    """This process's pool managers, by base URL (scheme://host[:port])."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_base: dict[str, urllib3.PoolManager] = {}


_pools = _Pools()
# In a forked child: the parent's pools, kept referenced (see _pools_forget_after_fork).
_inherited_pools: list[_Pools] = []


def _pools_forget_after_fork() -> None:
    # A process forked after a call to Midtrans (gunicorn --preload, Celery prefork) holds copies of
    # the parent's kept-alive sockets: leave them to the parent and start afresh, with a new lock
    # (another thread of the parent may have held it at the fork).
    #
    # The parent's pools stay referenced: dropping them would run urllib3's pool finalizers here,
    # which take each pool's queue lock, and a lock another thread of the parent held at the fork
    # is held forever in the child, which would then hang inside os.fork(). Only this process's
    # copies of their sockets are closed, without taking any lock (closing a copy leaves the
    # parent's connection open).
    global _pools
    inherited, _pools = _pools, _Pools()
    _inherited_pools.append(inherited)
    for manager in list(inherited.by_base.values()):
        for pool in list(manager.pools._container.values()):
            for conn in list(getattr(pool.pool, "queue", None) or ()):
                sock = getattr(conn, "sock", None)
                if sock is not None:
                    sock.close()


os.register_at_fork(after_in_child=_pools_forget_after_fork)


def _base_url(url: str) -> str:
    return "/".join(url.split("/", 3)[:3])


def _pool_manager(url: str) -> urllib3.PoolManager:
    pools = _pools
    base = _base_url(url)
    manager = pools.by_base.get(base)
    if manager is None:
        with pools.lock:
            manager = pools.by_base.get(base)
            if manager is None:
                # The environment is read here, once per base URL and process, not on every call.
                manager = pools.by_base[base] = _pool_manager_new(base)
    return manager


def _pool_manager_new(base: str) -> urllib3.PoolManager:
    env = _env_settings(base + "/")
    proxy = env["proxy"]
    kwargs: dict = {"maxsize": _POOL_MAXSIZE, "block": False}
    if base.lower().startswith("https:") or (proxy or "").lower().startswith("https:"):
        kwargs["ssl_context"] = _ssl_context(env["ca_bundle"])
    if proxy:
        manager = urllib3.ProxyManager(
            proxy,
            proxy_headers=_proxy_headers(proxy),
            proxy_ssl_context=kwargs.get("ssl_context"),
            **kwargs,
        )
    else:
        manager = urllib3.PoolManager(**kwargs)
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager


def _env_settings(url: str) -> dict:
    """What requests takes from the environment for `url` (trust_env), read by requests itself:
    `proxy`, the proxy URL (HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, unless NO_PROXY exempts the
    host; None: no proxy), and `ca_bundle`, REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else the bundle
    requests verifies with (certifi's). Called once per base URL and process, off the hot path."""
    with requests.Session() as probe:
        found = probe.merge_environment_settings(url, {}, None, None, None)
    proxy = requests.utils.select_proxy(url, found["proxies"])
    if proxy:
        proxy = requests.utils.prepend_scheme_if_needed(proxy, "http")  # "host:3128": plain HTTP to it
    verify = found["verify"]
    return {"proxy": proxy or None, "ca_bundle": verify if isinstance(verify, str) else requests.certs.where()}


def ca_bundle_path(url: str) -> str:
    """The CA bundle (file or directory) calls to `url` will be verified with: REQUESTS_CA_BUNDLE
    or CURL_CA_BUNDLE as requests picks between them, else certifi's. For the start-up check."""
    return _env_settings(url)["ca_bundle"]


def _proxy_headers(proxy: str) -> dict:
    # Credentials in the proxy URL become Proxy-Authorization, as requests sends them.
    return requests.adapters.HTTPAdapter().proxy_headers(proxy)


def _ssl_context(ca_bundle: str | None):
    """One TLS context per pool manager, its CA bundle loaded once: loading certifi's bundle costs
    ~15 ms of CPU, which urllib3 (and requests) otherwise spend on every new connection."""
    context = create_urllib3_context()
    try:
        if ca_bundle is None:
            context.load_default_certs()
        elif os.path.isdir(ca_bundle):
            context.load_verify_locations(capath=ca_bundle)
        else:
            context.load_verify_locations(cafile=ca_bundle)
    except OSError as exc:
        # A missing or unreadable bundle is our configuration, not Midtrans being down: it is not
        # retried and opens no breaker (see MidtransConfigurationError), and it says what to fix.
        raise MidtransConfigurationError(
            f"cannot load the CA bundle {ca_bundle!r} ({exc.strerror or exc}); fix or unset "
            f"REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE"
        ) from exc
    return context


def http_sessions_close() -> None:
    """Close every kept-alive connection to Midtrans in this process and forget the pools (the next
    call builds them again, reading the environment afresh).

    For test teardown: a server thread of pytest-django's live_server serves one connection
    until the client closes it, and holds its own database connection meanwhile.
    """
    pools = _pools
    with pools.lock:
        managers = list(pools.by_base.values())
        pools.by_base.clear()
    for manager in managers:
        manager.clear()  # closes the idle connections; one in use is closed when it is released


# What requests raised as Timeout or ConnectionError: Midtrans did not answer.
_NOT_ANSWERED = (
    urllib3.exceptions.TimeoutError,  # connect and read timeouts, a refused connection, a DNS failure
    urllib3.exceptions.ProtocolError,  # the connection dropped before an answer
    urllib3.exceptions.SSLError,
    urllib3.exceptions.ProxyError,
    urllib3.exceptions.ClosedPoolError,
    OSError,
)


def _http_call(
    *, method: str, url: str, json_body: dict | None, timeout: tuple[float, float], idempotency_key: str | None = None
):
    """One HTTP request, no redirect followed and no retry: the response and its whole body.

    Raises MidtransTimeout when Midtrans did not answer (what requests raised as Timeout or
    ConnectionError) and MidtransServerError for any other failure (a payload JSON cannot encode,
    an answer cut short), as requests' other exceptions were mapped. A CA bundle that cannot be
    loaded raises MidtransConfigurationError.
    """
    try:
        # As requests' json=: json.dumps' default separators, UTF-8, no NaN or infinity.
        payload = None if json_body is None else json.dumps(json_body, allow_nan=False).encode()
    except ValueError as exc:
        raise MidtransServerError(f"Midtrans call failed: {type(exc).__name__}: {exc}") from exc
    headers = {"Accept": "application/json", "Content-Type": "application/json", "Authorization": _auth_header()}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    try:
        response = _pool_manager(url).urlopen(
            method,
            url,
            body=payload,
            headers=headers,
            timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
            retries=False,
            redirect=False,
            preload_content=False,
        )
    except _NOT_ANSWERED as exc:
        raise MidtransTimeout(f"Midtrans did not answer: {type(exc).__name__}") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise MidtransServerError(f"Midtrans call failed: {type(exc).__name__}: {exc}") from exc
    try:
        data = response.read()
    except (urllib3.exceptions.TimeoutError, urllib3.exceptions.SSLError) as exc:
        raise MidtransTimeout(f"Midtrans did not answer: {type(exc).__name__}") from exc
    except urllib3.exceptions.HTTPError as exc:
        # The answer began, then broke off (cut short, bad chunking): a bad answer, not a missing one.
        raise MidtransServerError(f"Midtrans call failed: {type(exc).__name__}: {exc}") from exc
    finally:
        response.release_conn()  # read whole (or closed on error): the connection goes back to the pool
    return response, data


def _auth_header() -> str:
    token = base64.b64encode(f"{settings.MIDTRANS_SERVER_KEY}:".encode()).decode()
    return f"Basic {token}"


def _idempotency_key(operation: str) -> str:
    """A fresh Idempotency-Key for one logical Core API POST (at most Midtrans' 46 characters)."""
    return f"{operation}-{uuid.uuid4().hex}"


def refund_idempotency_key(*, midtrans_order_id: str, refund_key: str) -> str:
    """The Idempotency-Key of one refund: the same for every retry of it. Midtrans' keys are global
    across transactions, so the order id is in it too; hashed to fit Midtrans' 46 characters."""
    digest = hashlib.sha256(f"{midtrans_order_id}\n{refund_key}".encode()).hexdigest()
    return f"refund-{digest[:39]}"


def _quote(value: str) -> str:
    return quote(str(value), safe="")


def _messages_of(body) -> list[str]:
    if not isinstance(body, dict):
        return []
    messages = body.get("error_messages")
    if isinstance(messages, list):
        return [str(m) for m in messages]
    if isinstance(messages, str):
        return [messages]
    if body.get("status_message"):
        return [str(body["status_message"])]
    return []


def _retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_for(
    *, operation: str, midtrans_order_id: str, http_status: int, body, status_data_codes: set[str]
) -> MidtransError | None:
    """Map an HTTP answer to a typed error, or None when it is a success (or data)."""
    ctx = {"operation": operation, "midtrans_order_id": midtrans_order_id, "http_status": http_status}
    if not isinstance(body, dict):
        # These HTTP statuses mean the same with any body (a bare 404 page, a proxy's 401).
        if http_status == 401:
            return MidtransUnauthorized(f"Midtrans answered HTTP {http_status}", **ctx)
        if http_status == 404:
            return MidtransNotFound(f"Midtrans answered HTTP {http_status}", **ctx)
        return MidtransServerError(f"Midtrans answered HTTP {http_status} without a JSON object", **ctx)
    messages = _messages_of(body)
    body_code = str(body.get("status_code") or "")
    code = http_status if http_status >= 400 else (int(body_code) if body_code.isdigit() else 200)
    if http_status < 400 and body_code in status_data_codes:
        return None
    # A status read's "unknown / no method chosen yet" may come as HTTP 404 with Midtrans' own
    # body (status_code "404"): the same data as HTTP 200 with that body. A Spring-style 404
    # ({"status": 404, "error": "Not Found"}: no status_code) or a non-JSON one is a real not found.
    if http_status == 404 and body_code == "404" and "404" in status_data_codes:
        return None
    if code < 400:
        return None
    ctx.update(messages=messages, status_code=body_code)
    if code == 429:
        return MidtransRateLimited(**ctx)
    if code >= 500:
        return MidtransServerError(**ctx)
    if code == 401:
        return MidtransUnauthorized(**ctx)
    if code == 404:
        return MidtransNotFound(**ctx)
    if code == 412:
        return MidtransWrongState(**ctx)
    if code == 406 and operation == "refund":
        return MidtransDuplicateRefundKey(**ctx)
    if code in (400, 406) and any(m in msg.lower() for msg in messages for m in DUPLICATE_ORDER_ID_MARKERS):
        return MidtransDuplicateOrderId(**ctx)
    if code == 400:
        return MidtransValidationError(**ctx)
    return MidtransError(**ctx)


def _request_once(
    *,
    operation: str,
    method: str,
    url: str,
    midtrans_order_id: str,
    json_body: dict | None,
    timeout: tuple[float, float],
    status_data_codes: set[str],
    attempt: int,
    idempotency_key: str | None = None,
) -> dict:
    """One HTTP try: the body, or a typed MidtransError. The breaker is _request()'s business."""
    started = time.monotonic()
    http_status: int | None = None
    error: MidtransError | None = None
    body = None
    try:
        response, data = _http_call(
            method=method, url=url, json_body=json_body, timeout=timeout, idempotency_key=idempotency_key
        )
        http_status = response.status
        try:
            # As requests decoded a JSON answer: UTF-8, an undecodable byte replaced.
            body = json.loads(data.decode("utf-8", errors="replace"))
        except ValueError:
            body = None
        if 300 <= http_status < 400:
            # Redirects are not followed (a POST must not be replayed elsewhere) and are never a
            # success, whatever the body: the base URL is wrong.
            location = response.headers.get("Location", "")
            error = MidtransConfigurationError(
                f"Midtrans answered HTTP {http_status} redirecting to {location or '(no Location)'}; "
                "check MIDTRANS_SNAP_URL / MIDTRANS_API_URL",
                operation=operation,
                midtrans_order_id=midtrans_order_id,
                http_status=http_status,
            )
            error.location = location
        elif http_status == 202 and idempotency_key:
            error = MidtransInProgress(
                "Midtrans is still processing the first call with this Idempotency-Key",
                operation=operation,
                midtrans_order_id=midtrans_order_id,
                http_status=http_status,
            )
        else:
            error = _error_for(
                operation=operation,
                midtrans_order_id=midtrans_order_id,
                http_status=http_status,
                body=body,
                status_data_codes=status_data_codes,
            )
            if http_status == 429 and error is None:  # a 429 is never a success, whatever the body
                error = MidtransRateLimited(
                    "Midtrans answered HTTP 429", operation=operation, midtrans_order_id=midtrans_order_id
                )
            if isinstance(error, MidtransRateLimited):
                error.http_status = http_status
                error.retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
    except (MidtransTimeout, MidtransServerError, MidtransConfigurationError) as exc:  # from _http_call
        # No usable answer, or (a CA bundle that cannot be loaded) no call at all.
        exc.operation, exc.midtrans_order_id = operation, midtrans_order_id
        error = exc
    finally:
        duration_ms = round((time.monotonic() - started) * 1000, 1)

    log_fields = {
        "operation": operation,
        "midtrans_order_id": midtrans_order_id,
        "http_status": http_status,
        "duration_ms": duration_ms,
        "attempt": attempt,
        "outcome": type(error).__name__ if error else "ok",
    }
    if isinstance(body, dict) and body.get("status_code"):
        log_fields["status_code"] = body.get("status_code")
    midtrans_call_seconds.labels(operation=operation, outcome=log_fields["outcome"]).observe(duration_ms / 1000)
    if error is not None:
        logger.warning("midtrans_call", extra=log_fields)
        raise error
    logger.info("midtrans_call", extra=log_fields)
    return body


def _request(
    *,
    breaker: str,
    operation: str,
    method: str,
    url: str,
    midtrans_order_id: str = "",
    json_body: dict | None = None,
    read_timeout: float | None = None,
    connect_timeout: float | None = None,
    retries: int = 0,
    status_data_codes: set[str] | None = None,
    deadline: float | None = None,
    idempotency_key: str | None = None,
) -> dict:
    """One logical call: its tries (retries only where `retries` allows), through `breaker`.

    Each try is admitted by the breaker (an open one fails fast, even between retries); the
    breaker counts one failure per logical call, once its retries are used up, so a status
    read with retries weighs as much as a Snap create. A failed half-open probe reopens the
    breaker at once, without retrying.

    `deadline` (time.monotonic()) is a hard limit for the whole call: each try's connect and
    read timeouts are cut to fit the time left, a retry is skipped when less than one try's
    read timeout would be left after its backoff, and no backoff sleeps past it.

    The whole call (tries and backoffs) holds one of this process's slots for its host; when
    none frees up within SLOT_WAIT_SECONDS (or before `deadline`) it raises MidtransBusy
    without calling.

    `idempotency_key` is sent as Idempotency-Key on every try of this call, so Midtrans runs
    the call once and replays its success to a repeat.
    """
    with _call_slot_held(breaker=breaker, deadline=deadline, operation=operation, midtrans_order_id=midtrans_order_id):
        timeout = (
            float(settings.MIDTRANS_CONNECT_TIMEOUT if connect_timeout is None else connect_timeout),
            float(settings.MIDTRANS_READ_TIMEOUT if read_timeout is None else read_timeout),
        )
        attempt = 0
        while True:
            attempt += 1
            try_timeout = timeout
            if deadline is not None:
                left = max(deadline - time.monotonic(), 0.001)
                if sum(timeout) > left:
                    # A try costs at most connect + read: both shrink so that it ends by the deadline.
                    try_timeout = (timeout[0] * left / sum(timeout), timeout[1] * left / sum(timeout))
            try:
                probe, breaker_state = _circuit_admit_state(breaker)
            except MidtransCircuitOpen as exc:
                _refused(
                    exc,
                    operation=operation,
                    midtrans_order_id=midtrans_order_id,
                    breaker=breaker,
                    reason="circuit_open",
                )
                raise
            try:
                body = _request_once(
                    operation=operation,
                    method=method,
                    url=url,
                    midtrans_order_id=midtrans_order_id,
                    json_body=json_body,
                    timeout=try_timeout,
                    status_data_codes=status_data_codes or set(),
                    attempt=attempt,
                    idempotency_key=idempotency_key,
                )
            except (MidtransServerError, MidtransTimeout):
                delay = min(_RETRY_BACKOFF_MAX, _RETRY_BACKOFF_BASE * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                out_of_time = deadline is not None and deadline - time.monotonic() - delay < timeout[1]
                if probe or attempt > retries or out_of_time:
                    _circuit_failure(breaker, probe=probe)
                    raise
                time.sleep(delay)
                continue
            except MidtransRateLimited as exc:
                # Throttled: neither a breaker failure nor a success (see MidtransRateLimited).
                # A retry waits at least as long as Midtrans asked, and only if it still fits.
                delay = min(_RETRY_BACKOFF_MAX, _RETRY_BACKOFF_BASE * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                delay = max(delay, exc.retry_after or 0.0)
                if deadline is None:
                    out_of_time = delay > _RETRY_BACKOFF_MAX
                else:
                    out_of_time = deadline - time.monotonic() - delay < timeout[1]
                if probe or attempt > retries or out_of_time:
                    _circuit_release(breaker, probe=probe)
                    raise
                time.sleep(delay)
                continue
            except MidtransConfigurationError:
                # Says nothing about Midtrans' health: neither a failure nor a success.
                _circuit_release(breaker, probe=probe)
                raise
            except MidtransError:
                # Midtrans answered (even a 4xx is an answer): the service is up.
                _circuit_success(breaker, probe=probe, state=breaker_state)
                raise
            _circuit_success(breaker, probe=probe, state=breaker_state)
            return body


def _snap_url(path: str) -> str:
    return f"{settings.MIDTRANS_SNAP_URL.rstrip('/')}{path}"


def _api_url(path: str) -> str:
    return f"{settings.MIDTRANS_API_URL.rstrip('/')}{path}"


# --- Operations ----------------------------------------------------------------------------------


def snap_create(*, payload: dict) -> SnapTransaction:
    """Create a Snap transaction. Never retried (see the module docstring)."""
    midtrans_order_id = str((payload.get("transaction_details") or {}).get("order_id", ""))
    body = _request(
        breaker=SNAP,
        operation="snap_create",
        method="POST",
        url=_snap_url("/snap/v1/transactions"),
        midtrans_order_id=midtrans_order_id,
        json_body=payload,
    )
    token, redirect_url = body.get("token"), body.get("redirect_url")
    if not token or not redirect_url:
        raise MidtransServerError(
            "Snap create answered without token or redirect_url",
            operation="snap_create",
            midtrans_order_id=midtrans_order_id,
            http_status=201,
        )
    return SnapTransaction(token=str(token), redirect_url=str(redirect_url))


def snap_cancel(*, token: str) -> dict:
    """Cancel a Snap session before a method was chosen. Returns `{"canceled_at": ...}`."""
    return _request(
        breaker=SNAP,
        operation="snap_cancel",
        method="POST",
        url=_snap_url(f"/snap/v1/transactions/{_quote(token)}/cancel"),
    )


def transaction_status(*, midtrans_order_id: str, timeout: float | None = None, budget: float | None = None) -> dict:
    """The status body. `status_code` "404" (unknown or no method chosen yet) and "407" are data.

    Retried on timeouts, 5xx and 429 (MIDTRANS_STATUS_RETRIES extra tries, short backoff
    between them, at least Retry-After after a 429); a read is safe to repeat. `timeout`
    (default MIDTRANS_STATUS_TIMEOUT) bounds each try's connect and read. `budget` is a hard
    limit in seconds for the whole read, tries and backoff included (default: tries x
    timeout, so a caller that divides its budget by the number of tries gets exactly that
    budget); fewer tries are made when they would not fit.
    """
    per_try = float(settings.MIDTRANS_STATUS_TIMEOUT if timeout is None else timeout)
    retries = max(0, int(settings.MIDTRANS_STATUS_RETRIES))
    total = per_try * (1 + retries) if budget is None else float(budget)
    deadline = time.monotonic() + total
    return _request(
        breaker=CORE,
        operation="status",
        method="GET",
        url=_api_url(f"/v2/{_quote(midtrans_order_id)}/status"),
        midtrans_order_id=midtrans_order_id,
        read_timeout=per_try,
        connect_timeout=min(float(settings.MIDTRANS_CONNECT_TIMEOUT), per_try),
        retries=retries,
        status_data_codes=_STATUS_DATA_CODES,
        deadline=deadline,
    )


def transaction_cancel(*, midtrans_order_id: str) -> dict:
    return _request(
        breaker=CORE,
        operation="cancel",
        method="POST",
        url=_api_url(f"/v2/{_quote(midtrans_order_id)}/cancel"),
        midtrans_order_id=midtrans_order_id,
        idempotency_key=_idempotency_key("cancel"),
    )


def transaction_expire(*, midtrans_order_id: str) -> dict:
    # A successful expire answers body status_code "407" ("Success, transaction has expired").
    return _request(
        breaker=CORE,
        operation="expire",
        method="POST",
        url=_api_url(f"/v2/{_quote(midtrans_order_id)}/expire"),
        midtrans_order_id=midtrans_order_id,
        status_data_codes={"407"},
        idempotency_key=_idempotency_key("expire"),
    )


def transaction_refund(*, midtrans_order_id: str, refund_key: str, amount: int | None = None, reason: str = "") -> dict:
    """Refund all (amount None) or part of a settled transaction.

    `refund_key` makes a repeated request safe: the Idempotency-Key sent is derived from it, so a
    repeat within Midtrans' five minutes gets the first call's success again (HTTP 202,
    MidtransInProgress, while that call still runs); later, Midtrans answers 406
    (MidtransDuplicateRefundKey) instead of refunding twice. Not retried here for the same reason
    Snap create is not.
    """
    # Without a refund_key Midtrans makes one up, so a retried request would refund twice.
    if not isinstance(refund_key, str) or not refund_key.strip():
        raise ValueError("refund_key must be a non-empty string")
    if len(refund_key) > REFUND_KEY_MAX_LENGTH:
        raise ValueError(f"refund_key must be at most {REFUND_KEY_MAX_LENGTH} characters")
    if not REFUND_KEY_CHARACTERS.match(refund_key):
        raise ValueError("refund_key may contain only letters, digits, '-' and '_'")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0):
        raise ValueError("amount must be a positive integer (rupiah) or None")
    body: dict = {"refund_key": refund_key}
    if amount is not None:
        body["amount"] = amount
    if reason:
        body["reason"] = reason
    return _request(
        breaker=CORE,
        operation="refund",
        method="POST",
        url=_api_url(f"/v2/{_quote(midtrans_order_id)}/refund"),
        midtrans_order_id=midtrans_order_id,
        json_body=body,
        idempotency_key=refund_idempotency_key(midtrans_order_id=midtrans_order_id, refund_key=refund_key),
    )
