"""Shared pieces for the benchmark scripts in bench/: a throw-away PostgreSQL database,
gunicorn processes, a closed-loop HTTP load generator, percentiles, and pgbench.

Every figure is measured, then printed; nothing here asserts a speed. Scripts run as
`python bench/<name>.py` (so this directory is on sys.path) and use it as:

    import harness
    url = harness.database_create(name="buatfilm_bench_x")      # dropped and re-created, migrated
    harness.django_setup(database_url=url)                        # ORM in this process (seeding)
    with harness.Gunicorn(env=harness.server_env(database_url=url, port=p), port=p) as web:
        result = harness.load_run(url=web.url + "/path", bodies=[...], concurrency=8)
    print(harness.result_line("label", result))
    tps = harness.pgbench_run(database=..., script="...", clients=8, transactions=...)

Only databases whose name starts with "buatfilm_bench" are ever dropped.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
GUNICORN = str(Path(PYTHON).parent / "gunicorn")
PG_HOST = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = os.environ.get("BENCH_PG_PORT", "5432")
PG_USER = os.environ.get("BENCH_PG_USER", "root")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
SERVER_KEY = "SB-Mid-server-BENCH-ONLY"
ENTITLEMENTS_TOKEN = "bench-token"  # noqa: S105 (a bench-only placeholder)


# --- Database -----------------------------------------------------------------------------------


def database_url(name: str) -> str:
    return f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def _psql(sql: str, database: str = "postgres") -> None:
    subprocess.run(
        ["psql", "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-d", database, "-v", "ON_ERROR_STOP=1", "-qc", sql],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def database_create(*, name: str) -> str:
    """Drop and re-create the bench database `name`, migrate it; returns its DATABASE_URL."""
    if not name.startswith("buatfilm_bench"):
        raise ValueError("bench databases must be named buatfilm_bench*: nothing else is ever dropped")
    _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _psql(f'CREATE DATABASE "{name}"')
    url = database_url(name)
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=server_env(database_url=url, port=0),
        check=True,
    )
    return url


def database_drop(*, name: str) -> None:
    if name.startswith("buatfilm_bench"):
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def django_setup(*, database_url: str, **env) -> None:
    """Configure Django in this process against the bench database (for seeding and checks)."""
    os.environ.update(server_env(database_url=database_url, port=0, **env))
    os.environ["DJANGO_SETTINGS_MODULE"] = "buatfilm.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


# --- Processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(*, database_url: str, port: int, **overrides) -> dict:
    """The environment of a production-like process (DEBUG off, PostgreSQL, Redis)."""
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "ENV_FILE": "/nonexistent",
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "SECRET_KEY": "bench-only-secret-key-0123456789-abcdefghij",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "*",
        "PUBLIC_BASE_URL": base,
        "MIDTRANS_SIMULATOR": "true",
        "MIDTRANS_SERVER_KEY": SERVER_KEY,
        "ENTITLEMENTS_API_TOKEN": ENTITLEMENTS_TOKEN,
        "EMAIL_URL": "memorymail://",
        "WHATSAPP_BACKEND": "console",
        "LOG_LEVEL": "INFO",
        "CACHE_KEY_PREFIX": f"buatfilm-bench-{port}",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class Gunicorn:
    """gunicorn serving the project on 127.0.0.1:port (gthread workers unless told), logs to a temp file."""

    def __init__(
        self,
        *,
        env: dict,
        port: int,
        workers: int = 2,
        threads: int = 8,
        label: str = "web",
        worker_class: str = "gthread",
        extra_args: tuple[str, ...] = (),
    ):
        self.env, self.port, self.workers, self.threads, self.label = env, port, workers, threads, label
        self.worker_class, self.extra_args = worker_class, tuple(extra_args)
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(tempfile.gettempdir()) / f"bench-{label}-{port}.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Gunicorn:
        self._log = open(self.log_path, "w")  # closed in __exit__
        self.process = subprocess.Popen(
            [
                GUNICORN,
                "buatfilm.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--threads",
                str(self.threads),
                "--worker-class",
                self.worker_class,
                "--timeout",
                "60",
                "--backlog",
                "2048",
                # A threaded worker accepts only as many connections as it has threads (as in
                # the Procfile), so a busy worker leaves new ones to the free workers.
                *(
                    ["--worker-connections", str(self.threads), "--keep-alive", "0"]
                    if self.worker_class == "gthread"
                    else []
                ),
                *self.extra_args,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn ({self.label}) exited; see {self.log_path}")
            try:
                status, _ = request_once(self.url + "/health/live", method="GET")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn ({self.label}) did not become ready; see {self.log_path}")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by gunicorn's master and workers."""
        return process_group_cpu_seconds(self.process.pid) if self.process else 0.0

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def web_arguments_add(parser) -> None:
    """--web-workers/--web-threads/--web-worker-class, defaulting to the Procfile's web process:
    4 gthread workers of 8 threads, each accepting only as many connections as it has threads.
    Call web_arguments_check(parser, args) after parsing."""
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn workers (WEB_CONCURRENCY)")
    parser.add_argument(
        "--web-threads",
        type=int,
        default=8,
        help="threads per worker (WEB_THREADS); at or below twice MIDTRANS_MAX_CONCURRENT_CALLS (3), set that lower",
    )
    parser.add_argument("--web-worker-class", default="gthread", choices=["gthread", "sync"])


