"""manage.py import_legacy against legacy fixtures the tests build: a SQLite orders.db in each
spelling, the interim payment_orders table and the plan schema in scratch PostgreSQL databases."""

import sqlite3
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from django.core.management import CommandError, call_command

from entitlements.models import Entitlement
from notifications.models import Notification
from payments.models import AuditEntry, Order, PaymentAttempt, PaymentEvent
from payments.services.legacy_import import (
    FREE_TEXT_STATUSES,
    PLAN_STATUSES,
    SOURCE_PAYMENT_ORDERS,
    PostgresReader,
    RowRefused,
    SqliteReader,
    amount_parse,
)
from payments.tests.legacy_support import (
    CAMEL,
    SNAKE,
    foreign_orders,
    legacy_row,
    payment_orders_create,
    plan_schema_create,
    reader_role,
    scratch_postgres,
    sqlite_orders_db,
)

pytestmark = pytest.mark.django_db

OS = Order.Status


def written() -> tuple:
    """Everything an import could write."""
    return (
        Order.objects.count(),
        PaymentAttempt.objects.count(),
        PaymentEvent.objects.count(),
        Entitlement.objects.count(),
        AuditEntry.objects.count(),
        Notification.objects.count(),
    )


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("import_legacy", *args, stdout=out)
    return out.getvalue()


def run_refused(*args) -> tuple[str, str]:
    """Run an import expected to fail: (its report, the error)."""
    from io import StringIO

    out = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("import_legacy", *args, stdout=out)
    return out.getvalue(), str(excinfo.value)


@pytest.fixture
def pg():
    with scratch_postgres() as url:
        yield url


# --- Mapping one value ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("99000.00", 99000), ("99000", 99000), (" 99000.0 ", 99000), (99000, 99000), (99000.0, 99000)],
)
def test_amounts_parse_exactly(value, expected):
    assert amount_parse(value=value) == expected


def test_numeric_amount_from_postgres_parses_exactly():
    assert amount_parse(value=Decimal("150000.00")) == 150000


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("99000.50", "fraction"),
        (99000.5, "fraction"),
        (Decimal("0.01"), "fraction"),
        ("0", "greater than zero"),
        (0, "greater than zero"),
        ("-99000", "greater than zero"),
        ("99.000", "not a number"),
        ("Rp 99.000", "not a number"),
        (None, "missing"),
        ("", "not a number"),
    ],
)
def test_bad_amounts_are_refused_with_the_reason(value, reason):
    with pytest.raises(RowRefused, match=reason):
        amount_parse(value=value)


@pytest.mark.parametrize(
    ("spelling", "status"),
    [
        ("pending", OS.PENDING_PAYMENT),
        ("PENDING", OS.PENDING_PAYMENT),
        ("", OS.PENDING_PAYMENT),
        (None, OS.PENDING_PAYMENT),
        ("paid", OS.PAID),
        ("PAID", OS.PAID),
        (" Paid ", OS.PAID),
        ("settlement", OS.PAID),
        ("SETTLEMENT", OS.PAID),
        ("success", OS.PAID),
        ("Success", OS.PAID),
        ("failed", OS.FAILED),
        ("FAILED", OS.FAILED),
        ("expired", OS.EXPIRED),
        ("EXPIRED", OS.EXPIRED),
        ("cancel", OS.CANCELLED),
        ("CANCEL", OS.CANCELLED),
    ],
)
def test_every_sqlite_status_spelling_maps_to_its_status(tmp_path, spelling, status):
    path = sqlite_orders_db(tmp_path / "orders.db", [legacy_row("ORD-1", status=spelling)])

    run("--sqlite", str(path))

    order = Order.objects.get(legacy_id="ORD-1")
    assert order.status == status
    assert order.legacy_source == "sqlite"


