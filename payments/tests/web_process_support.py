"""The web process exactly as the Procfile starts it, for the tests that need a real gunicorn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from django.conf import settings

from notifications.tests.conftest import wait_for, worker_env

BASE_DIR = Path(settings.BASE_DIR)


def procfile_command(process: str) -> str:
    for line in (BASE_DIR / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return command.strip()
    raise AssertionError(f"the Procfile has no {process!r} process")


def web_env(*, port: int, **overrides) -> dict:
    """A worker's environment (this run's database and broker) for a web process on `port`."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return worker_env(PATH=path, PORT=port, PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", **overrides)


@contextmanager
def procfile_web(*, env: dict, ready_path: str = "/health/live", name: str = "web") -> Iterator[str]:
    """Start the Procfile's web process with `env`, wait until `ready_path` answers 200, yield
    its URL; stopped (its whole process group) afterwards."""
    log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        ["bash", "-c", "exec " + procfile_command("web")],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{env['PORT']}"

    def log_text() -> str:
        return Path(log.name).read_text(errors="replace")

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the web process exited with {process.returncode}:\n{log_text()}")
        try:
            return requests.get(url + ready_path, timeout=5).status_code == 200
        except requests.RequestException:  # not listening yet, or still loading the app
            return False

    try:
        wait_for(ready, timeout=60, message="the web process to serve", on_fail=log_text)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        os.unlink(log.name)
