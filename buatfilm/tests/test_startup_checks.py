"""Each misconfiguration refuses to start with a message naming the variable and the fix."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

GOOD = {
    "DEBUG": "false",
    "SECRET_KEY": "a-long-random-secret-for-this-test-only",
    "DATABASE_URL": "postgres://root@127.0.0.1:5432/postgres",
    "MIDTRANS_SERVER_KEY": "SB-Mid-server-abc123",
    "MIDTRANS_IS_PRODUCTION": "false",
    "MIDTRANS_SIMULATOR": "false",
    "REDIS_URL": "redis://127.0.0.1:6379/15",
    "PUBLIC_BASE_URL": "https://buatfilm.example",
    "COURSE_ACCESS_URL": "https://kelas.example/{course}?token={token}",
    "METRICS_TOKEN": "a-metrics-token-for-this-test-only",
    "ENV_FILE": "/nonexistent",
}


def run_check(**overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "DJANGO_", "DATABASE_", "DEBUG"))}
    for name in ("SECRET_KEY", "REDIS_URL", "PUBLIC_BASE_URL"):
        env.pop(name, None)
    env.update(GOOD)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env["DJANGO_SETTINGS_MODULE"] = "buatfilm.settings"
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"MIDTRANS_MAX_CONCURRENT_CALLS": "3", "WEB_THREADS": "7"},
        # one thread per worker (sync workers): nothing to keep free, nothing to check
        {"MIDTRANS_MAX_CONCURRENT_CALLS": "3", "WEB_THREADS": "1"},
    ],
)
def test_call_limits_that_leave_a_web_thread_free_pass(overrides):
    result = run_check(**overrides)
    assert result.returncode == 0, result.stderr


def test_an_unset_metrics_token_is_warned_about_but_does_not_stop_the_process():
    result = run_check(METRICS_TOKEN=None)
    assert result.returncode == 0, result.stderr
    assert "buatfilm.W001" in result.stderr + result.stdout
    assert "METRICS_TOKEN" in result.stderr + result.stdout


def test_good_configuration_passes():
    result = run_check()
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "check_id", "names"),
    [
        ({"SECRET_KEY": None}, "buatfilm.E001", ["SECRET_KEY", "DEBUG"]),
        ({"DATABASE_URL": "sqlite:///demo.sqlite3"}, "buatfilm.E002", ["DATABASE_URL", "postgres://"]),
        ({"MIDTRANS_SERVER_KEY": None}, "buatfilm.E003", ["MIDTRANS_SERVER_KEY"]),
        ({"MIDTRANS_IS_PRODUCTION": "true"}, "buatfilm.E004", ["MIDTRANS_SERVER_KEY", "MIDTRANS_IS_PRODUCTION"]),
        ({"MIDTRANS_SERVER_KEY": "Mid-server-live123"}, "buatfilm.E005", ["MIDTRANS_SERVER_KEY", "sandbox"]),
        (
            {"MIDTRANS_SIMULATOR": "true", "MIDTRANS_IS_PRODUCTION": "true", "MIDTRANS_SERVER_KEY": "Mid-server-x"},
            "buatfilm.E006",
            ["MIDTRANS_SIMULATOR", "production"],
        ),
        (
            {"DEBUG": "true", "MIDTRANS_IS_PRODUCTION": "true", "MIDTRANS_SERVER_KEY": "Mid-server-x"},
            "buatfilm.E008",
            ["DEBUG", "MIDTRANS_IS_PRODUCTION"],
        ),
        # the placeholder key is only for the simulator demo, even with DEBUG on
        ({"DEBUG": "true", "SECRET_KEY": None}, "buatfilm.E001", ["SECRET_KEY"]),
        ({"REDIS_URL": None}, "buatfilm.E009", ["REDIS_URL", "redis://"]),
        ({"MIDTRANS_SIMULATOR": "true"}, "buatfilm.E010", ["MIDTRANS_SIMULATOR", "PUBLIC_BASE_URL"]),
        (
            {
                "MIDTRANS_IS_PRODUCTION": "true",
                "MIDTRANS_SERVER_KEY": "Mid-server-x",
                "MIDTRANS_API_URL": "http://api.midtrans.com",
            },
            "buatfilm.E011",
            ["MIDTRANS_API_URL", "https"],
        ),
        ({"MIDTRANS_READ_TIMEOUT": "0"}, "buatfilm.E012", ["MIDTRANS_READ_TIMEOUT", "greater than zero"]),
        ({"MIDTRANS_BREAKER_FAILURES": "-1"}, "buatfilm.E012", ["MIDTRANS_BREAKER_FAILURES"]),
        ({"MIDTRANS_CONNECT_TIMEOUT": "soon"}, "buatfilm.E000", ["MIDTRANS_CONNECT_TIMEOUT"]),
        ({"MIDTRANS_MAX_CONCURRENT_CALLS": "0"}, "buatfilm.E012", ["MIDTRANS_MAX_CONCURRENT_CALLS"]),
        ({"MIDTRANS_MAX_CONCURRENT_CALLS": "many"}, "buatfilm.E000", ["MIDTRANS_MAX_CONCURRENT_CALLS"]),
        ({"WEB_THREADS": "0"}, "buatfilm.E012", ["WEB_THREADS"]),
        ({"WEBHOOK_STATUS_BUDGET": "0"}, "buatfilm.E012", ["WEBHOOK_STATUS_BUDGET"]),
        # calls to a slow Midtrans could hold every thread of a web worker
        (
            {"MIDTRANS_MAX_CONCURRENT_CALLS": "4", "WEB_THREADS": "8"},
            "buatfilm.E017",
            ["MIDTRANS_MAX_CONCURRENT_CALLS=4", "WEB_THREADS=8", "below"],
        ),
        ({"DATABASE_URL": "not a url at all"}, "buatfilm.E000", ["DATABASE_URL", "postgres://"]),
        ({"DATABASE_URL": "mysqlx://nobody@host/db"}, "buatfilm.E000", ["DATABASE_URL"]),
        ({"DEBUG": "maybe"}, "buatfilm.E000", ["DEBUG"]),
        ({"WHATSAPP_BACKEND": "pigeon"}, "buatfilm.E007", ["WHATSAPP_BACKEND", "meta"]),
        (
            {
                "MIDTRANS_IS_PRODUCTION": "true",
                "MIDTRANS_SERVER_KEY": "Mid-server-x",
                "MIDTRANS_CONFIRM_WITH_STATUS_API": "false",
            },
            "buatfilm.E013",
            ["MIDTRANS_CONFIRM_WITH_STATUS_API", "MIDTRANS_IS_PRODUCTION"],
        ),
        # a placeholder that access_link_build does not fill: KeyError inside every settlement
        (
            {"COURSE_ACCESS_URL": "https://kelas.example/{course}/{lesson}?token={token}"},
            "buatfilm.E014",
            ["COURSE_ACCESS_URL", "lesson", "{course}", "{token}"],
        ),
        ({"COURSE_ACCESS_URL": "https://kelas.example/{course?token={token}"}, "buatfilm.E014", ["COURSE_ACCESS_URL"]),
        ({"REQUESTS_CA_BUNDLE": "/nonexistent/ca.pem"}, "buatfilm.E016", ["REQUESTS_CA_BUNDLE", "certifi"]),
        ({"COURSE_ACCESS_URL": None}, "buatfilm.E018", ["COURSE_ACCESS_URL", "{course}", "{token}"]),
        ({"METRICS_ALLOWED_IPS": "10.0.0.0/8,not-an-ip"}, "buatfilm.E019", ["METRICS_ALLOWED_IPS", "not-an-ip"]),
        ({"DB_WEB_CALL_TIMEOUT_MS": "3000"}, "buatfilm.E020", ["DB_WEB_CALL_TIMEOUT_MS", "3000"]),
        (
            {"REQUESTS_CA_BUNDLE": None, "CURL_CA_BUNDLE": "/nonexistent/certs"},
            "buatfilm.E016",
            ["CURL_CA_BUNDLE", "/nonexistent/certs"],
        ),
    ],
)
def test_misconfiguration_refuses_with_named_variable_and_fix(overrides, check_id, names):
    result = run_check(**overrides)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert check_id in output
    for name in names:
        assert name in output
    assert "HINT" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("name", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_a_ca_bundle_that_exists_passes(name):
    import certifi

    result = run_check(**{"REQUESTS_CA_BUNDLE": None, "CURL_CA_BUNDLE": None, name: certifi.where()})
    assert result.returncode == 0, result.stderr


def test_only_the_ca_bundle_the_client_uses_is_checked():
    # requests takes REQUESTS_CA_BUNDLE over CURL_CA_BUNDLE: a stale CURL_CA_BUNDLE beside it is never read.
    import certifi

    result = run_check(REQUESTS_CA_BUNDLE=certifi.where(), CURL_CA_BUNDLE="/nonexistent/certs")
    assert result.returncode == 0, result.stderr


def test_demo_needs_no_midtrans_key():
    result = run_check(
        DEBUG="true",
        DATABASE_URL="sqlite:///demo.sqlite3",
        MIDTRANS_SERVER_KEY=None,
        MIDTRANS_SIMULATOR="true",
        SECRET_KEY=None,
        REDIS_URL=None,
        PUBLIC_BASE_URL="http://127.0.0.1:8000",
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("process", "args", "missing"),
    [
        ("gunicorn", ["buatfilm.wsgi:application", "--bind", "127.0.0.1:0"], "MIDTRANS_SERVER_KEY"),
        ("celery", ["-A", "buatfilm", "worker", "--pool", "solo"], "SECRET_KEY"),
        ("celery", ["-A", "buatfilm", "beat", "--schedule", "/tmp/buatfilm-test-beat-schedule"], "SECRET_KEY"),
    ],
)
def test_web_worker_and_beat_refuse_to_start_on_bad_configuration(process, args, missing):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "DJANGO_", "DATABASE_"))}
    env.update(GOOD, DJANGO_SETTINGS_MODULE="buatfilm.settings", **{missing: ""})
    result = subprocess.run(
        [str(Path(sys.executable).parent / process), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert missing in result.stderr
    assert "refuses to start" in result.stderr


def test_confirmation_may_be_off_against_the_sandbox():
    # given/when: the sandbox (not production) with confirmation off, e.g. for a local test setup
    result = run_check(MIDTRANS_CONFIRM_WITH_STATUS_API="false")

    # then
    assert result.returncode == 0, result.stdout + result.stderr


def test_notification_templates_render_at_start_up():
    # given: the shipped templates and the default COURSE_ACCESS_URL
    from buatfilm.checks import notification_templates_check

    # when
    errors = notification_templates_check()

    # then
    assert errors == []


@pytest.mark.parametrize(
    ("template", "name", "content"),
    [
        ("payment_received", "email.txt", "Halo {{ customer_name }} {% if %}"),  # syntax error
        ("payment_instructions", "whatsapp.txt", "Bayar {{ amount|no_such_filter }}"),  # unknown filter
        ("order_expired", "subject.txt", "{% include 'notifications/order_expired/gone.txt' %}"),  # missing file
    ],
)
def test_a_broken_notification_template_refuses_to_start_naming_it(settings, tmp_path, template, name, content):
    # given: a broken copy of one template in front of the shipped ones
    from buatfilm.checks import notification_templates_check

    broken = tmp_path / "notifications" / template / name
    broken.parent.mkdir(parents=True)
    broken.write_text(content)
    settings.TEMPLATES = [settings.TEMPLATES[0] | {"DIRS": [tmp_path, *settings.TEMPLATES[0]["DIRS"]]}]

    # when
    errors = notification_templates_check()

    # then: one error, naming the template and where to fix it
    assert [e.id for e in errors] == ["buatfilm.E015"]
    assert repr(template) in errors[0].msg
    assert f"templates/notifications/{template}/" in errors[0].hint


def test_a_missing_notification_template_refuses_to_start(settings, tmp_path):
    # given: a template set without the refund email (as if its directory was renamed)
    from buatfilm.checks import notification_templates_check

    shipped = Path(settings.TEMPLATES[0]["DIRS"][0])
    copy = tmp_path / "templates"
    shutil.copytree(shipped, copy)
    shutil.rmtree(copy / "notifications" / "refund_processed")
    settings.TEMPLATES = [settings.TEMPLATES[0] | {"DIRS": [copy], "APP_DIRS": False}]

    # when
    errors = notification_templates_check()

    # then
    assert [e.id for e in errors] == ["buatfilm.E015"]
    assert "'refund_processed'" in errors[0].msg and "TemplateDoesNotExist" in errors[0].msg