def test_status_tables_cover_the_reference_spellings():
    for spelling in ("pending", "paid", "settlement", "success", "failed", "expired", "cancel", ""):
        assert spelling in FREE_TEXT_STATUSES
    assert set(PLAN_STATUSES) == {"CREATED", "PENDING_PAYMENT", "PAID", "FAILED", "EXPIRED"}


# --- SQLite, both spellings ----------------------------------------------------------------


@pytest.mark.parametrize("spelling", [SNAKE, CAMEL])
def test_sqlite_import_in_either_spelling_creates_orders_attempts_and_access(tmp_path, spelling):
    rows = [
        legacy_row(
            "ORD-PAID", email="  Siti.Rahayu@Example.COM ", amount="99000.00", phone="0812-3456-7890", status="PAID"
        ),
        legacy_row(
            "ORD-PEND", phone="6281298765432", amount=99000.0, status="pending", created_at="2026-11-21 09:30:00"
        ),
        legacy_row("ORD-FAIL", phone="+62 813 1111 2222", amount=99000, status="failed"),
        legacy_row("ORD-BADPHONE", phone="12345", status="expired"),
    ]
    path = sqlite_orders_db(tmp_path / "orders.db", rows, spelling=spelling)

    out = run("--sqlite", str(path))

    paid = Order.objects.get(legacy_id="ORD-PAID")
    assert (paid.status, paid.amount, paid.list_price, paid.discount_amount) == (OS.PAID, 99000, 99000, 0)
    assert paid.customer_email == "siti.rahayu@example.com"
    assert paid.customer_phone == "+6281234567890"
    assert paid.paid_at is not None
    assert paid.legacy_paid_notice == Order.LegacyPaidNotice.UNKNOWN
    attempt = paid.attempts.get()
    assert (attempt.midtrans_order_id, attempt.number, attempt.amount, attempt.status) == ("ORD-PAID", 1, 99000, "paid")
    pending = Order.objects.get(legacy_id="ORD-PEND")
    assert pending.customer_phone == "+6281298765432"
    assert pending.created_at == datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    assert pending.attempts.get().status == PaymentAttempt.Status.PENDING
    assert Order.objects.get(legacy_id="ORD-FAIL").customer_phone == "+6281311112222"
    bad_phone = Order.objects.get(legacy_id="ORD-BADPHONE")
    assert (bad_phone.customer_phone, bad_phone.legacy_flags) == ("12345", ["phone_unusable"])
    # One entitlement, for the paid order only; no customer message.
    assert list(Entitlement.objects.values_list("order_id", "email", "status")) == [
        (paid.id, "siti.rahayu@example.com", "active")
    ]
    assert not Notification.objects.exists()
    assert AuditEntry.objects.filter(action="order_imported").count() == 4
    assert "imported PAID: 1" in out and "imported PENDING_PAYMENT: 1" in out and "imported total: 4" in out
    assert "flagged phone_unusable: 1" in out


def test_second_run_changes_nothing_and_says_so(tmp_path):
    path = sqlite_orders_db(tmp_path / "orders.db", [legacy_row("ORD-1"), legacy_row("ORD-2", status="pending")])
    run("--sqlite", str(path))
    before = written()

    out = run("--sqlite", str(path))

    assert written() == before
    assert "unchanged (imported before): 2" in out
    assert "nothing to import" in out
    assert Entitlement.objects.count() == 1


def test_rerun_after_fixing_refused_rows_imports_just_those(tmp_path):
    path = sqlite_orders_db(
        tmp_path / "orders.db",
        [legacy_row("ORD-1"), legacy_row("ORD-2", amount="99000.50"), legacy_row("ORD-3", status="weird")],
    )
    out = run("--sqlite", str(path), "--allow-partial")
    assert "refused rowid 2 (id 'ORD-2'): amount '99000.50' has a fraction of a rupiah" in out
    assert "refused rowid 3 (id 'ORD-3'): unknown status 'weird'" in out
    assert list(Order.objects.values_list("legacy_id", flat=True)) == ["ORD-1"]

    with sqlite3.connect(path) as db:
        db.execute("UPDATE orders SET amount = '99000.00' WHERE id = 'ORD-2'")
        db.execute("UPDATE orders SET status = 'settlement' WHERE id = 'ORD-3'")
    out = run("--sqlite", str(path))

    assert "imported total: 2" in out and "unchanged (imported before): 1" in out and "refused: 0" in out
    assert sorted(Order.objects.values_list("legacy_id", flat=True)) == ["ORD-1", "ORD-2", "ORD-3"]
    assert Entitlement.objects.count() == 3