def rate_arguments_add(parser, *, what: str, seconds: float) -> None:
    """--rates (default 30 and 60 per second) and --rate-seconds for an open-loop phase."""
    parser.add_argument(
        "--rates",
        type=float,
        nargs="*",
        default=[30.0, 60.0],
        help=f"open loop: {what} arriving at these rates per second (none: skip)",
    )
    parser.add_argument("--rate-seconds", type=float, default=seconds, help="how long each open-loop rate runs")


def web_arguments_check(parser, args) -> None:
    # gunicorn quietly runs a "sync" worker with more than one thread as gthread.
    if args.web_worker_class == "sync" and args.web_threads != 1:
        parser.error("--web-worker-class sync runs one thread per worker: add --web-threads 1")


@contextmanager
def web_and_simulator(*, args, web_env: dict, web_port: int, sim_env: dict, sim_port: int, web_extra_args=()):
    """The product and the Midtrans simulator, each under its own gunicorn, sized by the
    bench's --web-workers/--web-threads/--web-worker-class and --sim-workers/--sim-threads;
    yields (web, simulator)."""
    with (
        Gunicorn(
            env=sim_env, port=sim_port, workers=args.sim_workers, threads=args.sim_threads, label="simulator"
        ) as simulator,
        Gunicorn(
            # The start-up check compares the call limit with the threads gunicorn really runs.
            env={**web_env, "WEB_THREADS": str(args.web_threads)},
            port=web_port,
            workers=args.web_workers,
            threads=args.web_threads,
            label="web",
            worker_class=args.web_worker_class,
            extra_args=web_extra_args,
        ) as web,
    ):
        yield web, simulator


def _proc_stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; it is in parentheses.
    return raw[raw.rindex(")") + 2 :].split()


def process_cpu_seconds(pid: int) -> float:
    fields = _proc_stat_fields(pid)
    # After the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS if fields else 0.0


