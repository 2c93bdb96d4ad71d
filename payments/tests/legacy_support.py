"""Legacy fixtures for the import tests: the old app's SQLite file in either spelling, and
the interim table and the plan schema in a scratch PostgreSQL database (see
/work/shared/reference/legacy-schemas.md), with the dirty rows real files carry."""

import json
import sqlite3
import uuid
from contextlib import contextmanager
from pathlib import Path

import psycopg
from django.db import connection

SNAKE = "snake"
CAMEL = "camel"

_SQLITE_COLUMNS = {
    SNAKE: ["id", "customer_name", "email", "phone", "amount", "payment_method", "status", "payment_url", "token"],
    CAMEL: ["id", "customerName", "email", "phone", "amount", "paymentMethod", "status", "paymentUrl", "token"],
}


def legacy_row(legacy_id: str, **fields) -> dict:
    """One old order (the meanings of the reference's table), with plausible defaults."""
    row = {
        "id": legacy_id,
        "customer_name": "Siti Rahayu",
        "email": f"{legacy_id.lower()}@example.com",
        "phone": "081234567890",
        "amount": 99000,
        "payment_method": "bank_transfer",
        "status": "paid",
        "payment_url": f"https://app.sandbox.midtrans.com/snap/v2/vtweb/{legacy_id}",
        "token": f"tok-{legacy_id}",
        "created_at": "2026-11-20 08:00:00",
    }
    row.update(fields)
    return row


def sqlite_orders_db(path: Path, rows: list[dict], *, spelling: str = SNAKE, extra_column: bool = True) -> Path:
    """An orders.db as the old app wrote it: loose types (amount as integer, real or text),
    `created_at` as CURRENT_TIMESTAMP text, a column the importer does not know."""
    names = list(_SQLITE_COLUMNS[spelling])
    created = "created_at" if spelling == SNAKE else "createdAt"
    columns = names + [created] + (["notes"] if extra_column else [])
    db = sqlite3.connect(path)
    db.execute(f"CREATE TABLE orders ({', '.join(columns)})")  # no types: SQLite keeps what it is given
    for row in rows:
        values = [row.get(snake) for snake in _SQLITE_COLUMNS[SNAKE]] + [row.get("created_at")]
        values += ["legacy note"] if extra_column else []
        db.execute(f"INSERT INTO orders VALUES ({', '.join('?' * len(columns))})", values)  # noqa: S608
    db.commit()
    db.close()
    return path


def _server_url(dbname: str) -> str:
    settings = connection.settings_dict
    user = settings["USER"] or "root"
    host = settings["HOST"] or "127.0.0.1"
    port = settings["PORT"] or 5432
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    return f"postgresql://{user}{password}@{host}:{port}/{dbname}"


