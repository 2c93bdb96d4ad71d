"""Benchmark: POST /api/checkout/ end to end, against the Midtrans simulator's Snap alone.

    .venv/bin/python bench/checkout.py [--clients 1 16] [--requests 200 800] [--rates 30 60]
                                       [--rate-seconds 10] [--snap-latency-ms 0]
                                       [--slow-gateway-ms 1000] [--keep-db]

What runs: PostgreSQL (a scratch database `buatfilm_bench_checkout`, dropped, re-created,
migrated), the shared bench Redis (the payment-instruction messages' Celery kicks go there
and are flushed afterwards), the product under gunicorn as the Procfile runs it (4 workers
of 8 threads, DEBUG off, INFO logs to a file as in production, MIDTRANS_SIMULATOR off) and
the Midtrans simulator under its own gunicorn, since Midtrans is a separate party.

Every checkout is a new customer (distinct email) with its own Idempotency-Key, so each one
does the full work: claim the key, validate (phone parsing, package and entitlement
lookups), commit the order and its attempt, call Snap over HTTP, store the token and make
the order payable with its audit rows and two outbox rows, store the response for replay.

Prints, per number of concurrent clients (closed loop: each sends its next request when the
previous one was answered): requests per second and p50/p95/p99 latency for
  1. the simulator's Snap endpoint alone (POST /snap/v1/transactions, the same payloads), and
  2. our checkout, which calls that same endpoint once per request;
then the difference, which is the latency our checkout adds. Target: added p95 < 30 ms at
16 clients. Afterwards every order is checked: PENDING_PAYMENT with an open attempt.
By default Snap answers at once; --snap-latency-ms makes it answer as late as a real
gateway across the internet would. Then the same in an open loop (--rates): checkouts
arrive at a steady rate whatever the answers, as customers do, each latency counted from
when it was due; the closed loop measures saturation, the open loop a launch-day load.

Then a flash sale (unless --burst 0): 200 customers checking out within 2 s while Snap
answers in 200 ms, one line with the word `burst`, its p95 and its errors.

Then (unless --slow-gateway-ms 0) what a slow Midtrans does to the rest of the product: the
course platform's entitlement check alone, then while 16 checkout clients wait on a Snap
that answers after 1 s. Checkouts beyond MIDTRANS_MAX_CONCURRENT_CALLS per worker answer
503 payment_gateway_unavailable at once; the check must stay fast.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

DB_NAME = "buatfilm_bench_checkout"
PACKAGE_ID = "ai-movie-course"


def checkout_bodies(count: int, tag: str) -> tuple[list[bytes], list[dict]]:
    bodies, headers = [], []
    for i in range(count):
        bodies.append(
            harness.json_bytes(
                {
                    "package_id": PACKAGE_ID,
                    "name": "Budi Santoso",
                    "email": f"bench-{tag}-{i}@example.com",
                    "phone": f"0812{i % 10_000_000:08d}",
                }
            )
        )
        headers.append({"Idempotency-Key": str(uuid.uuid4())})
    return bodies, headers


def snap_bodies(count: int, tag: str) -> list[bytes]:
    """What our checkout sends to Snap (see payments.services.checkout.snap_payload_build)."""
    return [
        harness.json_bytes(
            {
                "transaction_details": {"order_id": f"BF-SNAPONLY-{tag}{i:06d}-1", "gross_amount": 99000},
                "item_details": [
                    {
                        "id": PACKAGE_ID,
                        "price": 99000,
                        "quantity": 1,
                        "name": "Buat Film Pakai AI",
                        "category": "course",
                    }
                ],
                "customer_details": {
                    "first_name": "Budi Santoso",
                    "email": "budi@example.com",
                    "phone": "+6281234567890",
                },
                "expiry": {"start_time": "2026-11-22 10:00:00 +0700", "unit": "minute", "duration": 1440},
                "credit_card": {"secure": True},
                "callbacks": {"finish": f"http://127.0.0.1/orders/BF-SNAPONLY-{tag}{i:06d}/"},
                "custom_field1": f"BF-SNAPONLY-{tag}{i:06d}",
            }
        )
        for i in range(count)
    ]


def _children(pid: int) -> list[int]:
    found = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process (Linux /proc), in seconds; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_pids() -> list[int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [DB_NAME])
        return [row[0] for row in cursor.fetchall()]


class CpuMeter:
    """CPU used per request by each part while one load level runs. Approximate: a process
    that exits during the run (a PostgreSQL backend closed early) takes its share with it."""

    def __init__(self, parts: dict[str, list[int]]):
        self.parts = parts

    def _sample(self) -> dict[str, dict[int, float]]:
        self.parts["postgres"] = postgres_pids()
        samples = {name: {pid: cpu_seconds(pid) for pid in pids} for name, pids in self.parts.items()}
        return {name: {pid: cpu for pid, cpu in sample.items() if cpu is not None} for name, sample in samples.items()}

    def __enter__(self):
        self.before = self._sample()
        self.before_self = time.process_time()
        return self

    def __exit__(self, *exc):
        self.after = self._sample()
        self.after_self = time.process_time()

    def per_request(self, requests: int) -> dict[str, float]:
        """CPU milliseconds per request by part: web, simulator, postgres, load generator."""
        used = {
            name: sum(cpu - self.before.get(name, {}).get(pid, 0.0) for pid, cpu in sample.items())
            for name, sample in self.after.items()
        }
        used["load generator"] = self.after_self - self.before_self
        return {name: seconds * 1000 / requests for name, seconds in used.items()}

    def line(self, requests: int) -> str:
        return "cpu per request: " + "  ".join(f"{name}={ms:.1f} ms" for name, ms in self.per_request(requests).items())


def check_orders(bodies: list[bytes]) -> str:
    import json

    from payments.models import Order, PaymentAttempt

    emails = [json.loads(b)["email"] for b in bodies]
    payable = Order.objects.filter(customer_email__in=emails, status=Order.Status.PENDING_PAYMENT).count()
    opened = PaymentAttempt.objects.filter(order__customer_email__in=emails, status="open").exclude(snap_token="")
    ok = payable == opened.count() == len(emails) == Order.objects.filter(customer_email__in=emails).count()
    return f"check: {payable}/{len(emails)} orders PENDING_PAYMENT, {opened.count()} open attempts -> " + (
        "OK" if ok else "MISMATCH"
    )


def print_added(ours, snap, load: str) -> dict[int, float]:
    """Print and return what our checkout adds to Snap alone at p50/p95/p99, in ms."""
    added = {p: ours.percentile(p) - snap.percentile(p) for p in (50, 95, 99)}
    print(
        f"{'added by our checkout':<28} {load} "
        f"p50=+{added[50]:.1f} ms  p95=+{added[95]:.1f} ms  p99=+{added[99]:.1f} ms"
    )
    return added


def _latency_fault(sim_base: str, latency_ms: int) -> None:
    harness.request_once(
        sim_base + "/_faults",
        body=harness.json_bytes({"latency_ms": latency_ms}),
        headers={"Content-Type": "application/json"},
    )


def flash_sale_burst(*, web, sim_base: str, customers: int, within: float, snap_ms: int, restore_ms: int) -> None:
    """A flash sale: `customers` new customers check out within `within` seconds while Snap
    answers after `snap_ms`. Target: every one gets a payable order, no errors, p95 < 500 ms."""
    _latency_fault(sim_base, snap_ms)
    bodies, headers = checkout_bodies(customers, "burst")
    try:
        burst = harness.open_loop_run(
            url=web.url + "/api/checkout/", bodies=bodies, rate=customers / within, headers_per_body=headers
        )
    finally:
        _latency_fault(sim_base, restore_ms)
    print(harness.result_line(f"burst {customers} in {within:g} s, Snap {snap_ms} ms", burst))
    failed = sum(n for code, n in burst.statuses.items() if code != 201) + sum(burst.errors.values())
    verdict = "met" if failed == 0 and burst.percentile(95) < 500 else "NOT met"
    print(
        f"    target: every customer a payable order, 0 errors, p95 < 500 ms: {failed} not served, "
        f"p95 {burst.percentile(95):.1f} ms -> {verdict}"
    )
    print("   ", check_orders(bodies))
    print()


def slow_gateway_isolation(*, web, sim_base: str, slow_ms: int, restore_ms: int) -> None:
    """A slow Midtrans must not take the rest of the product down with it. The course
    platform's entitlement check (no Midtrans call) is measured alone, then while 16
    checkout clients wait on a Snap that answers after `slow_ms`."""
    check_url = web.url + "/api/entitlements/check/?email=someone%40example.com&course=ai-movie-course"
    check_headers = {"Authorization": "Bearer " + harness.ENTITLEMENTS_TOKEN}

    def checks(count: int):
        return harness.load_run(url=check_url, bodies=[b""] * count, concurrency=2, method="GET", headers=check_headers)

    checks(20)
    print(harness.result_line("entitlement check alone", checks(200)))
    _latency_fault(sim_base, slow_ms)
    bodies, headers = checkout_bodies(16 * 12, "slow")
    outcome: dict = {}

    def checkouts() -> None:
        outcome["load"] = harness.load_run(
            url=web.url + "/api/checkout/", bodies=bodies, concurrency=16, headers_per_body=headers
        )
        outcome["ended"] = time.perf_counter()

    loader = threading.Thread(target=checkouts)
    loader.start()
    time.sleep(min(2.0, slow_ms / 500))  # every checkout client is waiting on Snap by now
    during = checks(40)
    checks_ended = time.perf_counter()
    loader.join()
    _latency_fault(sim_base, restore_ms)
    print(harness.result_line(f"entitlement check, Snap {slow_ms} ms", during))
    print(harness.result_line(f"checkout, Snap {slow_ms} ms", outcome["load"]))
    overlap = "yes" if outcome["ended"] > checks_ended else "NO (the checks outlasted the checkouts)"
    print(f"    checkouts still waiting on Snap when the last check was answered: {overlap}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--requests", type=int, nargs="+", default=[200, 800], help="per client level")
    harness.web_arguments_add(parser)
    parser.add_argument("--sim-workers", type=int, default=1)
    parser.add_argument("--sim-threads", type=int, default=16)
    parser.add_argument(
        "--snap-latency-ms",
        type=int,
        default=0,
        help="make the simulator's Snap answer this much later (its latency fault), as a real gateway would",
    )
    parser.add_argument(
        "--slow-gateway-ms",
        type=int,
        default=1000,
        help="afterwards, make Snap answer this slowly and measure the course platform's entitlement "
        "check while 16 checkouts wait on it (0: skip)",
    )
    harness.rate_arguments_add(parser, what="checkouts (and Snap alone)", seconds=10.0)
    parser.add_argument("--burst", type=int, default=200, help="flash sale: customers checking out at once (0: skip)")
    parser.add_argument(
        "--burst-seconds", type=float, default=2.0, help="the flash sale's customers arrive within this"
    )
    parser.add_argument("--burst-snap-ms", type=int, default=200, help="Snap's latency during the flash sale")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    harness.web_arguments_check(parser, args)
    if len(args.requests) != len(args.clients):
        parser.error("--requests needs one count per --clients level")

    print(f"database: PostgreSQL scratch database {DB_NAME}; Redis {harness.REDIS_URL}")
    print(f"machine: {os.cpu_count()} CPUs, load average before start {os.getloadavg()[0]:.2f}")
    url = harness.database_create(name=DB_NAME)
    harness.django_setup(database_url=url)

    sim_port, web_port = harness.free_port(), harness.free_port()
    sim_base = f"http://127.0.0.1:{sim_port}/sandbox/midtrans"
    sim_env = harness.server_env(database_url=url, port=sim_port, LOG_LEVEL="WARNING")
    web_env = harness.server_env(
        database_url=url,
        port=web_port,
        MIDTRANS_SNAP_URL=sim_base,
        MIDTRANS_API_URL=sim_base,
        # Every request comes from 127.0.0.1 here; the per-IP limit would answer 429.
        CHECKOUT_RATE_LIMIT="",
        # As in production: the simulator is the other gunicorn; no simulator delivery thread here.
        MIDTRANS_SIMULATOR="false",
        COURSE_ACCESS_URL="https://kelas.example/{course}?token={token}",
    )
    snap_auth = {"Authorization": "Basic " + base64.b64encode(f"{harness.SERVER_KEY}:".encode()).decode()}

    rows = []
    with harness.web_and_simulator(
        args=args, web_env=web_env, web_port=web_port, sim_env=sim_env, sim_port=sim_port
    ) as (web, sim):
        print(
            f"web: gunicorn {args.web_workers} {args.web_worker_class} workers x {args.web_threads} threads "
            f"(log {web.log_path}); "
            f"simulator: gunicorn {args.sim_workers} x {args.sim_threads}; load generator in this process"
        )
        if args.snap_latency_ms:
            _latency_fault(sim_base, args.snap_latency_ms)
            print(f"simulator latency fault: every Snap call answers after {args.snap_latency_ms} ms")
        # Warm both up (imports, connections, caches) before measuring.
        harness.load_run(
            url=sim_base + "/snap/v1/transactions", bodies=snap_bodies(64, "W"), concurrency=4, headers=snap_auth
        )
        warm, warm_headers = checkout_bodies(64, "warm")
        harness.load_run(url=web.url + "/api/checkout/", bodies=warm, concurrency=4, headers_per_body=warm_headers)
        print()
        parts = {"web": _children(web.process.pid), "simulator": _children(sim.process.pid)}
        for level, (clients, count) in enumerate(zip(args.clients, args.requests, strict=True)):
            time.sleep(1)
            with CpuMeter(dict(parts)) as meter:
                snap = harness.load_run(
                    url=sim_base + "/snap/v1/transactions",
                    bodies=snap_bodies(count, f"L{level}"),
                    concurrency=clients,
                    headers=snap_auth,
                )
            print(harness.result_line("simulator Snap alone", snap))
            print("   ", meter.line(count))
            snap_cpu = meter.per_request(count)
            time.sleep(1)
            bodies, headers = checkout_bodies(count, f"l{level}")
            with CpuMeter(dict(parts)) as meter:
                ours = harness.load_run(
                    url=web.url + "/api/checkout/", bodies=bodies, concurrency=clients, headers_per_body=headers
                )
            print(harness.result_line("checkout (incl. Snap)", ours))
            print("   ", meter.line(count))
            checkout_cpu = meter.per_request(count)
            added = print_added(ours, snap, f"clients={clients:<3}")
            print("   ", check_orders(bodies))
            print()
            rows.append((clients, added, snap, snap_cpu, ours, checkout_cpu))
        # Open loop: customers arrive at a rate, whatever the answers (latency counted from
        # when each was due), as at a launch; the closed loop above measures saturation.
        for level, rate in enumerate(args.rates):
            count = int(rate * args.rate_seconds)
            time.sleep(1)
            snap = harness.open_loop_run(
                url=sim_base + "/snap/v1/transactions",
                bodies=snap_bodies(count, f"R{level}"),
                rate=rate,
                headers=snap_auth,
            )
            print(harness.result_line(f"Snap alone, open {rate:g}/s", snap))
            time.sleep(1)
            bodies, headers = checkout_bodies(count, f"r{level}")
            with CpuMeter(dict(parts)) as meter:
                ours = harness.open_loop_run(
                    url=web.url + "/api/checkout/", bodies=bodies, rate=rate, headers_per_body=headers
                )
            print(harness.result_line(f"checkout, open {rate:g}/s", ours))
            print("   ", meter.line(count))
            print_added(ours, snap, f"rate={rate:g}/s")
            print("   ", check_orders(bodies))
            print()
        if args.burst:
            flash_sale_burst(
                web=web,
                sim_base=sim_base,
                customers=args.burst,
                within=args.burst_seconds,
                snap_ms=args.burst_snap_ms,
                restore_ms=args.snap_latency_ms,
            )
        if args.slow_gateway_ms:
            slow_gateway_isolation(
                web=web, sim_base=sim_base, slow_ms=args.slow_gateway_ms, restore_ms=args.snap_latency_ms
            )
        # What this stack costs before any work: the same gunicorn, Django and middleware.
        floor, floor_cpu = harness.framework_floor(web, concurrency=max(args.clients))
        print(harness.result_line("floor: empty GET /health/live", floor))
        print(
            f"    CPU per empty request: web {floor_cpu:.1f} ms; a checkout is two Django requests "
            "(ours and the simulator's Snap) before any of its work"
        )
        print()

    for clients, added, snap, snap_cpu, ours, checkout_cpu in rows:
        if clients != 16:
            continue
        verdict = "met" if added[95] < 30 else "NOT met"
        print(f"target: added p95 < 30 ms at 16 clients: measured +{added[95]:.1f} ms -> {verdict}")
        if args.snap_latency_ms:
            continue  # latency-bound, not CPU-bound: the arithmetic below does not apply
        # A closed loop obeys Little's law: mean latency = clients / throughput, and p95 >= mean.
        # When the cores are the bottleneck, throughput <= cores / (CPU per checkout, every
        # process on the machine together), so the target caps that CPU.
        cores = os.cpu_count() or 1
        allowed = cores * (snap.percentile(95) + 30) / clients
        total = sum(checkout_cpu.values())
        print(
            f"closed loop: mean latency = {clients} / {ours.throughput:.1f}/s = "
            f"{clients * 1000 / ours.throughput:.0f} ms; p95 < {snap.percentile(95):.1f} + 30 ms needs at most "
            f"{allowed:.1f} ms of CPU per checkout on {cores} "
            f"cores, every process together (measured {total:.1f} ms)"
        )
        # What a checkout costs before any work of ours: the Snap call itself (the simulator,
        # its database writes, the load generator's share, all measured in the Snap-alone run)
        # and one empty request through our gunicorn and Django.
        given = sum(snap_cpu.values()) + floor_cpu
        ours_cpu = total - given
        print(
            f"that leaves {allowed - given:.1f} ms for our own checkout work after the Snap call's "
            f"{sum(snap_cpu.values()):.1f} ms and an empty request's {floor_cpu:.1f} ms; it measures {ours_cpu:.1f} ms"
        )

    import redis

    redis.Redis.from_url(harness.REDIS_URL).flushdb()
    if not args.keep_db:
        from django.db import connections

        connections.close_all()
        harness.database_drop(name=DB_NAME)


if __name__ == "__main__":
    main()