def test_dry_run_reports_and_writes_nothing(tmp_path):
    path = sqlite_orders_db(tmp_path / "orders.db", [legacy_row("ORD-1"), legacy_row("ORD-2", status="expired")])

    out = run("--sqlite", str(path), "--dry-run")

    assert written() == (0, 0, 0, 0, 0, 0)
    assert "would import PAID: 1" in out and "would import EXPIRED: 1" in out
    assert "dry run: nothing was written" in out


def test_imports_stream_in_batches(tmp_path):
    rows = [legacy_row(f"ORD-{n}", status="paid") for n in range(25)]
    path = sqlite_orders_db(tmp_path / "orders.db", rows)

    run("--sqlite", str(path), "--batch-size", "7")

    assert Order.objects.filter(legacy_id__startswith="ORD-").count() == 25
    assert Entitlement.objects.count() == 25


def test_two_open_legacy_orders_of_one_customer_import_the_first_and_refuse_the_second(tmp_path):
    path = sqlite_orders_db(
        tmp_path / "orders.db",
        [
            legacy_row("ORD-A", email="dua@example.com", status="pending"),
            legacy_row("ORD-B", email="dua@example.com", status="pending"),
            legacy_row("ORD-C", email="dua@example.com", status="paid"),
        ],
    )

    out = run("--sqlite", str(path), "--allow-partial", "--batch-size", "1")

    assert sorted(Order.objects.values_list("legacy_id", "status")) == [
        ("ORD-A", OS.PENDING_PAYMENT),
        ("ORD-C", OS.PAID),
    ]
    assert "refused rowid 2 (id 'ORD-B'): the customer already has an open order for ai-movie-course (ORD-A)" in out

    # when the sweep has closed the first (Midtrans said it expired), a re-run brings the second
    Order.objects.filter(legacy_id="ORD-A").update(status=OS.EXPIRED)
    out = run("--sqlite", str(path))
    assert "imported PENDING_PAYMENT: 1" in out and "refused: 0" in out
    assert Order.objects.get(legacy_id="ORD-B").status == OS.PENDING_PAYMENT


# --- Bad input: a clear error, nothing written ---------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"amount": "99000.50"}, "amount '99000.50' has a fraction of a rupiah"),
        ({"amount": 0}, "amount 0 must be greater than zero"),
        ({"amount": "-5000"}, "amount '-5000' must be greater than zero"),
        ({"status": "refund_pending"}, "unknown status 'refund_pending'"),
        ({"id": "ORD-" + "X" * 47}, "is longer than the 50 characters Midtrans allows"),
        ({"id": "ORD 1/2"}, "has characters Midtrans does not allow"),
        ({"email": "budi at example.com"}, "email 'budi at example.com' is not an email address"),
        ({"email": ""}, "is not an email address"),
        ({"email": "a" * 250 + "@example.com"}, "is longer than 254 characters"),
        ({"created_at": "kemarin"}, "created_at 'kemarin' is not a date and time"),
    ],
)
def test_a_bad_row_is_refused_with_its_reason_and_nothing_is_written(tmp_path, fields, reason):
    bad = legacy_row("ORD-BAD") | fields
    path = sqlite_orders_db(tmp_path / "orders.db", [legacy_row("ORD-GOOD"), bad])

    out, error = run_refused("--sqlite", str(path))

    assert written() == (0, 0, 0, 0, 0, 0)
    assert "refused rowid 2" in out and reason in out
    assert "1 row(s) refused" in error and "--allow-partial" in error
    assert "nothing was written" in out


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match=r"SQLite file .*nope.db' does not exist.*Nothing was written"):
        run("--sqlite", str(tmp_path / "nope.db"))
    assert written() == (0, 0, 0, 0, 0, 0)


