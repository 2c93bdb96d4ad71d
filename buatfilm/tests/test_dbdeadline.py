"""The client-side deadline on database calls (buatfilm.dbdeadline, buatfilm.postgresql): a call
to a server that stopped answering ends with an OperationalError at its deadline, a call outside
any scope is left alone, and Celery tasks run inside a scope of their own."""

import threading

import pytest
from django.db import OperationalError, connection

from buatfilm.dbdeadline import ConnectGate, connect_gate, deadline_scope, watchdog
from buatfilm.postgresql.base import DatabaseWrapper
from buatfilm.tests.db_proxy import DatabaseProxy

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _connect_gate_open():
    yield
    connect_gate.report(ok=True)  # a cut below marks this process's database as not answering


@pytest.fixture
def proxied_connection():
    """A connection of our backend to this run's database through a proxy the test can freeze."""
    settings_dict = connection.settings_dict
    proxy = DatabaseProxy(settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432))
    wrapper = DatabaseWrapper({**settings_dict, "HOST": "127.0.0.1", "PORT": proxy.port}, alias="proxied")
    yield wrapper, proxy
    proxy.close()
    wrapper.close()


def test_a_call_to_a_hung_server_ends_at_its_deadline(proxied_connection):
    wrapper, proxy = proxied_connection
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")  # warm: connected and answering
    cuts_before = watchdog.cuts

    # when the server hangs during a call made inside a scope
    proxy.freeze()
    with deadline_scope(0.5), pytest.raises(OperationalError), wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")

    # then the watchdog cut that call, the connection is known to be unusable, and the next
    # connection attempts wait for one probe instead of each spending the connect timeout
    assert watchdog.cuts == cuts_before + 1
    assert wrapper.is_usable() is False
    assert connect_gate.is_down()


def test_the_health_check_before_reuse_has_its_own_short_deadline(proxied_connection):
    wrapper, proxy = proxied_connection
    wrapper.ensure_connection()
    proxy.freeze()
    # outside any scope: the check still gives up instead of waiting for ever
    assert wrapper.is_usable() is False


def test_calls_outside_a_scope_are_not_watched(proxied_connection):
    wrapper, proxy = proxied_connection
    cuts_before = watchdog.cuts
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.3)")
    with deadline_scope(2.0), wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.3)")  # well within its deadline
    assert watchdog.cuts == cuts_before


def test_a_celery_task_runs_inside_a_deadline_scope(settings):
    # given a task that reports the deadline its database calls get
    from celery import shared_task

    from buatfilm import dbdeadline

    seen = {}

    @shared_task(name="buatfilm.tests.deadline_probe")
    def deadline_probe():
        seen["seconds"] = dbdeadline.scope_deadline()
        seen["thread"] = threading.current_thread().name

    # when it runs (eagerly, through Celery's task signals)
    deadline_probe.apply()

    # then its calls are bounded by the statement timeout plus the grace, and the scope ended with it
    assert seen["seconds"] == (settings.DB_STATEMENT_TIMEOUT_MS + settings.DB_TASK_CALL_GRACE_MS) / 1000
    assert dbdeadline.scope_deadline() is None


def test_while_the_database_is_down_one_probe_connects_and_requests_do_not_wait_for_it():
    gate = ConnectGate()
    gate.mark_down()
    release = threading.Event()
    probes = []

    def hung_probe():
        probes.append(threading.current_thread().name)
        release.wait(5)
        raise OSError("connection timeout expired")

    # when requests ask while the server hangs, then each is refused after the short wait, and
    # only one probe runs however many ask
    assert [gate.admit(probe=hung_probe) for _ in range(3)] == [False, False, False]
    assert probes == ["db-probe"]
    release.set()


def test_a_probe_that_connects_opens_the_gate_for_the_request_waiting_on_it():
    gate = ConnectGate()
    gate.mark_down()
    assert gate.admit(probe=lambda: None) is True  # the probe connected within the wait
    assert not gate.is_down()


def test_a_failed_probe_keeps_the_gate_closed_and_a_later_request_starts_another():
    gate = ConnectGate()
    gate.mark_down()
    calls = []

    def refused():
        calls.append(1)
        raise OSError("connection refused")

    assert gate.admit(probe=refused) is False
    assert gate.is_down()
    assert gate.admit(probe=lambda: calls.append(2)) is True
    assert calls == [1, 2]