def process_group_cpu_seconds(pgid: int) -> float:
    """CPU time of every live process in a process group (Linux /proc)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat_fields(int(entry.name))
            if fields and int(fields[2]) == pgid:
                total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


def postgres_backend_pids(database: str) -> list[int]:
    """Server processes currently connected to `database` (their CPU is the database's share)."""
    import psycopg

    with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres") as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [database]).fetchall()
    return [row[0] for row in rows]


# --- Load generation ------------------------------------------------------------------------------


def _target(parts) -> str:
    """The request target of a split URL: its path and query string."""
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def request_once(url: str, *, method: str = "POST", body: bytes | None = None, headers: dict | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, _target(parts), body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class LoadResult:
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def load_run(
    *,
    url: str,
    bodies: list[bytes],
    concurrency: int,
    headers: dict | None = None,
    method: str = "POST",
    headers_per_body: list[dict] | None = None,
) -> LoadResult:
    """Closed loop: `concurrency` senders, each with a keep-alive connection, send the next
    body as soon as their previous request was answered, until every body was sent once.
    `headers_per_body[i]` (optional) adds headers to body i only, e.g. an Idempotency-Key."""
    parts = urlsplit(url)
    target = _target(parts)
    headers = {"Content-Type": "application/json", **(headers or {})}
    result = LoadResult(concurrency=concurrency)
    lock = threading.Lock()
    next_index = iter(range(len(bodies)))
    start_gate = threading.Barrier(concurrency + 1)

    def sender() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        latencies, statuses, errors = [], Counter(), Counter()
        start_gate.wait()
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            started = time.perf_counter()
            try:
                extra = headers_per_body[index] if headers_per_body else None
                conn.request(method, target, body=bodies[index], headers={**headers, **extra} if extra else headers)
                response = conn.getresponse()
                response.read()
                statuses[response.status] += 1
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                errors[type(exc).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
                continue
            latencies.append((time.perf_counter() - started) * 1000)
        conn.close()
        with lock:
            result.latencies_ms.extend(latencies)
            result.statuses.update(statuses)
            result.errors.update(errors)

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - began
    return result


def open_loop_run(
    *,
    url: str,
    bodies: list[bytes],
    rate: float,
    workers: int = 64,
    headers: dict | None = None,
    headers_per_body: list[dict] | None = None,
) -> LoadResult:
    """Open loop: request i is due at i / rate seconds, whether or not earlier ones were
    answered, as notifications arrive when customers pay. Each latency counts from when its
    request was due, so time spent waiting for a free sender counts too (no coordinated
    omission). `workers` senders with keep-alive connections take due requests in order.
    `concurrency` in the result is the number of senders. `headers` and `headers_per_body`
    as in load_run."""
    parts = urlsplit(url)
    target = _target(parts)
    headers = {"Content-Type": "application/json", **(headers or {})}
    result = LoadResult(concurrency=workers)
    due: queue.Queue = queue.Queue()
    lock = threading.Lock()

    def sender() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        while (item := due.get()) is not None:
            index, due_at = item
            try:
                extra = headers_per_body[index] if headers_per_body else None
                conn.request("POST", target, body=bodies[index], headers={**headers, **extra} if extra else headers)
                response = conn.getresponse()
                response.read()
                with lock:
                    result.statuses[response.status] += 1
                    result.latencies_ms.append((time.perf_counter() - due_at) * 1000)
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    result.errors[type(exc).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        conn.close()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    for index in range(len(bodies)):
        due_at = began + index / rate
        delay = due_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        due.put((index, due_at))
    for _ in threads:
        due.put(None)
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - began
    return result


def framework_floor(server: Gunicorn, *, concurrency: int, requests: int = 1000) -> tuple[LoadResult, float]:
    """The cost of an empty request: GET /health/live (no database, no outside call) through
    the same gunicorn, Django and middleware. Returns the load result and the server's CPU
    milliseconds per request: what any endpoint of this stack pays before doing its work."""
    load_run(url=server.url + "/health/live", bodies=[b""] * 100, concurrency=4, method="GET")
    before = server.cpu_seconds()
    result = load_run(url=server.url + "/health/live", bodies=[b""] * requests, concurrency=concurrency, method="GET")
    return result, (server.cpu_seconds() - before) * 1000 / requests


def result_line(label: str, result: LoadResult) -> str:
    statuses = ",".join(f"{code}:{n}" for code, n in sorted(result.statuses.items()))
    errors = ",".join(f"{name}:{n}" for name, n in sorted(result.errors.items())) or "none"
    return (
        f"{label:<28} senders={result.concurrency:<3} requests={len(result.latencies_ms):<5} "
        f"throughput={result.throughput:7.1f}/s  p50={result.percentile(50):7.1f} ms  "
        f"p95={result.percentile(95):7.1f} ms  p99={result.percentile(99):7.1f} ms  "
        f"statuses={statuses} errors={errors}"
    )


# --- pgbench ---------------------------------------------------------------------------------------


def pgbench_path() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True):
        return str(candidate)
    raise RuntimeError("pgbench not found (apt-get install postgresql-client or postgresql-contrib)")


def pgbench_run(*, database: str, script: str, clients: int, transactions: int, protocol: str = "simple") -> float:
    """Run `script` (pgbench syntax) `transactions` times per client; returns transactions/s.

    `protocol` "prepared" sends each statement prepared once per connection with its values
    apart, as the product does with DB_PREPARED_STATEMENTS on; pgbench then substitutes
    every `:variable` as a parameter, so a script for it must not put variables in quotes."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
        path = handle.name
    try:
        completed = subprocess.run(
            [
                pgbench_path(),
                "-h",
                PG_HOST,
                "-p",
                PG_PORT,
                "-U",
                PG_USER,
                "-n",  # no vacuum of pgbench's own tables: we do not use them
                "-M",
                protocol,
                "-f",
                path,
                "-c",
                str(clients),
                "-j",
                str(min(clients, os.cpu_count() or 1)),
                "-t",
                str(transactions),
                database,
            ],
            capture_output=True,
            text=True,
        )
    finally:
        os.unlink(path)
    if completed.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{completed.stdout}\n{completed.stderr}")
    match = re.search(r"tps = ([0-9.]+)", completed.stdout)
    if not match:
        raise RuntimeError(f"no tps in pgbench output:\n{completed.stdout}")
    return float(match.group(1))


def json_bytes(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
