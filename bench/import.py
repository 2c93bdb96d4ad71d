"""Benchmark: import 100,000 legacy orders from an old-app SQLite orders.db.

    .venv/bin/python bench/import.py [--rows 100000] [--batch-size 1000]

What runs: a scratch PostgreSQL database (`buatfilm_bench_import`, dropped and re-created,
migrated), a generated orders.db in the old app's snake_case spelling (amounts as integer,
REAL and "99000.00" text; phones written 0812…, 62812… and +62812…; mostly paid orders, some
pending, expired, failed and cancelled; 0.1 % dirty rows that must be refused), and
`manage.py import_legacy --sqlite … --allow-partial` as a child process, streaming in batches,
one transaction per batch, every paid order granted through entitlement_grant_many. First a
--dry-run (the checking pass an import without --allow-partial runs before writing), then
the import, then the same import again (nothing to do).

Prints the wall time of each run, the CPU time of the command and of the PostgreSQL backends
serving it (sampled from /proc: the share of the machine the import needs, whatever else
runs), the command's peak resident memory (ru_maxrss), and its
resident memory sampled every 0.25 s, at each tenth of the run: flat when the import
streams. Target: the import under 60 s. Other processes on this machine share the
CPU; the figures are what this run measured.
"""

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness

DB_NAME = "buatfilm_bench_import"
STATUSES = ["paid"] * 80 + ["settlement"] * 5 + ["pending"] * 5 + ["expired"] * 5 + ["failed"] * 3 + ["cancel"] * 2


def orders_db_build(path: Path, rows: int) -> int:
    """The old app's orders.db with `rows` orders; returns how many are dirty (to be refused)."""
    rng = random.Random(15)
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE orders (id TEXT, customer_name TEXT, email TEXT, phone TEXT, amount, payment_method TEXT, "
        "status TEXT, payment_url TEXT, token TEXT, created_at TEXT DEFAULT CURRENT_TIMESTAMP, notes TEXT)"
    )
    dirty = 0

    def generate():
        nonlocal dirty
        for n in range(rows):
            legacy_id = f"ORDER-{1700000000000 + n}"
            phone = rng.choice(["0812{:08d}", "62812{:08d}", "+62812{:08d}"]).format(n % 10**8)
            amount = rng.choice([99000, 99000.0, "99000.00", "99000"])
            status = rng.choice(STATUSES)
            if n % 1000 == 999:  # the dirty rows real files carry
                dirty += 1
                amount = "99000.50"
            yield (
                legacy_id,
                f"Pelanggan {n}",
                f"Pelanggan.{n}@Example.com ",
                phone,
                amount,
                "bank_transfer",
                status.upper() if n % 7 == 0 else status,
                f"https://app.midtrans.com/snap/v2/vtweb/{legacy_id}",
                f"tok-{n}",
                f"2026-{1 + n % 11:02d}-{1 + n % 28:02d} {n % 24:02d}:00:00",
                "imported by bench",
            )

    db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", generate())
    db.commit()
    db.close()
    return dirty


def _rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def import_run(
    *, env: dict, path: Path, batch_size: int, extra: list[str]
) -> tuple[float, float, float, list[int], int, str]:
    """One import as a child process: (seconds, its CPU seconds, the CPU seconds of the PostgreSQL
    backends serving it, RSS samples in KiB, peak RSS KiB, its report)."""
    import psycopg

    command = [harness.PYTHON, "manage.py", "import_legacy", "--sqlite", str(path), "--allow-partial"]
    command += ["--batch-size", str(batch_size), *extra]
    started = time.monotonic()
    child = subprocess.Popen(command, cwd=harness.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples: list[int] = []
    backend_cpu: dict[int, float] = {}  # pid -> last CPU seconds seen (the server is on this machine)

    def sample():
        with psycopg.connect(harness.database_url("postgres"), autocommit=True) as monitor:
            while child.poll() is None:
                rss = _rss_kib(child.pid)
                if rss:
                    samples.append(rss)
                pids = monitor.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [DB_NAME]
                ).fetchall()
                for (pid,) in pids:
                    cpu = _cpu_seconds(pid)
                    if cpu is not None:
                        backend_cpu[pid] = cpu
                time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # wait4 gives the child's own peak resident set (ru_maxrss, KiB on Linux).
    _pid, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - started
    sampler.join()
    out = child.stdout.read().decode()
    err = child.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"import_legacy failed:\n{out}\n{err}")
    return seconds, usage.ru_utime + usage.ru_stime, sum(backend_cpu.values()), samples, usage.ru_maxrss, out


def _summary(report: str) -> str:
    wanted = ("imported total", "unchanged", "refused:", "entitlements granted", "nothing to import")
    return "; ".join(line.strip() for line in report.splitlines() if line.strip().startswith(wanted))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")

    url = harness.database_create(name=DB_NAME)
    env = harness.server_env(database_url=url, port=0, LOG_LEVEL="WARNING")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "orders.db"
            dirty = orders_db_build(path, args.rows)
            print(f"orders.db: {args.rows} orders ({dirty} dirty), {path.stat().st_size / 2**20:.1f} MiB")
            runs = [
                ("dry run (the checking pass alone)", ["--dry-run"]),
                ("import --allow-partial", []),
                ("the same import again (nothing to do)", []),
            ]
            for label, extra in runs:
                seconds, cpu, pg_cpu, samples, peak, report = import_run(
                    env=env, path=path, batch_size=args.batch_size, extra=extra
                )
                tenths = (
                    [samples[min(len(samples) - 1, len(samples) * k // 10)] for k in range(1, 11)] if samples else []
                )
                print(
                    f"{label}: {seconds:.1f} s wall, CPU {cpu:.1f} s in the command + {pg_cpu:.1f} s in PostgreSQL, "
                    f"{args.rows / seconds:,.0f} rows/s, "
                    f"peak RSS {peak / 1024:.0f} MiB"
                )
                print(f"  RSS at each tenth of the run (MiB): {' '.join(f'{s / 1024:.0f}' for s in tenths)}")
                print(f"  {_summary(report)}")
            print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print("target: the import under 60 s, RSS flat across the run")
    finally:
        harness.database_drop(name=DB_NAME)


if __name__ == "__main__":
    main()
