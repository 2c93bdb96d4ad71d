"""Real processes for the delivery tests: `celery -A buatfilm worker` subprocesses and a private redis-server.

The worker reads the same settings module as production (buatfilm.testing on top of
buatfilm.settings) from its environment, connects to this run's test database and
broker, and talks to the stub providers in notifications/tests/stubs.py over sockets.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from buatfilm.celery import app as celery_app
from notifications.tests.stubs import free_port
from payments.tests.conftest import midtrans_sim  # noqa: F401 - the Midtrans simulator fixture, for the outage test

BASE_DIR = Path(settings.BASE_DIR)


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.1, message: str = "condition", on_fail=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    details = on_fail() if on_fail else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {message}\n{details}")


class WorkerProcess:
    def __init__(self, env: dict, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "buatfilm",
                "worker",
                "--queues=notifications",
                "--pool=solo",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                f"--hostname=h3-{uuid.uuid4().hex[:8]}@%h",
                "--loglevel=INFO",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self):
        wait_for(
            lambda: " ready." in self.log() or self.process.poll() is not None,
            timeout=60,
            message="the celery worker to start",
            on_fail=self.log,
        )
        if self.process.poll() is not None:
            raise AssertionError(f"celery worker exited with {self.process.returncode}:\n{self.log()}")

    def kill(self):
        """SIGKILL: the worker gets no chance to ack, reject or clean up."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def worker_env(**overrides) -> dict:
    """The environment of a worker process that shares this test run's database and broker."""
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "buatfilm.testing",
            "DATABASE_URL": f"postgres://{db['USER'] or 'root'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
            f"{db['NAME']}",
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "NOTIFICATION_RETRY_SCHEDULE": "0.3,0.3,0.3,0.3",
            "NOTIFICATION_RETRY_JITTER": "0",
            "NOTIFICATION_LEASE_SECONDS": "30",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


@pytest.fixture(autouse=True)
def _kicks_not_skipped():
    """A broker failure in one test must not make the next test's kicks skip (services backs off 5 s)."""
    from notifications import services

    services._kick_skip_until = 0.0
    yield
    services._kick_skip_until = 0.0


@pytest.fixture
def broker_flushed():
    """This run's broker database, emptied: no stale task messages from earlier tests."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    client.close()


@pytest.fixture
def celery_worker_factory(transactional_db, broker_flushed, settings):
    """start(**env) -> a ready WorkerProcess; all are stopped before the database is flushed."""
    # The sweep and the retry schedule run in this process too; make them match the workers.
    settings.NOTIFICATION_RETRY_SCHEDULE = [0.3, 0.3, 0.3, 0.3]
    settings.NOTIFICATION_RETRY_JITTER = 0
    settings.NOTIFICATION_SWEEP_GRACE = 0
    workers: list[WorkerProcess] = []
    log_dir = Path(tempfile.mkdtemp(prefix="h3-workers-"))

    def start(**env) -> WorkerProcess:
        worker = WorkerProcess(worker_env(**env), log_dir / f"worker-{len(workers)}.log")
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()
    shutil.rmtree(log_dir, ignore_errors=True)


class RedisServer:
    """A private redis-server: the shared one on 6379 is never stopped by these tests."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)

        def up():
            try:
                return client.ping()
            except redis.RedisError:
                return False

        wait_for(up, timeout=10, message=f"redis-server on port {self.port}")
        client.close()

    def kill(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def private_redis():
    server = RedisServer()
    server.start()
    yield server
    server.kill()


@pytest.fixture
def celery_broker_switch():
    """Point this process's Celery app (the one the web code kicks through) at another broker."""
    original = celery_app.conf.broker_url

    def reset_pools():
        celery_app._pool = None
        celery_app.amqp._producer_pool = None

    def switch(url: str):
        celery_app.conf.broker_url = url
        reset_pools()

    yield switch
    celery_app.conf.broker_url = original
    reset_pools()