@contextmanager
def scratch_postgres():
    """A fresh PostgreSQL database of its own (unique name) on the test server; dropped after."""
    name = f"legacy_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _server_url(name)
    try:
        yield url
    finally:
        with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def payment_orders_create(url: str, rows: list[dict], *, outbox_sent: tuple[str, ...] | None = None) -> None:
    """The interim table (with the foreign multi-tenant `orders` beside it, which must stay
    untouched), optionally the old worker's outbox with a sent "paid" email for `outbox_sent`."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, tenant_id int NOT NULL, total numeric NOT NULL, "
            "status text NOT NULL)"
        )
        db.execute("INSERT INTO orders (tenant_id, total, status) VALUES (7, 12.5, 'open'), (8, 40, 'shipped')")
        db.execute(
            "CREATE TABLE payment_orders (id TEXT PRIMARY KEY, customer_name TEXT NOT NULL, email TEXT NOT NULL, "
            "phone TEXT NOT NULL, amount NUMERIC(15,2) NOT NULL, payment_method TEXT NOT NULL, "
            "status TEXT DEFAULT 'pending', payment_url TEXT, token TEXT, created_at TIMESTAMP, "
            "updated_at TIMESTAMP, tenant_hint TEXT)"
        )
        for row in rows:
            db.execute(
                "INSERT INTO payment_orders (id, customer_name, email, phone, amount, payment_method, status, "
                "payment_url, token, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    row["id"],
                    row["customer_name"],
                    row["email"],
                    row["phone"],
                    row["amount"],
                    row["payment_method"],
                    row["status"],
                    row["payment_url"],
                    row["token"],
                    row["created_at"],
                    row.get("updated_at", row["created_at"]),
                ],
            )
        if outbox_sent is not None:
            _outbox_create(db)
            for order_id in outbox_sent:
                db.execute(
                    "INSERT INTO notification_outbox (order_id, channel, template_name, recipient, status) "
                    "VALUES (%s, 'EMAIL', 'payment_success', 'x@example.com', 'SENT')",
                    [order_id],
                )


def _outbox_create(db) -> None:
    db.execute(
        "CREATE TABLE notification_outbox (id bigserial PRIMARY KEY, order_id TEXT, channel TEXT, "
        "template_name TEXT, recipient TEXT, subject TEXT, body_template TEXT, body_data JSONB, "
        "status TEXT, attempt_count INT DEFAULT 0, max_attempts INT DEFAULT 5, next_retry_at TIMESTAMPTZ, "
        "last_error TEXT, error_history JSONB, created_at TIMESTAMPTZ DEFAULT now(), sent_at TIMESTAMPTZ, "
        "UNIQUE (order_id, channel, template_name))"
    )


def plan_schema_create(url: str, orders: list[dict]) -> None:
    """The upgrade plan's tables. Each order dict: the plan's order columns plus optional
    `attempts`, `events`, `entitlements`, `audit` and `sent` (template names sent)."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE orders (order_id TEXT PRIMARY KEY, customer_name TEXT, customer_email TEXT, "
            "customer_phone TEXT, package_id TEXT, package_name TEXT, final_amount INTEGER CHECK (final_amount > 0), "
            "discount_code TEXT, discount_amount INTEGER DEFAULT 0, status TEXT CHECK (status IN "
            "('CREATED','PENDING_PAYMENT','PAID','FAILED','EXPIRED')), ip_address TEXT, user_agent TEXT, "
            "referrer TEXT, created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ, expires_at TIMESTAMPTZ, "
            "paid_at TIMESTAMPTZ)"
        )
        db.execute(
            "CREATE TABLE payment_attempts (attempt_id TEXT PRIMARY KEY, order_id TEXT REFERENCES orders, "
            "provider TEXT DEFAULT 'MIDTRANS', snap_token TEXT, redirect_url TEXT, midtrans_transaction_id TEXT, "
            "midtrans_payment_type TEXT, midtrans_va_number TEXT, status TEXT, created_at TIMESTAMPTZ, "
            "completed_at TIMESTAMPTZ, error_message TEXT, raw_response JSONB)"
        )
        db.execute(
            "CREATE TABLE payment_events (event_id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, "
            "order_id TEXT REFERENCES orders, raw_payload JSONB, signature_valid BOOLEAN, signature_input TEXT, "
            "processed BOOLEAN, processed_at TIMESTAMPTZ, processing_error TEXT, received_at TIMESTAMPTZ)"
        )
        db.execute(
            "CREATE TABLE entitlements (entitlement_id TEXT PRIMARY KEY, order_id TEXT REFERENCES orders, "
            "user_email TEXT, course_id TEXT DEFAULT 'ai-movie-course', course_name TEXT, status TEXT, "
            "access_url TEXT, granted_at TIMESTAMPTZ, expires_at TIMESTAMPTZ, last_accessed_at TIMESTAMPTZ)"
        )
        _outbox_create(db)
        db.execute(
            "CREATE TABLE system_audit_log (id bigserial PRIMARY KEY, actor TEXT, action TEXT, entity_type TEXT, "
            "entity_id TEXT, old_value JSONB, new_value JSONB, correlation_id TEXT, ip_address INET, "
            "user_agent TEXT, created_at TIMESTAMPTZ)"
        )
        for order in orders:
            db.execute(
                "INSERT INTO orders (order_id, customer_name, customer_email, customer_phone, package_id, "
                "package_name, final_amount, discount_code, discount_amount, status, ip_address, user_agent, "
                "created_at, updated_at, expires_at, paid_at) VALUES (%s, %s, %s, %s, %s, 'Buat Film Pakai AI', "
                "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    order["order_id"],
                    order.get("customer_name", "Agus Salim"),
                    order["customer_email"],
                    order.get("customer_phone", "+6281311112222"),
                    order.get("package_id", "ai-movie-course"),
                    order.get("final_amount", 99000),
                    order.get("discount_code"),
                    order.get("discount_amount", 0),
                    order["status"],
                    order.get("ip_address", "203.0.113.9"),
                    "Mozilla/5.0",
                    order.get("created_at", "2026-11-21T10:00:00+07:00"),
                    order.get("updated_at", "2026-11-21T10:05:00+07:00"),
                    order.get("expires_at", "2026-11-22T10:00:00+07:00"),
                    order.get("paid_at"),
                ],
            )
            for attempt in order.get("attempts", []):
                db.execute(
                    "INSERT INTO payment_attempts (attempt_id, order_id, snap_token, redirect_url, "
                    "midtrans_transaction_id, midtrans_payment_type, midtrans_va_number, status, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        attempt["attempt_id"],
                        order["order_id"],
                        attempt.get("snap_token", "snap-tok"),
                        attempt.get("redirect_url", "https://app.sandbox.midtrans.com/snap/v2/vtweb/x"),
                        attempt.get("transaction_id", "trx-1"),
                        attempt.get("payment_type", "bank_transfer"),
                        attempt.get("va_number", "12345678901"),
                        attempt.get("status", "COMPLETED"),
                        order.get("created_at", "2026-11-21T10:00:00+07:00"),
                    ],
                )
            for event in order.get("events", []):
                db.execute(
                    "INSERT INTO payment_events (event_id, idempotency_key, order_id, raw_payload, signature_valid, "
                    "processed, processed_at, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        event["event_id"],
                        event["event_id"],
                        order["order_id"],
                        json.dumps(event["payload"]),
                        event.get("signature_valid", True),
                        event.get("processed", True),
                        event.get("received_at", "2026-11-21T10:04:00+07:00"),
                        event.get("received_at", "2026-11-21T10:04:00+07:00"),
                    ],
                )
            for entitlement in order.get("entitlements", []):
                db.execute(
                    "INSERT INTO entitlements (entitlement_id, order_id, user_email, status, granted_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [
                        entitlement["entitlement_id"],
                        order["order_id"],
                        order["customer_email"],
                        entitlement.get("status", "ACTIVE"),
                        "2026-11-21T10:05:00+07:00",
                    ],
                )
            for template in order.get("sent", []):
                db.execute(
                    "INSERT INTO notification_outbox (order_id, channel, template_name, recipient, status) "
                    "VALUES (%s, 'EMAIL', %s, %s, 'SENT')",
                    [order["order_id"], template, order["customer_email"]],
                )
            for entry in order.get("audit", []):
                db.execute(
                    "INSERT INTO system_audit_log (actor, action, entity_type, entity_id, new_value, created_at) "
                    "VALUES (%s, %s, 'order', %s, %s, %s)",
                    [
                        entry.get("actor", "system"),
                        entry["action"],
                        order["order_id"],
                        json.dumps(entry.get("new_value", {})),
                        "2026-11-21T10:05:00+07:00",
                    ],
                )


def foreign_orders(url: str) -> list[tuple]:
    with psycopg.connect(url) as db:
        return db.execute("SELECT id, tenant_id, total, status FROM orders ORDER BY id").fetchall()


@contextmanager
def reader_role(url: str, *, tables: tuple[str, ...]):
    """A login role that may read only `tables` of the scratch database: the URL to connect as it.
    Reading any other table (the foreign `orders`) fails with a permission error."""
    role = f"legacy_reader_{uuid.uuid4().hex[:10]}"
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f'CREATE ROLE "{role}" LOGIN')
        db.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO "{role}"')
        db.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        for table in tables:
            db.execute(f'GRANT SELECT ON "{table}" TO "{role}"')
    host_part = url.split("@", 1)[1]
    try:
        yield f"postgresql://{role}@{host_part}"
    finally:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f'DROP OWNED BY "{role}"')
            db.execute(f'REVOKE CONNECT ON DATABASE "{dbname}" FROM "{role}"')
            db.execute(f'DROP ROLE "{role}"')