def test_unreadable_file_is_a_clear_error(tmp_path):
    garbage = tmp_path / "orders.db"
    garbage.write_bytes(b"this is not a database, it is a CSV export\n" * 100)

    with pytest.raises(CommandError, match=r"cannot be read: file is not a database.*Nothing was written"):
        run("--sqlite", str(garbage))
    assert written() == (0, 0, 0, 0, 0, 0)


def test_a_directory_is_not_a_file(tmp_path):
    with pytest.raises(CommandError, match="does not exist \\(or is not a file\\)"):
        run("--sqlite", str(tmp_path))


def test_sqlite_table_without_the_expected_columns_is_refused(tmp_path):
    path = tmp_path / "orders.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id, name, amount, status)")
        db.execute("INSERT INTO orders VALUES ('ORD-1', 'Budi', 99000, 'paid')")

    with pytest.raises(CommandError) as excinfo:
        run("--sqlite", str(path))

    message = str(excinfo.value)
    assert "does not have the expected columns" in message
    assert "customer_name or customerName" in message and "email" in message and "created_at or createdAt" in message
    assert written() == (0, 0, 0, 0, 0, 0)


def test_sqlite_without_an_orders_table_is_refused(tmp_path):
    path = tmp_path / "orders.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id)")
    with pytest.raises(CommandError, match="has no table 'orders'"):
        run("--sqlite", str(path))


def test_database_url_that_does_not_connect_is_a_clear_error():
    url = "postgresql://olduser:s3cret@127.0.0.1:1/oldshop"

    with pytest.raises(CommandError) as excinfo:
        run("--postgres", url, "--table", "payment_orders")

    message = str(excinfo.value)
    assert "cannot connect to the old database postgresql://olduser@127.0.0.1:1/oldshop" in message
    assert "s3cret" not in message
    assert written() == (0, 0, 0, 0, 0, 0)


def test_sqlite_is_opened_read_only(tmp_path):
    path = sqlite_orders_db(tmp_path / "orders.db", [legacy_row("ORD-1")])
    reader = SqliteReader(path=str(path))
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|attempt to write"):
            reader.connection.execute("DELETE FROM orders")
    finally:
        reader.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone() == (1,)


def test_sqlite_and_postgres_options_do_not_mix(tmp_path):
    with pytest.raises(CommandError, match="--table and --schema go with --postgres"):
        run("--sqlite", str(tmp_path / "x.db"), "--schema", "plan")


# --- PostgreSQL: the interim payment_orders table -------------------------------------------


def test_interim_table_imports_and_never_touches_the_foreign_orders_table(pg):
    rows = [
        legacy_row("PO-1", amount=Decimal("99000.00"), status="settlement", created_at=datetime(2026, 11, 1, 3, 0)),
        legacy_row("PO-2", amount=Decimal("99000.00"), status="paid", email="DUA@example.com "),
        legacy_row("PO-3", amount=Decimal("99000.00"), status="pending"),
    ]
    payment_orders_create(pg, rows, outbox_sent=("PO-1",))
    foreign_before = foreign_orders(pg)

    out = run("--postgres", pg, "--table", "payment_orders")

    assert foreign_orders(pg) == foreign_before
    assert "source payment_orders: 3 rows read" in out
    first = Order.objects.get(legacy_id="PO-1")
    assert (first.status, first.amount, first.legacy_source) == (OS.PAID, 99000, SOURCE_PAYMENT_ORDERS)
    assert first.created_at == datetime(2026, 11, 1, 3, 0, tzinfo=UTC)  # TIMESTAMP without zone: UTC
    assert first.legacy_paid_notice == Order.LegacyPaidNotice.SENT
    second = Order.objects.get(legacy_id="PO-2")
    assert second.customer_email == "dua@example.com"
    assert second.legacy_paid_notice == Order.LegacyPaidNotice.NOT_SENT
    assert Entitlement.objects.filter(status="active").count() == 2
    assert not Notification.objects.exists()


