"""Operator commands and production basics: smoke_check against a live server, alert_test
through every channel, the demo's course link, .env.example loadable by a shell, Sentry."""

import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError

from entitlements.services import access_link_build
from entitlements.tests.factories import EntitlementFactory
from notifications.tests.stubs import free_port
from payments.tests.checkout_support import launch_package_ensure

ROOT = Path(settings.BASE_DIR)


# --- smoke_check ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_smoke_check_passes_against_a_live_server(live_server):
    launch_package_ensure()
    out = StringIO()
    call_command("smoke_check", live_server.url, stdout=out)
    text = out.getvalue()
    assert "all 5 checks passed" in text
    assert "unsigned webhook refused: HTTP 401" in text
    assert "on sale: ai-movie-course" in text


def test_smoke_check_fails_naming_each_check_when_nothing_answers():
    out = StringIO()
    with pytest.raises(CommandError, match="smoke check failed: ready, health, packages"):
        call_command("smoke_check", f"http://127.0.0.1:{free_port()}", stdout=out)
    assert out.getvalue().count("FAIL") == 5


def test_smoke_check_refuses_something_that_is_not_a_url():
    with pytest.raises(CommandError, match="not an http"):
        call_command("smoke_check", "shop.example")


# --- alert_test ----------------------------------------------------------------------------


class _AlertmanagerStub(http.server.BaseHTTPRequestHandler):
    received: list = []
    status = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, json.loads(body)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def alertmanager():
    _AlertmanagerStub.received = []
    _AlertmanagerStub.status = 200
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AlertmanagerStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _AlertmanagerStub
    server.shutdown()
    server.server_close()


def test_alert_test_sends_through_email_and_alertmanager(settings, alertmanager):
    url, stub = alertmanager
    settings.ALERT_EMAILS = ["ops@buatfilm.example", "cto@buatfilm.example"]
    settings.ALERTMANAGER_URL = url
    out = StringIO()
    call_command("alert_test", stdout=out)
    assert "email: ok" in out.getvalue() and "alertmanager: ok" in out.getvalue()
    assert [m.to for m in mail.outbox] == [["ops@buatfilm.example", "cto@buatfilm.example"]]
    assert "Test alert" in mail.outbox[0].subject
    ((path, alerts),) = stub.received
    assert path == "/api/v2/alerts"
    assert alerts[0]["labels"]["alertname"] == "BuatFilmTestAlert"
    assert alerts[0]["endsAt"] > alerts[0]["startsAt"]


def test_alert_test_reports_a_channel_that_fails_and_still_tries_the_others(settings, alertmanager):
    url, stub = alertmanager
    stub.status = 500
    settings.ALERT_EMAILS = ["ops@buatfilm.example"]
    settings.ALERTMANAGER_URL = url
    out = StringIO()
    with pytest.raises(CommandError, match="did not go through: alertmanager"):
        call_command("alert_test", stdout=out)
    assert "alertmanager: FAILED" in out.getvalue()
    assert len(mail.outbox) == 1


def test_alert_test_without_any_channel_says_what_to_set(settings):
    settings.ALERT_EMAILS = []
    settings.ALERTMANAGER_URL = ""
    with pytest.raises(CommandError, match="ALERT_EMAILS.*ALERTMANAGER_URL"):
        call_command("alert_test")
    assert mail.outbox == []


# --- the demo's course link ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_default_course_link_opens_the_demo_course_page(client):
    # given a paid customer and the link from their "payment received" message (default COURSE_ACCESS_URL)
    EntitlementFactory(email="budi@example.com", course_code="ai-movie-course")
    link = access_link_build(email="budi@example.com", course_code="ai-movie-course")
    assert link.startswith(settings.PUBLIC_BASE_URL + "/course/ai-movie-course?token=")
    # when it is opened
    response = client.get(link.removeprefix(settings.PUBLIC_BASE_URL))
    # then the course page says access is active
    assert response.status_code == 200
    assert "Akses Anda aktif" in response.content.decode()


@pytest.mark.django_db
def test_a_forged_course_link_is_refused(client):
    EntitlementFactory(email="budi@example.com", course_code="ai-movie-course")
    response = client.get("/course/ai-movie-course?token=budi@example.com")
    assert response.status_code == 403
    assert "Akses tidak ditemukan" in response.content.decode()


@pytest.mark.django_db
def test_an_unknown_page_gets_the_indonesian_404_and_the_api_gets_json(client):
    page = client.get("/tidak-ada/")
    api = client.get("/api/tidak-ada/")
    assert page.status_code == 404 and "Halaman tidak ditemukan" in page.content.decode()
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


# --- .env.example, the Procfile ---------------------------------------------------------------


