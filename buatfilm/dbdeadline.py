"""A client-side deadline on database calls, for a PostgreSQL server that hangs.

PostgreSQL's own limits cannot end a wait on a server that accepts bytes and never answers
(a stopped postmaster, a frozen VM behind a live load balancer, a stuck disk): the kernel
acknowledges what we send, so `statement_timeout` never runs, keepalives are answered and
`tcp_user_timeout` sees nothing unacknowledged. libpq has no read timeout of its own. So
every call made under `deadline_scope()` is registered with one watchdog thread per process;
a call still waiting when its deadline passes has its socket shut down. The waiting thread
then gets an OperationalError at once (the 503 path), and Django drops the connection.

The web sets a scope per request (`DatabaseDeadlineMiddleware`), Celery per task.
"""

import contextlib
import contextvars
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

# Seconds a call may wait in the current scope; None outside a scope (no client deadline).
_scope_seconds: contextvars.ContextVar[float | None] = contextvars.ContextVar("db_deadline_seconds", default=None)


def _socket_cut(fd: int) -> None:
    # shutdown() acts on the socket, not on the descriptor, so a duplicate is enough and the
    # driver's own descriptor stays valid (it is closed by the driver, as usual).
    sock = socket.socket(fileno=os.dup(fd))
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer
    finally:
        sock.close()


class _Watchdog:
    def __init__(self):
        self._cond = threading.Condition()
        self._calls: dict[object, tuple[float, int, float]] = {}
        self._thread: threading.Thread | None = None
        # When the watchdog thread wakes next (None: only when notified). A call whose deadline is
        # later needs no wake-up, so the thread sleeps through busy periods instead of waking per query.
        self._wakes_at: float | None = None
        self.cuts = 0

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (deadline, fd, seconds) in list(self._calls.items()):
                    if deadline <= now:
                        # Under the lock: the caller cannot leave its call (and close or reuse the
                        # descriptor) before this is done.
                        del self._calls[token]
                        _socket_cut(fd)
                        self.cuts += 1
                        connect_gate.mark_down()
                        logger.warning("database_call_cut", extra={"deadline_seconds": seconds})
                self._wakes_at = min((d for d, _, _ in self._calls.values()), default=None)
                self._cond.wait(None if self._wakes_at is None else max(0.0, self._wakes_at - now))

    @contextlib.contextmanager
    def watch(self, fd: int, seconds: float) -> Iterator[None]:
        token = object()
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db-deadline", daemon=True)
                self._thread.start()
            deadline = time.monotonic() + seconds
            self._calls[token] = (deadline, fd, seconds)
            if self._wakes_at is None or deadline < self._wakes_at:
                self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._calls.pop(token, None)

    def after_fork(self) -> None:
        # A forked child (gunicorn or Celery worker) has no watchdog thread: start anew.
        self._cond = threading.Condition()
        self._calls = {}
        self._thread = None
        self._wakes_at = None


class ConnectGate:
    """After a sign that the server is not answering (a call cut at its deadline, a connection
    attempt that failed), request threads stop trying to connect themselves: one probe thread
    per process tries (bounded by DB_CONNECT_TIMEOUT), and a request waits a moment for its
    outcome, then fails. A probe that connects opens the gate again; against a live server it
    answers within that moment, so the requests that arrive at the recovery all go through.

    Without it every thread of a web worker spends DB_CONNECT_TIMEOUT on its own attempt, and
    requests queued behind them wait a multiple of it.
    """

    PROBE_WAIT_SECONDS = 0.25

    def __init__(self):
        self._cond = threading.Condition()
        self.down_since: float | None = None
        self._probing = False

    def admit(self, *, probe: Callable[[], None]) -> bool:
        """True when this thread may connect: the gate is open, or it opened within the wait.
        `probe` connects once and raises on failure; it runs in its own thread, one at a time."""
        with self._cond:
            if self.down_since is None:
                return True
            if not self._probing:
                self._probing = True
                threading.Thread(target=self._probe_run, args=(probe,), name="db-probe", daemon=True).start()
            # Until the probe connects or fails (a refused connection fails at once), at most the wait.
            self._cond.wait_for(lambda: self.down_since is None or not self._probing, timeout=self.PROBE_WAIT_SECONDS)
            return self.down_since is None

    def _probe_run(self, probe: Callable[[], None]) -> None:
        try:
            probe()
            ok = True
        except Exception:  # any failure to connect keeps the gate closed
            ok = False
        self.report(ok=ok)
        with self._cond:
            self._probing = False
            self._cond.notify_all()

    def report(self, *, ok: bool) -> None:
        """The outcome of a connection attempt."""
        with self._cond:
            if ok:
                self.down_since = None
                self._cond.notify_all()
            elif self.down_since is None:
                self.down_since = time.monotonic()

    def mark_down(self) -> None:
        self.report(ok=False)

    def is_down(self) -> bool:
        return self.down_since is not None

    def after_fork(self) -> None:
        self.__init__()


watchdog = _Watchdog()
connect_gate = ConnectGate()
os.register_at_fork(after_in_child=watchdog.after_fork)
os.register_at_fork(after_in_child=connect_gate.after_fork)


@contextlib.contextmanager
def deadline_scope(seconds: float) -> Iterator[None]:
    """Database calls inside wait at most `seconds` each."""
    token = _scope_seconds.set(seconds)
    try:
        yield
    finally:
        _scope_seconds.reset(token)


@contextlib.contextmanager
def call_bounded(fd: int | None, *, seconds: float | None = None) -> Iterator[None]:
    """One database call on the socket `fd`, bounded by `seconds` or else by the scope's deadline."""
    limit = seconds if seconds is not None else _scope_seconds.get()
    if limit is None or fd is None or fd < 0:
        yield
        return
    with watchdog.watch(fd, limit):
        yield


def scope_deadline() -> float | None:
    """Seconds each database call may wait in the current scope; None outside any."""
    return _scope_seconds.get()


def scope_enter(seconds: float) -> contextvars.Token:
    """For hooks that open and close a scope in two calls (Celery's task signals)."""
    return _scope_seconds.set(seconds)


def scope_exit(token: contextvars.Token) -> None:
    _scope_seconds.reset(token)


class DatabaseDeadlineMiddleware:
    """Every database call of a web request waits at most DB_WEB_CALL_TIMEOUT_MS."""

    def __init__(self, get_response):
        from django.conf import settings

        self.get_response = get_response
        self.seconds = settings.DB_WEB_CALL_TIMEOUT_MS / 1000

    def __call__(self, request):
        with deadline_scope(self.seconds):
            return self.get_response(request)