def test_interim_import_needs_no_access_to_the_foreign_orders_table(pg):
    # given: a reader that may read payment_orders and the outbox, and not the foreign orders
    payment_orders_create(pg, [legacy_row("PO-1", amount=Decimal("99000.00"))], outbox_sent=())
    with reader_role(pg, tables=("payment_orders", "notification_outbox")) as reader_url:
        with psycopg.connect(reader_url) as db, pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("SELECT count(*) FROM orders")

        # when
        out = run("--postgres", reader_url, "--table", "payment_orders")

    # then: every statement the import sent was allowed, so none read the foreign table
    assert "imported total: 1" in out
    assert Order.objects.get().legacy_id == "PO-1"


def test_postgres_session_is_read_only(pg):
    payment_orders_create(pg, [legacy_row("PO-1", amount=Decimal("99000.00"))])
    reader = PostgresReader(url=pg, layout=SOURCE_PAYMENT_ORDERS)
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.connection.execute("DELETE FROM payment_orders")
    finally:
        reader.close()
    with psycopg.connect(pg) as db:
        assert db.execute("SELECT count(*) FROM payment_orders").fetchone() == (1,)


def test_interim_table_without_the_expected_columns_is_refused(pg):
    with psycopg.connect(pg, autocommit=True) as db:
        db.execute("CREATE TABLE payment_orders (id TEXT PRIMARY KEY, email TEXT, total NUMERIC)")
        db.execute("INSERT INTO payment_orders VALUES ('PO-1', 'a@example.com', 99000)")

    with pytest.raises(CommandError) as excinfo:
        run("--postgres", pg, "--table", "payment_orders")

    assert "table 'payment_orders' does not have the expected columns: missing customer_name, phone, amount" in str(
        excinfo.value
    )
    assert written() == (0, 0, 0, 0, 0, 0)


def test_missing_interim_table_is_refused(pg):
    with pytest.raises(CommandError, match="has no table 'payment_orders'"):
        run("--postgres", pg, "--table", "payment_orders")


def test_same_id_in_two_sources_with_different_content_is_refused(pg, tmp_path):
    path = sqlite_orders_db(tmp_path / "orders.db", [legacy_row("SAME-1", email="satu@example.com")])
    run("--sqlite", str(path))
    payment_orders_create(
        pg,
        [
            legacy_row("SAME-1", email="lain@example.com", amount=Decimal("99000.00")),
            legacy_row("PO-NEW", amount=Decimal("99000.00")),
        ],
    )
    before = written()

    out, error = run_refused("--postgres", pg, "--table", "payment_orders")

    assert written() == before
    assert "refused id SAME-1 (id 'SAME-1'): order id 'SAME-1' was imported from sqlite with different content" in out
    assert not Order.objects.filter(legacy_id="PO-NEW").exists()
    assert Order.objects.get(legacy_id="SAME-1").customer_email == "satu@example.com"


def test_same_id_in_two_sources_with_the_same_content_is_left_alone(pg, tmp_path):
    path = sqlite_orders_db(tmp_path / "orders.db", [legacy_row("SAME-1", email="Satu@example.com")])
    run("--sqlite", str(path))
    payment_orders_create(pg, [legacy_row("SAME-1", email="satu@example.com", amount=Decimal("99000.00"))])

    out = run("--postgres", pg, "--table", "payment_orders")

    assert "unchanged (imported before): 1" in out
    assert Order.objects.get().legacy_source == "sqlite"
    assert Entitlement.objects.count() == 1


