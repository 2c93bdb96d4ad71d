"""The metric counters and histograms the apps keep (prometheus-client; see buatfilm.metrics
for the /metrics view, multiprocess mode and the gauges read from the database)."""

from prometheus_client import CollectorRegistry, Counter, Histogram

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

http_request_seconds = Histogram(
    "buatfilm_http_request_duration_seconds",
    "Time to answer a request, by route (the URL pattern), method and status class (2xx, 4xx, 5xx).",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)

webhook_outcomes_total = Counter(
    "buatfilm_webhook_outcomes_total",
    "Midtrans notifications answered, by result: applied, duplicate, stale, orphan, mismatch, failed "
    "(200), rejected (400/401) or unavailable (503: Midtrans retries).",
    ["result"],
    registry=REGISTRY,
)

midtrans_call_seconds = Histogram(
    "buatfilm_midtrans_call_duration_seconds",
    "One HTTP try to Midtrans, by operation and outcome (ok, or the error's type).",
    ["operation", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0),
    registry=REGISTRY,
)

reconcile_runs_total = Counter(
    "buatfilm_reconcile_runs_total",
    "Reconciliation sweeps, by outcome: ok, errors (some items failed), skipped (another sweep ran).",
    ["outcome"],
    registry=REGISTRY,
)

reconcile_changes_total = Counter(
    "buatfilm_reconcile_changes_total",
    "Changes the reconciliation sweep made (a payment the webhook missed, an expiry, ...).",
    registry=REGISTRY,
)