def test_env_example_is_loadable_by_a_shell_and_lists_every_setting():
    # given .env.example sourced by bash as operators do (`set -a; . ./.env`)
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail; set -a; . ./.env.example; set +a; env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    loaded = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    # then values with shell characters arrive whole
    assert loaded["DEFAULT_FROM_EMAIL"] == "BuatFilm <halo@buatfilm.local>"
    assert loaded["NOTIFICATION_RETRY_SCHEDULE"] == "30,120,600,1800,3600,7200,14400,28800"
    # and every variable this branch added is listed
    for name in (
        "DB_WEB_CALL_TIMEOUT_MS",
        "METRICS_TOKEN",
        "METRICS_ALLOWED_IPS",
        "PROMETHEUS_MULTIPROC_DIR",
        "BACKUP_DIR",
        "BACKUP_KEEP",
        "BACKUP_GPG_RECIPIENT",
        "SENTRY_DSN",
        "ALERTMANAGER_URL",
        "COURSE_ACCESS_URL",
    ):
        assert name in loaded, name


def test_env_example_is_read_the_same_by_honcho():
    from honcho.environ import parse

    parsed = parse((ROOT / ".env.example").read_text())
    assert parsed["DEFAULT_FROM_EMAIL"] == "BuatFilm <halo@buatfilm.local>"
    assert parsed["DB_WEB_CALL_TIMEOUT_MS"] == "2000"


def test_procfile_release_migrates_and_collects_static_files():
    from honcho.environ import parse_procfile

    processes = parse_procfile((ROOT / "Procfile").read_text()).processes
    assert set(processes) == {"release", "web", "worker", "beat"}
    assert "migrate --noinput" in processes["release"] and "collectstatic --noinput" in processes["release"]


# --- Sentry ------------------------------------------------------------------------------------------


class _SentryStub(http.server.BaseHTTPRequestHandler):
    envelopes: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        type(self).envelopes.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_sentry_reports_an_error_without_customer_data_when_a_dsn_is_set():
    _SentryStub.envelopes = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SentryStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = (
        "import django, sentry_sdk; django.setup();"
        "from django.test import Client;"
        "r = Client().post('/api/checkout/', {'email': 'budi@example.com', 'phone': '081234567890', "
        "'name': 'Budi', 'package_id': 'ai-movie-course'}, content_type='application/json');"
        "print(r.status_code); sentry_sdk.flush(5)"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "buatfilm.testing",
        "SENTRY_DSN": f"http://public@127.0.0.1:{server.server_address[1]}/1",
        # a database that refuses connections: the request fails (503) and the error is logged
        "DATABASE_URL": f"postgres://root@127.0.0.1:{free_port()}/nothing",
    }
    try:
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.stdout.strip().splitlines()[-1] == "503", result.stderr
    sent = b"".join(_SentryStub.envelopes)
    assert b"api_database_error" in sent or b"OperationalError" in sent
    assert b"budi@example.com" not in sent and b"081234567890" not in sent


# --- static files ------------------------------------------------------------------------------


def test_the_admin_styles_are_served_by_the_web_process_after_collectstatic(client):
    # given release's collectstatic (into STATIC_ROOT)
    call_command("collectstatic", "--noinput", verbosity=0)
    # when a browser asks for the admin's stylesheet, with DEBUG off as in production
    from django.test import Client

    response = Client().get("/static/admin/css/base.css", HTTP_ACCEPT_ENCODING="gzip")
    # then WhiteNoise serves it, compressed
    assert settings.DEBUG is False
    assert response.status_code == 200
    assert response.headers.get("Content-Encoding") == "gzip"
    assert b"".join(response.streaming_content)


# --- the Procfile under honcho -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_honcho_runs_web_worker_and_beat_and_their_heartbeat_and_counters_reach_metrics(tmp_path):
    import signal

    import requests

    from buatfilm.models import Heartbeat
    from notifications.tests.conftest import wait_for, worker_env

    # given the three long-running processes of the Procfile, started as the README says
    port = free_port()
    env = worker_env(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PORT=port,
        WEB_CONCURRENCY=1,
        WEB_THREADS=4,
        MIDTRANS_MAX_CONCURRENT_CALLS=1,
        WORKER_CONCURRENCY=1,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        METRICS_TOKEN="honcho-test-token",
        HEARTBEAT_INTERVAL_SECONDS=1,
        RECONCILE_INTERVAL_SECONDS=1,
        BEAT_SCHEDULE_FILE=str(tmp_path / "beat-schedule"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    )
    log = open(tmp_path / "honcho.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "honcho"), "start", "web", "worker", "beat"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def log_text() -> str:
        return (tmp_path / "honcho.log").read_text(errors="replace")

    try:
        # when they run, then the web is ready and beat's heartbeat, run by the worker, shows on /metrics
        def ready() -> bool:
            assert process.poll() is None, log_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, timeout=90, message="the web process under honcho", on_fail=log_text)
        wait_for(
            lambda: Heartbeat.objects.filter(name=Heartbeat.Name.BEAT).exists(),
            timeout=90,
            message="beat's heartbeat, run by the worker",
            on_fail=log_text,
        )

        def scrape() -> str:
            headers = {"Authorization": "Bearer honcho-test-token"}
            return requests.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=10).text

        assert 'buatfilm_heartbeat_timestamp_seconds{name="beat"}' in scrape()
        # and a counter kept by the Celery worker's process shows on the web's /metrics (shared directory)
        wait_for(
            lambda: 'buatfilm_reconcile_runs_total{outcome="ok"}' in scrape(),
            timeout=60,
            message="the worker's reconcile counter on the web's /metrics",
            on_fail=log_text,
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
