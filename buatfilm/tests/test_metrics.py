"""/metrics: protected by a bearer token (and optionally an address allow-list), gauges read
from the database with indexed queries, and counters that add up over several gunicorn workers."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from buatfilm.models import Heartbeat, heartbeat_record
from notifications.tests.stubs import free_port
from payments.models import Order
from payments.tests.factories import OrderFactory
from payments.tests.web_process_support import procfile_web, web_env

pytestmark = pytest.mark.django_db

TOKEN = "metrics-test-token"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = []
    return TOKEN


def samples(text: str) -> dict:
    """{(name, frozenset(labels.items())): value} of one exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_refuses_a_scrape_without_the_token(client, metrics_token):
    missing = client.get("/metrics")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert missing.status_code == 401 and wrong.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    assert b"buatfilm_" not in missing.content + wrong.content


def test_metrics_is_closed_when_no_token_is_configured(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_metrics_answers_the_token(client, metrics_token):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}")
    assert response.status_code == 200
    assert ("buatfilm_payment_events_unapplied", frozenset()) in samples(response.content.decode())


def test_metrics_refuses_an_address_outside_the_allow_list(client, metrics_token, settings):
    settings.TRUSTED_PROXY_COUNT = 0
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    outside = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}", REMOTE_ADDR="192.0.2.7")
    inside = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}", REMOTE_ADDR="10.1.2.3")
    assert outside.status_code == 403
    assert inside.status_code == 200


def test_metrics_reports_review_cases_stuck_orders_and_heartbeats(client, metrics_token):
    # given a double payment and a late payment to review, an order past its window, a heartbeat
    OrderFactory(needs_review=True, review_reason="Double payment: BF-1-2 was paid although ...")
    OrderFactory(needs_review=True, review_reason="Late payment: ...")
    OrderFactory(status=Order.Status.PENDING_PAYMENT, expires_at=timezone.now() - timezone.timedelta(hours=1))
    heartbeat_record(name=Heartbeat.Name.BACKUP)
    # when
    found = samples(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}").content.decode())
    # then
    assert found[("buatfilm_review_cases_open", frozenset({("kind", "double_payment")}))] == 1
    assert found[("buatfilm_review_cases_open", frozenset({("kind", "other")}))] == 1
    assert found[("buatfilm_orders_pending_past_window", frozenset())] == 1
    backup_at = found[("buatfilm_heartbeat_timestamp_seconds", frozenset({("name", "backup")}))]
    assert abs(backup_at - timezone.now().timestamp()) < 60


def test_request_latency_is_recorded_per_route(client, metrics_token):
    client.get("/health/live")
    found = samples(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}").content.decode())
    key = (
        "buatfilm_http_request_duration_seconds_count",
        frozenset({("route", "health/live"), ("method", "GET"), ("status", "2xx")}),
    )
    assert found[key] >= 1


def test_gauges_use_indexes_not_full_table_scans(metrics_token):
    # given the queries a scrape runs, asked for their plans with sequential scans discouraged
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from buatfilm.metrics import _database_gauges

    with CaptureQueriesContext(connection) as captured:
        list(_database_gauges.collect())
    big_tables = {Order._meta.db_table, "notifications_notification", "payments_paymentevent"}
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        try:
            for query in captured.captured_queries:
                if not any(f'"{table}"' in query["sql"] for table in big_tables):
                    continue
                cursor.execute("EXPLAIN " + query["sql"])
                plan = "\n".join(row[0] for row in cursor.fetchall())
                # then each is answered from an index (a Seq Scan stays only where no index could serve)
                assert "Seq Scan" not in plan, (query["sql"], plan)
        finally:
            cursor.execute("RESET enable_seqscan")


@pytest.fixture
def web_workers(tmp_path):
    """Three gunicorn workers as the Procfile starts them, sharing a private metrics directory."""
    port = free_port()
    env = web_env(
        port=port,
        WEB_CONCURRENCY=3,
        WEB_THREADS=4,
        MIDTRANS_MAX_CONCURRENT_CALLS=1,
        METRICS_TOKEN=TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    )
    with procfile_web(env=env, name="web-metrics") as url:
        yield url, tmp_path / "prometheus"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_counters_add_up_over_every_gunicorn_worker(web_workers):
    url, directory = web_workers
    # given 30 unsigned notifications sent 10 at a time, so several workers answer them
    with ThreadPoolExecutor(10) as pool:
        answers = list(
            pool.map(
                lambda i: (
                    requests.post(
                        url + "/webhooks/midtrans",
                        json={
                            "order_id": f"BF-X-{i}",
                            "status_code": "200",
                            "gross_amount": "1.00",
                            "transaction_status": "settlement",
                        },
                        timeout=10,
                    ).status_code
                ),
                range(30),
            )
        )
    assert answers == [401] * 30
    workers_counted = {p.name for p in directory.glob("counter_*.db")}
    assert len(workers_counted) >= 2, workers_counted

    # when /metrics is scraped many times (each scrape lands on whichever worker accepts it)
    scrapes = [
        samples(requests.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).text)
        for _ in range(12)
    ]
    # then every scrape reports all 30, whichever worker answered it
    rejected = ("buatfilm_webhook_rejected_total", frozenset({("reason", "missing_signature")}))
    outcomes = ("buatfilm_webhook_outcomes_total", frozenset({("result", "rejected")}))
    assert [s[rejected] for s in scrapes] == [30.0] * 12
    assert [s[outcomes] for s in scrapes] == [30.0] * 12
