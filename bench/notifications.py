"""Benchmark: drain a backlog of pending notifications with 1 and with 2 Celery worker processes.

    .venv/bin/python bench/notifications.py [--messages 10000] [--workers 1 2] [--kicks-per-message 1]
                                            [--kick-batch 1]

What runs: PostgreSQL (a scratch database, `bench_notifications`, dropped and re-created),
a private redis-server on a free port (the shared one is left alone), real
`celery -A buatfilm worker` processes (prefork, concurrency 1 each), and stub providers
over real sockets: an SMTP server (aiosmtpd) for the email half and a Meta-style
WhatsApp HTTP server for the other half. Every message has its own recipient, so the
stubs count duplicate sends independently of the database.

Prints, per worker count: messages per second from the first kick until the last row
is `sent`, and duplicate sends as seen by the stubs and by the attempt log (must be 0).
With --kicks-per-message 2 every message is published twice, so the workers race to
claim each one (the claim must make the second delivery a no-op). With --kick-batch 2
the ids are published two per message (notifications.deliver_many), as the kick after a
committed notice does (its email and WhatsApp together); 1 publishes one id per message
(notifications.deliver), as the sweep and retries do.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

PG = os.environ.get("BENCH_PG_URL", "postgres://root@127.0.0.1:5432")
DB_NAME = "bench_notifications"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_recreate() -> str:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    return f"{PG}/{DB_NAME}"


def redis_start() -> tuple[subprocess.Popen, str]:
    import redis

    port = _free_port()
    process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        + ["--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    for _ in range(100):
        try:
            if client.ping():
                return process, url
        except redis.RedisError:
            time.sleep(0.1)
    raise SystemExit("redis-server did not start")


def worker_start(env: dict, log_path: Path, name: str) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the worker
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "buatfilm", "worker", "--queues=notifications"]
        + ["--concurrency=1", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        + [f"--hostname={name}@%h", "--loglevel=INFO"],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if " ready." in log_path.read_text(errors="replace"):
            return process
        if process.poll() is not None:
            raise SystemExit(f"worker exited:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    raise SystemExit("worker did not start")


def worker_stop(process: subprocess.Popen) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kicks-per-message", type=int, default=1)
    parser.add_argument("--kick-batch", type=int, default=1, help="ids per published message")
    args = parser.parse_args()

    database_url = database_recreate()
    redis_process, redis_url = redis_start()
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "buatfilm.testing",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "ENV_FILE": "/nonexistent",
            "LOG_LEVEL": "INFO",
        }
    )
    os.environ.update(env)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True)

    import django

    django.setup()
    import logging

    # The stubs run in this process; their per-line debug logging would make them the bottleneck.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    import redis
    from django.db import connection
    from django.db.models import Count

    from notifications.models import Notification, NotificationAttempt
    from notifications.services import notification_kick, notification_kick_many, notification_max_attempts
    from notifications.tests.stubs import SmtpStub, WhatsAppStub

    log_dir = Path(tempfile.mkdtemp(prefix="bench-notifications-"))
    results = []
    try:
        for workers in args.workers:
            with SmtpStub() as smtp, WhatsAppStub("meta") as whatsapp:
                worker_env = env | {
                    "EMAIL_URL": smtp.url,
                    "WHATSAPP_BACKEND": "meta",
                    "WHATSAPP_META_API_URL": whatsapp.url,
                    "WHATSAPP_META_TOKEN": "bench",
                    "WHATSAPP_META_PHONE_NUMBER_ID": "1",
                }
                # given: a backlog of pending messages, half email, half WhatsApp
                with connection.cursor() as cursor:
                    cursor.execute(
                        "TRUNCATE notifications_notificationattempt, notifications_notification RESTART IDENTITY"
                    )
                redis.Redis.from_url(redis_url).flushdb()
                rows = []
                for i in range(args.messages):
                    email = i % 2 == 0
                    rows.append(
                        Notification(
                            channel="email" if email else "whatsapp",
                            template="payment_received",
                            recipient=f"bench{i}@example.com" if email else f"+628{i:011d}",
                            subject="Pembayaran diterima" if email else "",
                            body_text=f"Pesan bench nomor {i}.",
                            body_html=f"<p>Pesan bench nomor {i}.</p>" if email else "",
                            template_params=[] if email else ["Budi", str(i)],
                            dedupe_key=f"bench:{i}",
                            reference=f"BENCH-{i}",
                            max_attempts=notification_max_attempts(),
                        )
                    )
                Notification.objects.bulk_create(rows, batch_size=2000)
                ids = list(Notification.objects.values_list("pk", flat=True))
                processes = [
                    worker_start(worker_env, log_dir / f"w{workers}-{n}.log", f"bench{workers}-{n}")
                    for n in range(workers)
                ]
                # when: every message is kicked (as the on-commit hook would) and the workers drain them
                started = time.monotonic()
                for _ in range(args.kicks_per_message):
                    for start in range(0, len(ids), args.kick_batch):
                        batch = ids[start : start + args.kick_batch]
                        if args.kick_batch == 1:
                            published = notification_kick(notification_id=batch[0], force=True)
                        else:
                            published = notification_kick_many(notification_ids=batch)
                        if not published:
                            raise SystemExit("publishing to the broker failed")
                publish_seconds = time.monotonic() - started
                while Notification.objects.filter(status="sent").count() < args.messages:
                    if any(p.poll() is not None for p in processes):
                        raise SystemExit("a worker died; see " + str(log_dir))
                    time.sleep(0.2)
                elapsed = time.monotonic() - started
                for process in processes:
                    worker_stop(process)

                # then: count duplicates where they would show: at the providers, and in the attempt log
                stub_duplicates = sum(n - 1 for n in whatsapp.successes.values() if n > 1)
                email_counts: dict[str, int] = {}
                for message in smtp.messages:
                    for to in message["to"]:
                        email_counts[to] = email_counts.get(to, 0) + 1
                stub_duplicates += sum(n - 1 for n in email_counts.values() if n > 1)
                stub_total = sum(whatsapp.successes.values()) + sum(email_counts.values())
                db_duplicates = (
                    NotificationAttempt.objects.filter(outcome="sent")
                    .values("notification")
                    .annotate(n=Count("id"))
                    .filter(n__gt=1)
                    .count()
                )
                not_once = Notification.objects.exclude(attempts=1).count()
                results.append(
                    {
                        "workers": workers,
                        "messages": args.messages,
                        "seconds": elapsed,
                        "publish_seconds": publish_seconds,
                        "rate": args.messages / elapsed,
                        "stub_sends": stub_total,
                        "stub_duplicates": stub_duplicates,
                        "db_duplicates": db_duplicates,
                        "not_exactly_one_try": not_once,
                    }
                )
    finally:
        redis_process.kill()
        redis_process.wait()
        connection.close()
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"worker logs kept in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)

    print()
    print(
        f"notification drain: {args.messages} pending messages (50 % email via SMTP stub, 50 % WhatsApp via "
        f"Meta-style HTTP stub), {args.kicks_per_message} kick(s) per message, {args.kick_batch} id(s) per "
        "published kick, prefork workers with concurrency 1"
    )
    print(
        f"{'workers':>7} {'seconds':>8} {'msg/s':>8} {'publish s':>9} {'sent at stubs':>13} {'dup (stubs)':>11} "
        f"{'dup (db)':>8} {'tries != 1':>10}"
    )
    for r in results:
        print(
            f"{r['workers']:>7} {r['seconds']:>8.1f} {r['rate']:>8.0f} {r['publish_seconds']:>9.1f} "
            f"{r['stub_sends']:>13} {r['stub_duplicates']:>11} {r['db_duplicates']:>8} {r['not_exactly_one_try']:>10}"
        )
    if any(r["stub_duplicates"] or r["db_duplicates"] or r["stub_sends"] != r["messages"] for r in results):
        raise SystemExit("FAILED: duplicate or missing sends")


if __name__ == "__main__":
    main()
