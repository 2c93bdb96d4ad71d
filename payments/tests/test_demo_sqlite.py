"""The README's `make run` demo, end to end on SQLite: the rest of the suite runs on
PostgreSQL, so this is what keeps the demo's database honest (every hand-written statement
must also be valid SQLite)."""

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _demo_env(*, database: Path, port: int) -> dict:
    # What `make run` sets; nothing from the test settings (no Redis: tasks run in-process).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REDIS_", "MIDTRANS_", "DATABASE_"))}
    env.update(
        ENV_FILE="/nonexistent",
        DJANGO_SETTINGS_MODULE="buatfilm.settings",
        DEBUG="true",
        MIDTRANS_SIMULATOR="true",
        DATABASE_URL=f"sqlite:///{database}",
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        EMAIL_URL="consolemail://",
        WHATSAPP_BACKEND="console",
        REDIS_URL="",
    )
    return env


def _request(url: str, *, body: dict | None = None) -> tuple[int, dict]:
    response = requests.post(url, json=body, timeout=15) if body is not None else requests.get(url, timeout=15)
    return response.status_code, response.json()


def test_demo_on_sqlite_takes_a_checkout_to_paid(tmp_path):
    # given the demo: a migrated SQLite file and the development server with the simulator
    port = _free_port()
    env = _demo_env(database=tmp_path / "demo.sqlite3", port=port)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120)
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _request(f"{base}/health/live")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.2)

        # when a customer checks out and pays on the simulator
        status, order = _request(
            f"{base}/api/checkout/",
            body={
                "package_id": "ai-movie-course",
                "name": "Budi Santoso",
                "email": "budi@example.com",
                "phone": "0812-3456-7890",
            },
        )
        assert status == 201, order
        assert order["status"] == "PENDING_PAYMENT"
        paid = subprocess.run(
            [*manage, "midtrans_sim", f"{order['order_id']}-1", "settlement", "--wait", "10"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert paid.returncode == 0, paid.stderr

        # then the webhook made the order PAID, and the customer was told by email and WhatsApp
        status, seen = _request(f"{base}/api/orders/{order['order_id']}/")
        assert (status, seen["status"]) == (200, "PAID"), seen

        # and a double (quadruple) click of another customer makes one order, never a 500
        body = {"package_id": "ai-movie-course", "name": "Siti", "email": "siti@example.com", "phone": "081298765432"}
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda _: _request(f"{base}/api/checkout/", body=body), range(4)))
        assert {status for status, _ in answers} <= {200, 201}, answers
        assert len({answer["order_id"] for _, answer in answers}) == 1, answers
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
    output = (tmp_path / "server.log").read_text()
    assert "Pembayaran diterima" in output
    assert "Traceback" not in output
