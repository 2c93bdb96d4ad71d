"""import_legacy into the `make run` demo's SQLite database: the import's own INSERTs must be
valid SQLite too (the rest of the suite runs on PostgreSQL)."""

import sqlite3
import subprocess
import sys

import pytest

from payments.tests.legacy_support import legacy_row, sqlite_orders_db
from payments.tests.test_demo_sqlite import ROOT, _demo_env

pytestmark = pytest.mark.slow


def test_import_into_the_sqlite_demo_keeps_the_old_times(tmp_path):
    database = tmp_path / "demo.sqlite3"
    env = _demo_env(database=database, port=8000)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120)
    old = sqlite_orders_db(
        tmp_path / "orders.db",
        [legacy_row("OLD-1", status="paid"), legacy_row("OLD-2", status="pending", created_at="2026-11-02 01:02:03")],
    )

    result = subprocess.run(
        [*manage, "import_legacy", "--sqlite", str(old)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert "imported total: 2" in result.stdout
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT o.legacy_id, o.status, o.created_at, a.midtrans_order_id FROM payments_order o "
            "JOIN payments_paymentattempt a ON a.order_id = o.id ORDER BY o.legacy_id"
        ).fetchall()
        entitlements = db.execute("SELECT count(*) FROM entitlements_entitlement").fetchone()[0]
    assert [(r[0], r[1], r[3]) for r in rows] == [("OLD-1", "PAID", "OLD-1"), ("OLD-2", "PENDING_PAYMENT", "OLD-2")]
    assert rows[1][2].startswith("2026-11-02 01:02:03")
    assert entitlements == 1
