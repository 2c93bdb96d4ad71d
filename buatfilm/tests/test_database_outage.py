"""The web process as the Procfile starts it (gunicorn, threaded workers), talking to this run's
database through a proxy the test freezes (PostgreSQL hangs) or cuts (PostgreSQL stops): every
endpoint answers 503 with Retry-After within the contract's 3 s, liveness keeps answering, and
requests are served again once the database is back."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.conf import settings
from django.db import connection

from buatfilm.tests.db_proxy import DatabaseProxy
from notifications.tests.conftest import wait_for
from notifications.tests.stubs import free_port
from payments.tests.checkout_support import checkout_body, launch_package_ensure
from payments.tests.midtrans_payloads import midtrans_body
from payments.tests.web_process_support import procfile_web, web_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

METRICS_TOKEN = "test-metrics-token"
CONTRACT_SECONDS = 3.0


@pytest.fixture
def db_proxy():
    db = connection.settings_dict
    proxy = DatabaseProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))
    yield proxy
    proxy.close()


@pytest.fixture
def web_via_proxy(db_proxy, request):
    launch_package_ensure()
    port = free_port()
    db = connection.settings_dict
    env = web_env(
        port=port,
        WEB_CONCURRENCY=request.param if hasattr(request, "param") else 2,
        WEB_THREADS=8,
        DATABASE_URL=f"postgres://{db['USER'] or 'root'}@127.0.0.1:{db_proxy.port}/{db['NAME']}",
        METRICS_TOKEN=METRICS_TOKEN,
        CHECKOUT_RATE_LIMIT="",
    )
    with procfile_web(env=env, ready_path="/health/ready", name="web-outage") as url:
        yield url


def _requests() -> dict[str, tuple[str, str, dict]]:
    """One request per kind of endpoint, each of which needs the database."""
    webhook = midtrans_body("BF-20261122-OUTAGE01-1", "settlement")
    return {
        "packages": ("GET", "/api/packages/", {}),
        "checkout": ("POST", "/api/checkout/", {"json": checkout_body()}),
        "order status": ("GET", "/api/orders/BF-20261122-OUTAGE01/", {}),
        "webhook": ("POST", "/webhooks/midtrans", {"json": webhook}),
        "entitlement check": (
            "GET",
            "/api/entitlements/check/?email=budi@example.com&course=ai-movie-course",
            {"headers": {"Authorization": f"Bearer {settings.ENTITLEMENTS_API_TOKEN}"}},
        ),
        "landing page": ("GET", "/", {}),
        "order page": ("GET", "/orders/BF-20261122-OUTAGE01/", {}),
        "admin": ("GET", "/admin/", {"cookies": {"sessionid": "a-session-that-must-be-looked-up"}}),
        "metrics": ("GET", "/metrics", {"headers": {"Authorization": f"Bearer {METRICS_TOKEN}"}}),
        "readiness": ("GET", "/health/ready", {}),
    }


def _send(url: str, method: str, path: str, kwargs: dict) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.request(method, url + path, timeout=30, **kwargs)
    return response, time.monotonic() - started


@pytest.mark.parametrize("outage", ["hung", "stopped"])
def test_every_endpoint_answers_503_fast_while_the_database_is_out_and_recovers(web_via_proxy, db_proxy, outage):
    url = web_via_proxy
    # given a web process whose pooled connections are warm
    with ThreadPoolExecutor(8) as pool:
        warm = list(pool.map(lambda _: requests.get(url + "/api/packages/", timeout=10).status_code, range(16)))
    assert set(warm) == {200}

    # when the database hangs (or stops) and each endpoint is asked, all at once
    db_proxy.freeze() if outage == "hung" else db_proxy.cut()
    calls = _requests()
    with ThreadPoolExecutor(len(calls)) as pool:
        answers = dict(zip(calls, pool.map(lambda c: _send(url, *c), calls.values()), strict=True))
    live, live_seconds = _send(url, "GET", "/health/live", {})

    # then each says 503 with Retry-After, within the contract's 3 s; JSON for machines, Indonesian for people
    summary = {name: (r.status_code, round(s, 2)) for name, (r, s) in answers.items()}
    print(f"\n{outage} database: {summary}; /health/live {live.status_code} in {live_seconds:.2f} s")
    for name, (response, seconds) in answers.items():
        assert response.status_code == 503, (name, response.status_code, response.text[:300])
        assert response.headers.get("Retry-After"), name
        assert seconds < CONTRACT_SECONDS, (name, seconds)
        if name in ("landing page", "order page", "admin"):
            assert "Layanan sedang gangguan" in response.text, name
            assert response.headers["Content-Type"].startswith("text/html"), name
        elif name != "readiness":
            assert response.json()["error"]["code"] in {"service_unavailable", "database_unavailable"}, name
    assert live.status_code == 200 and live_seconds < CONTRACT_SECONDS

    # when the database comes back, then the same process serves again
    db_proxy.restore()

    def served() -> bool:
        return requests.get(url + "/api/packages/", timeout=10).status_code == 200

    wait_for(served, timeout=15, message="the web process to serve again")
    with ThreadPoolExecutor(8) as pool:
        after = list(pool.map(lambda _: requests.get(url + "/api/packages/", timeout=10).status_code, range(16)))
    assert set(after) == {200}


@pytest.mark.parametrize("web_via_proxy", [4], indirect=True)
def test_more_requests_than_threads_all_answer_503_fast_while_the_database_hangs(web_via_proxy, db_proxy):
    url = web_via_proxy
    # given the Procfile's 4 workers of 8 threads, warm
    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(lambda _: requests.get(url + "/api/packages/", timeout=10).status_code, range(32))) == {200}

    # when the database hangs and 48 order-status requests arrive at once (more than the 32 threads)
    db_proxy.freeze()
    with ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(lambda _: _send(url, "GET", "/api/orders/BF-20261122-OUTAGE01/", {}), range(48)))

    # then every one is a 503 within the contract's 3 s: a queued request does not wait for the
    # threads ahead of it to time out one by one
    seconds = sorted(round(s, 2) for _, s in answers)
    print(f"\n48 requests, hung database: {seconds}")
    assert [r.status_code for r, _ in answers] == [503] * 48
    assert seconds[-1] < CONTRACT_SECONDS, seconds


@pytest.fixture
def web_without_redis():
    """The web process with Redis down (nothing listens on its port)."""
    launch_package_ensure()
    port = free_port()
    env = web_env(
        port=port,
        WEB_CONCURRENCY=1,
        WEB_THREADS=8,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        CHECKOUT_RATE_LIMIT="",
    )
    with procfile_web(env=env, name="web-no-redis") as url:
        yield url


def test_with_redis_down_the_instance_stays_ready_and_takes_payments(web_without_redis):
    url = web_without_redis
    # when Redis is down
    ready = requests.get(url + "/health/ready", timeout=10)
    details = requests.get(url + "/health", timeout=10)
    checkout = requests.post(url + "/api/checkout/", json=checkout_body(), timeout=30)
    # then the load balancer keeps the instance, the detail says degraded, and a checkout goes through
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["broker"]["ok"] is False
    assert details.status_code == 200 and details.json()["status"] == "degraded"
    assert checkout.status_code == 201, checkout.text
    assert checkout.json()["payment"]["token"]
