"""Prometheus metrics.

Counters and histograms are kept by prometheus-client. With PROMETHEUS_MULTIPROC_DIR set
(the Procfile sets it for web and worker) each process writes its values to files there and
/metrics adds up every process's, so a scrape sees all gunicorn workers and Celery processes
on the machine; gunicorn.conf.py and buatfilm/celery.py mark a dead process's files. Without
it (the demo, the tests) the values are this process's own.

Gauges about payments are read from the database at scrape time, each with one query that an
index answers (no full-table scan per scrape), so every web process reports the same truth.
"""

import hmac
import ipaddress
import os
import time

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from common.errors import error_response
from common.metrics import REGISTRY, http_request_seconds


def _review_kind(reason: str) -> str:
    return "double_payment" if reason.startswith("Double payment") else "other"


class _DatabaseGauges:
    def describe(self):
        return []  # keeps registration from querying the database at import

    def collect(self):
        from buatfilm.models import Heartbeat
        from notifications.models import Notification
        from payments import midtrans
        from payments.models import Order, PaymentEvent

        now = timezone.now()
        # Open orders only (the finished ones grow without bound); order_status_expires_idx.
        orders = GaugeMetricFamily("buatfilm_orders", "Open orders by status.", labels=["status"])
        for status in Order.OPEN_STATUSES:
            orders.add_metric([status], Order.objects.filter(status=status).count())
        yield orders

        # Undelivered and dead messages (sent ones are purged after NOTIFICATION_RETENTION_DAYS).
        outbox = GaugeMetricFamily("buatfilm_notifications", "Outbox messages not sent, by status.", labels=["status"])
        waiting = [Notification.Status.PENDING, Notification.Status.SENDING, Notification.Status.DEAD]
        for status in waiting:
            outbox.add_metric([status], Notification.objects.filter(status=status).count())
        yield outbox
        oldest = (
            Notification.objects.filter(status__in=waiting[:2])
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        yield GaugeMetricFamily(
            "buatfilm_outbox_oldest_pending_seconds",
            "Age of the oldest message waiting to be sent (0 when none).",
            value=(now - oldest).total_seconds() if oldest else 0.0,
        )

        yield GaugeMetricFamily(
            "buatfilm_orders_pending_past_window",
            "Open orders whose payment window has passed: the expiry sweep or reconciliation is not running.",
            value=Order.objects.filter(status__in=Order.OPEN_STATUSES, expires_at__lt=now).count(),
        )

        grace = now - timezone.timedelta(seconds=settings.RECONCILE_EVENT_GRACE_SECONDS)
        unapplied = PaymentEvent.objects.filter(
            result__in=[PaymentEvent.Result.RECEIVED, PaymentEvent.Result.FAILED], received_at__lt=grace
        )
        yield GaugeMetricFamily(
            "buatfilm_payment_events_unapplied",
            "Verified Midtrans notifications not applied after RECONCILE_EVENT_GRACE_SECONDS: a payment "
            "Midtrans may have settled that is not PAID here.",
            value=unapplied.count(),
        )

        review = GaugeMetricFamily(
            "buatfilm_review_cases_open", "Orders waiting for a person (needs_review), by kind.", labels=["kind"]
        )
        kinds = {"double_payment": 0, "other": 0}
        # order_needs_review_idx holds only the open cases.
        for reason in Order.objects.filter(needs_review=True).values_list("review_reason", flat=True):
            kinds[_review_kind(reason)] += 1
        for kind, count in kinds.items():
            review.add_metric([kind], count)
        yield review

        beats = GaugeMetricFamily(
            "buatfilm_heartbeat_timestamp_seconds",
            "Unix time a periodic job last succeeded: beat (beat and a worker alive), backup (a backup stored).",
            labels=["name"],
        )
        for name, at in Heartbeat.objects.values_list("name", "at"):
            beats.add_metric([name], at.timestamp())
        yield beats

        circuit = GaugeMetricFamily(
            "buatfilm_midtrans_circuit_open", "1 while the circuit breaker around Midtrans is open.", labels=["breaker"]
        )
        try:
            state = midtrans.circuit_state()
        except Exception:  # the breaker lives in Redis; a Redis outage must not fail the scrape
            state = None
        for breaker in midtrans.BREAKERS if state else ():
            circuit.add_metric([breaker], 1.0 if state[breaker]["state"] == "open" else 0.0)
        yield circuit


_database_gauges = _DatabaseGauges()
REGISTRY.register(_database_gauges)


def _scrape() -> bytes:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY)
    # Every process's counters from the shared directory, and the gauges from the database.
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_database_gauges)
    return generate_latest(registry)


def _client_allowed(request) -> bool:
    allowed = settings.METRICS_ALLOWED_IPS
    if not allowed:
        return True
    from payments.api import client_ip

    address = client_ip(request)
    if not address:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(network, strict=False) for network in allowed)


def _token_valid(request) -> bool:
    expected = settings.METRICS_TOKEN
    if not expected:
        return False  # no token configured: closed, never open
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected.encode())


def _refused(status: int, code: str, message: str) -> JsonResponse:
    response = error_response(status, code, message)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@never_cache
@require_GET
def metrics_view(request):
    if not _client_allowed(request):
        return _refused(403, "forbidden", "This address may not read /metrics (METRICS_ALLOWED_IPS).")
    if not _token_valid(request):
        return _refused(401, "unauthorized", "A valid 'Authorization: Bearer <METRICS_TOKEN>' header is required.")
    return HttpResponse(_scrape(), content_type=CONTENT_TYPE_LATEST)


class RequestMetricsMiddleware:
    """Times every request into buatfilm_http_request_duration_seconds, labelled by its URL pattern."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.monotonic()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        http_request_seconds.labels(route=route, method=method, status=f"{response.status_code // 100}xx").observe(
            time.monotonic() - started
        )
        return response


_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
