"""Liveness, readiness and details, per the HTTP contract.

Each probe is bounded, so with a dependency down or hung every answer still comes
within 3 s: the database probe runs on its own short-lived connection in a thread with
a deadline (a pooled connection to a server that stopped answering would otherwise
block past any connect timeout), Redis by its socket timeouts.
"""

import logging
import threading
import time

import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

OUTBOX_BACKLOG_WARN_SECONDS = 600
DATABASE_PROBE_DEADLINE_SECONDS = 2.5
RETRY_AFTER_SECONDS = "5"


def _timed(fn):
    started = time.monotonic()
    try:
        result = fn()
        result.setdefault("ok", True)
    except Exception as exc:  # a probe reports any failure; it never raises
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


class _DatabaseProbe:
    """One SELECT 1 on its own connection, in its own thread; callers wait on `done`."""

    def __init__(self):
        self.started = time.monotonic()
        self.done = threading.Event()
        self.outcome: dict = {}


# At most one database probe in flight per process, shared by every thread that asks while
# it runs (the load balancer and a monitor probing at once must not fail each other), and a
# hung server does not pile up threads: later callers wait on the same probe's deadline.
_probe_guard = threading.Lock()
_probe_in_flight: _DatabaseProbe | None = None


def _database_select_one(probe: _DatabaseProbe) -> None:
    # Runs in its own thread, so Django gives it its own connection, closed at the end.
    global _probe_in_flight
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")
        probe.outcome["ok"] = True
    except Exception as exc:  # reported by the probe
        probe.outcome["error"] = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        connections[DEFAULT_DB_ALIAS].close()
        with _probe_guard:
            if _probe_in_flight is probe:
                _probe_in_flight = None
        probe.done.set()


def check_database() -> dict:
    def run():
        global _probe_in_flight
        with _probe_guard:
            probe = _probe_in_flight
            if probe is None:
                probe = _probe_in_flight = _DatabaseProbe()
                try:
                    threading.Thread(target=_database_select_one, args=(probe,), daemon=True).start()
                except BaseException:
                    # (e.g. "can't start new thread"): no probe is in flight after all
                    _probe_in_flight = None
                    raise
        waited = time.monotonic() - probe.started
        if not probe.done.wait(max(0.0, DATABASE_PROBE_DEADLINE_SECONDS - waited)):
            if waited >= DATABASE_PROBE_DEADLINE_SECONDS:
                return {"ok": False, "error": f"an earlier database probe has had no answer for {waited:.1f} s"}
            return {"ok": False, "error": f"no answer within {DATABASE_PROBE_DEADLINE_SECONDS} s"}
        outcome = probe.outcome
        return {"ok": outcome.get("ok", False), **({"error": outcome["error"]} if "error" in outcome else {})}

    # The request's own pooled connection is left alone: asking whether it is usable would
    # itself wait on a hung server. Django's health check drops it on its next use.
    return _timed(run)


def check_migrations() -> dict:
    def probe():
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        unapplied = [f"{m.app_label}.{m.name}" for m, _backwards in plan]
        return {"ok": not unapplied, "unapplied": unapplied}

    return _timed(probe)


def check_broker() -> dict:
    if not settings.REDIS_URL:
        return {"ok": True, "mode": "in-process (no REDIS_URL)", "ms": 0.0}

    def probe():
        client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        )
        try:
            client.ping()
        finally:
            client.close()
        return {}

    return _timed(probe)


def check_midtrans_circuit() -> dict:
    def probe():
        from payments import midtrans

        state = midtrans.circuit_state()
        return {"ok": state.get("state") != "open", **state}

    return _timed(probe)


def check_outbox() -> dict:
    def probe():
        from notifications.models import Notification

        pending = Notification.objects.filter(status__in=["pending", "sending"])
        oldest = pending.order_by("created_at").values_list("created_at", flat=True).first()
        age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
        dead = Notification.objects.filter(status="dead").count()
        return {
            "ok": age < OUTBOX_BACKLOG_WARN_SECONDS and dead == 0,
            "backlog": pending.count(),
            "oldest_pending_seconds": round(age, 1),
            "dead_letters": dead,
        }

    return _timed(probe)


@never_cache
@require_GET
def live(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def ready(request):
    # Ready means "this instance can take payments": the database and its migrations. A broker
    # outage only delays work (every task is also a database row a sweep picks up), so it is
    # reported here and on /health as degraded, and never takes the instance out of a load balancer.
    checks = {"database": check_database(), "broker": check_broker()}
    if checks["database"]["ok"]:
        checks["migrations"] = check_migrations()
    ok = "migrations" in checks and checks["database"]["ok"] and checks["migrations"]["ok"]
    response = JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)
    if not ok:
        response["Retry-After"] = RETRY_AFTER_SECONDS
    return response


@never_cache
@require_GET
def details(request):
    checks = {"database": check_database(), "broker": check_broker()}
    if checks["database"]["ok"]:
        checks["migrations"] = check_migrations()
        checks["outbox"] = check_outbox()
    checks["midtrans_circuit"] = check_midtrans_circuit()
    essential_ok = checks["database"]["ok"] and checks.get("migrations", {}).get("ok", False)
    if not essential_ok:
        status = "unhealthy"
    elif all(c["ok"] for c in checks.values()):
        status = "healthy"
    else:
        status = "degraded"
    if status != "healthy":
        logger.warning(
            "health_degraded", extra={"health": status, "failing": [k for k, v in checks.items() if not v["ok"]]}
        )
    response = JsonResponse({"status": status, "checks": checks}, status=503 if status == "unhealthy" else 200)
    if status == "unhealthy":
        response["Retry-After"] = RETRY_AFTER_SECONDS
    return response
