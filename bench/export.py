"""Benchmark: stream the admin's order CSV export over a large table.

    .venv/bin/python bench/export.py [--orders 200000]

What runs: PostgreSQL (a scratch database, `bench_export`, dropped and re-created and
migrated), `--orders` paid orders written with one INSERT ... SELECT generate_series, then
the CSV rows the admin streams (payments.exports.orders_csv_rows, the same query with its
payment-type subqueries and a server-side cursor), consumed and counted.

Prints rows per second, and the Python memory the export held at its peak (tracemalloc)
next to the size of the CSV it produced: the export streams when the first stays flat while
the second grows with --orders.
"""

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

PG = os.environ.get("BENCH_PG_URL", "postgres://root@127.0.0.1:5432")
DB_NAME = "bench_export"


def database_recreate() -> str:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    return f"{PG}/{DB_NAME}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200_000)
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = database_recreate()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buatfilm.settings")
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("MIDTRANS_SIMULATOR", "true")
    os.environ["DB_STATEMENT_TIMEOUT_MS"] = "600000"  # the bulk INSERT below, not the export
    import django

    django.setup()
    import csv

    from django.core.management import call_command
    from django.db import connection

    from payments.exports import _Echo, orders_csv_rows
    from payments.models import Order

    call_command("migrate", verbosity=0)
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO payments_order (id, package_id, customer_name, customer_email, customer_phone,
                list_price, discount_amount, amount, refunded_amount, currency, status, expires_at, paid_at,
                needs_review, review_reason, review_resolved_by, review_resolution_note, user_agent, referrer,
                created_at, updated_at)
            SELECT 'BF-BENCH-' || lpad(n::text, 9, '0'), 'ai-movie-course', 'Budi Santoso',
                'budi' || n || '@example.com', '+6281234567890', 99000, 0, 99000, 0, 'IDR', 'PAID',
                now(), now(), false, '', '', '', '', '', now(), now()
            FROM generate_series(1, %s) AS n
            """,
            [args.orders],
        )
    print(f"inserted {args.orders} orders in {time.monotonic() - started:.1f} s")

    writer = csv.writer(_Echo())
    tracemalloc.start()
    started = time.monotonic()
    rows = size = 0
    for row in orders_csv_rows(queryset=Order.objects.all()):
        size += len(writer.writerow(row))
        rows += 1
    elapsed = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"exported {rows - 1} rows ({size / 1e6:.1f} MB of CSV) in {elapsed:.1f} s: {(rows - 1) / elapsed:,.0f} rows/s"
    )
    print(f"peak Python memory during the export: {peak / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
