"""Prometheus metrics. Counters live per process; gauges are read from the database
at scrape time, so every web process reports the same truth."""

from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)

webhook_rejected_total = Counter(
    "buatfilm_webhook_rejected_total",
    "Midtrans notifications refused, by reason (bad_signature, malformed, ...).",
    ["reason"],
    registry=REGISTRY,
)

midtrans_calls_refused_total = Counter(
    "buatfilm_midtrans_calls_refused_total",
    "Calls to Midtrans refused without being made, by breaker (snap, core) and reason: circuit_open "
    "(Midtrans failing) or busy (this process's MIDTRANS_MAX_CONCURRENT_CALLS slots all taken: Midtrans slow).",
    ["breaker", "reason"],
    registry=REGISTRY,
)


class _DatabaseGauges:
    def describe(self):
        return []  # keeps registration from querying the database at import

    def collect(self):
        from django.db.models import Count

        from notifications.models import Notification
        from payments.models import Order

        orders = GaugeMetricFamily("buatfilm_orders", "Orders by status.", labels=["status"])
        for row in Order.objects.values("status").annotate(n=Count("id")):
            orders.add_metric([row["status"]], row["n"])
        yield orders
        outbox = GaugeMetricFamily("buatfilm_notifications", "Outbox messages by status.", labels=["status"])
        for row in Notification.objects.values("status").annotate(n=Count("id")):
            outbox.add_metric([row["status"]], row["n"])
        yield outbox


REGISTRY.register(_DatabaseGauges())


@never_cache
@require_GET
def metrics_view(request):
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