def test_source_saying_paid_for_an_order_imported_pending_is_refused(pg, tmp_path):
    path = sqlite_orders_db(tmp_path / "orders.db", [legacy_row("SAME-1", status="pending")])
    run("--sqlite", str(path))
    payment_orders_create(pg, [legacy_row("SAME-1", status="paid", amount=Decimal("99000.00"))])

    out, _error = run_refused("--postgres", pg, "--table", "payment_orders")

    assert "as PENDING_PAYMENT but this source says paid; run reconcile_payments" in out
    assert Order.objects.get().status == OS.PENDING_PAYMENT
    assert not Entitlement.objects.exists()


# --- PostgreSQL: the upgrade plan's schema --------------------------------------------------


def test_plan_schema_brings_attempts_events_entitlements_and_audit(pg):
    settlement = {
        "order_id": "PLAN-1",
        "transaction_status": "settlement",
        "status_code": "200",
        "gross_amount": "89100.00",
    }
    plan_schema_create(
        pg,
        [
            {
                "order_id": "PLAN-1",
                "customer_email": "plan@example.com",
                "final_amount": 89100,
                "discount_code": "HEMAT10",
                "discount_amount": 9900,
                "status": "PAID",
                "paid_at": "2026-11-21T10:04:30+07:00",
                "attempts": [{"attempt_id": "PLAN-1-a1", "va_number": "8808123456"}],
                "events": [
                    {"event_id": "ev-1", "payload": settlement},
                    {"event_id": "ev-2", "payload": settlement | {"transaction_status": "pending"}, "processed": False},
                ],
                "entitlements": [{"entitlement_id": "ent-1"}],
                "sent": ["payment_success"],
                "audit": [{"action": "ORDER_PAID", "new_value": {"status": "PAID"}}],
            },
            {
                "order_id": "PLAN-2",
                "customer_email": "revoked@example.com",
                "status": "PAID",
                "paid_at": "2026-11-21T11:00:00+07:00",
                "entitlements": [{"entitlement_id": "ent-2", "status": "REVOKED"}],
            },
            {"order_id": "PLAN-3", "customer_email": "created@example.com", "status": "CREATED"},
        ],
    )

    out = run("--postgres", pg, "--schema", "plan")

    assert "source plan: 3 rows read" in out
    order = Order.objects.get(legacy_id="PLAN-1")
    assert (order.list_price, order.discount_amount, order.amount) == (99000, 9900, 89100)
    assert order.paid_at == datetime(2026, 11, 21, 3, 4, 30, tzinfo=UTC)
    assert order.client_ip == "203.0.113.9"
    assert order.legacy_paid_notice == Order.LegacyPaidNotice.SENT
    attempt = order.attempts.get()
    assert (attempt.midtrans_order_id, attempt.va_number, attempt.transaction_id) == ("PLAN-1", "8808123456", "trx-1")
    events = {e.dedup_key: e for e in PaymentEvent.objects.filter(attempt=attempt)}
    assert events["legacy:ev-1"].result == "applied" and events["legacy:ev-1"].source == "legacy"
    assert events["legacy:ev-1"].gross_amount == "89100.00"
    assert events["legacy:ev-2"].result == "stale" and "unprocessed" in events["legacy:ev-2"].error
    assert Entitlement.objects.get(order_id=order.id).status == "active"
    assert Entitlement.objects.get(order_id=Order.objects.get(legacy_id="PLAN-2").id).status == "revoked"
    legacy_audit = AuditEntry.objects.get(action="ORDER_PAID")
    assert (legacy_audit.actor, legacy_audit.object_id, legacy_audit.new_value) == (
        "legacy:system",
        "PLAN-1",
        {"status": "PAID"},
    )
    created = Order.objects.get(legacy_id="PLAN-3")
    assert (created.status, created.attempts.get().status) == (OS.CREATED, "initiated")
    assert Order.objects.get(legacy_id="PLAN-2").legacy_paid_notice == Order.LegacyPaidNotice.NOT_SENT
    # Importing again adds nothing, events and audit rows included.
    before = written()
    assert "nothing to import" in run("--postgres", pg, "--schema", "plan")
    assert written() == before


def test_plan_order_for_an_unknown_package_is_refused(pg):
    plan_schema_create(pg, [{"order_id": "PLAN-1", "customer_email": "a@example.com", "status": "PAID",
                             "package_id": "kelas-lain", "paid_at": "2026-11-21T10:04:30+07:00"}])  # fmt: skip

    out, _error = run_refused("--postgres", pg, "--schema", "plan")

    assert "unknown package 'kelas-lain'" in out
    assert written() == (0, 0, 0, 0, 0, 0)


def test_plan_schema_with_a_related_table_missing_columns_is_refused(pg):
    plan_schema_create(pg, [{"order_id": "PLAN-1", "customer_email": "a@example.com", "status": "PAID"}])
    with psycopg.connect(pg, autocommit=True) as db:
        db.execute("ALTER TABLE payment_events DROP COLUMN raw_payload")

    with pytest.raises(
        CommandError, match="table 'payment_events' does not have the expected columns: missing raw_payload"
    ):
        run("--postgres", pg, "--schema", "plan")
    assert written() == (0, 0, 0, 0, 0, 0)


def test_legacy_id_already_used_as_a_midtrans_order_id_here_is_refused(tmp_path):
    from payments.tests.payment_support import attempt_create

    attempt = attempt_create()
    path = sqlite_orders_db(tmp_path / "orders.db", [legacy_row(attempt.midtrans_order_id)])
    before = written()

    out, _error = run_refused("--sqlite", str(path))

    assert f"Midtrans order id {attempt.midtrans_order_id!r} belongs to an order of this system" in out
    assert written() == before


def test_an_id_twice_in_one_file_with_different_content_is_refused_before_anything_is_written(tmp_path):
    path = sqlite_orders_db(
        tmp_path / "orders.db",
        [legacy_row("ORD-1"), legacy_row("ORD-2"), legacy_row("ORD-1 ", email="ord-1@example.com", amount=150000)],
    )

    out, _error = run_refused("--sqlite", str(path), "--batch-size", "1")

    assert "refused rowid 3 (id 'ORD-1 '): order id 'ORD-1' was met before in this source (rowid 1)" in out
    assert written() == (0, 0, 0, 0, 0, 0)


def test_an_id_twice_in_one_file_with_the_same_content_is_imported_once(tmp_path):
    path = sqlite_orders_db(tmp_path / "orders.db", [legacy_row("ORD-1"), legacy_row("ORD-2"), legacy_row("ORD-1")])

    out = run("--sqlite", str(path), "--batch-size", "1")

    assert "imported total: 2" in out and "unchanged (imported before): 1" in out
    assert Entitlement.objects.count() == 2


def test_plan_order_with_a_negative_discount_is_refused(pg):
    plan_schema_create(pg, [{"order_id": "PLAN-1", "customer_email": "a@example.com", "status": "PENDING_PAYMENT",
                             "final_amount": 99000, "discount_amount": -9900}])  # fmt: skip

    out, _error = run_refused("--postgres", pg, "--schema", "plan")

    assert "refused id PLAN-1 (id 'PLAN-1'): discount amount -9900 must be greater than zero" in out
    assert written() == (0, 0, 0, 0, 0, 0)


def test_database_that_accepts_but_never_answers_times_out_with_a_clear_error(settings):
    import socket

    settings.LEGACY_DB_CONNECT_TIMEOUT = 1
    # A listening socket nobody serves: the connection is accepted by the kernel, then silence.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]

        with pytest.raises(CommandError) as excinfo:
            run("--postgres", f"postgresql://old@127.0.0.1:{port}/shop", "--table", "payment_orders")

    assert f"cannot connect to the old database postgresql://old@127.0.0.1:{port}/shop" in str(excinfo.value)
    assert "timeout" in str(excinfo.value).lower()
    assert written() == (0, 0, 0, 0, 0, 0)
