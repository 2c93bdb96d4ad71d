"""Import orders from the old systems (the Express app's three storage layouts).

Each legacy order becomes an Order with one PaymentAttempt whose Midtrans order id is the
legacy id, so Midtrans' notifications, the status API and the reconciliation sweep keep
working for it. The legacy id is kept on the order (`Order.legacy_id`).

Readers, one per layout, stream the old rows in batches as `LegacyRecord`s (raw values, read
by column name, extra columns ignored); `record_normalize` turns one into an `ImportCandidate`
or refuses it with a reason; `legacy_import` checks each batch against this database and,
unless it is a dry run, writes it in one transaction.

Rules (also in the README's cut-over runbook):
- Nothing is written when any row is refused, unless `allow_partial`: the source is read
  twice, a checking pass first, then the writing pass (with `allow_partial`, the writing
  pass alone, which refuses the same rows). Memory stays flat: only refused rows
  and the open orders met so far are kept between batches.
- A legacy id seen before (imported earlier, or met earlier in the same source: SQLite files
  can hold an id twice) is left alone when it is the same order (same email and amount);
  it is refused when the content differs (the same id in two sources that disagree), or when
  this source says paid and the imported order is not (the reconciliation sweep asks Midtrans).
- Status spellings map explicitly (FREE_TEXT_STATUSES, PLAN_STATUSES); anything else is refused.
  An empty status means the old app never learnt the outcome: the order is imported as
  pending and the sweep asks Midtrans, whose answer decides.
- One open order per email and package (as at checkout): a second open legacy order for the
  same customer is refused with the first one's id. Once the sweep has settled the first
  (paid or expired), a re-run imports it.
- Paid orders get their entitlement through entitlements.services.entitlement_grant. Nothing
  here enqueues a customer message; whether the old system sent the "paid" message is
  recorded (`Order.legacy_paid_notice`) for backfill_notifications --only-unsent.
- The old databases are opened read-only (SQLite `mode=ro`, PostgreSQL read-only
  transactions); the interim layout's foreign `orders` table is never read.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connections, router, transaction
from django.db.models import JSONField
from django.db.models.fields import AutoFieldMixin
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from psycopg import sql

from entitlements.services import entitlement_grant_many, entitlement_revoke
from payments.models import (
    AttemptStatus,
    AuditEntry,
    EventResult,
    EventSource,
    LegacyPaidNotice,
    Order,
    OrderStatus,
    Package,
    PaymentAttempt,
    PaymentEvent,
)
from payments.services.audit import audit_batch, audit_record
from payments.services.checkout import phone_normalize

logger = logging.getLogger(__name__)

ACTOR = "import_legacy"

SOURCE_SQLITE = "sqlite"
SOURCE_PAYMENT_ORDERS = "payment_orders"
SOURCE_PLAN = "plan"

# The one course the old app sold; its SQLite and interim rows name no package.
LEGACY_PACKAGE_ID = "ai-movie-course"

# Midtrans' order_id: at most 50 of letters, digits and - _ ~ . (reference: midtrans-api.md).
MIDTRANS_ORDER_ID_RE = re.compile(r"^[A-Za-z0-9\-_~.]{1,50}$")

# The free-text statuses of the SQLite app and the interim table, lower-cased and trimmed.
# The old code's own spellings plus Midtrans' (expire, deny, failure) it sometimes stored.
FREE_TEXT_STATUSES: dict[str, str] = {
    "": OrderStatus.PENDING_PAYMENT,  # outcome never learnt: the sweep asks Midtrans
    "pending": OrderStatus.PENDING_PAYMENT,
    "paid": OrderStatus.PAID,
    "settlement": OrderStatus.PAID,
    "success": OrderStatus.PAID,
    "failed": OrderStatus.FAILED,
    "failure": OrderStatus.FAILED,
    "deny": OrderStatus.FAILED,
    "expired": OrderStatus.EXPIRED,
    "expire": OrderStatus.EXPIRED,
    "cancel": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED,
    "canceled": OrderStatus.CANCELLED,
}
# The upgrade plan's statuses (its CHECK constraint), matched case-insensitively.
PLAN_STATUSES: dict[str, str] = {
    "CREATED": OrderStatus.CREATED,
    "PENDING_PAYMENT": OrderStatus.PENDING_PAYMENT,
    "PAID": OrderStatus.PAID,
    "FAILED": OrderStatus.FAILED,
    "EXPIRED": OrderStatus.EXPIRED,
}

# The attempt of an imported order, from the order's status.
_ATTEMPT_STATUS = {
    OrderStatus.CREATED: AttemptStatus.INITIATED,
    OrderStatus.PAID: AttemptStatus.PAID,
    OrderStatus.FAILED: AttemptStatus.FAILED,
    OrderStatus.EXPIRED: AttemptStatus.EXPIRED,
    OrderStatus.CANCELLED: AttemptStatus.FAILED,
}

# Template names the old workers used for the "payment received" message.
PAID_TEMPLATE_NAMES = ("payment_success", "payment_received", "payment_confirmed", "payment_paid", "order_paid")

_AMOUNT_TEXT_RE = re.compile(r"^[+-]?\d+(\.\d{1,2})?$")
_AMOUNT_MAX = 2_147_483_647  # the PositiveIntegerField ceiling


class LegacySourceError(Exception):
    """The old data cannot be read as a whole (file, connection, table, columns). Nothing was written."""


class RowRefused(ValueError):
    """One legacy row that does not fit; the message is the reason the report prints."""


# --- What the readers produce --------------------------------------------------------------


@dataclass
class LegacyRecord:
    """One legacy order as the old system stored it (raw values)."""

    source: str
    row_ref: str  # where to find it in the old data, e.g. "rowid 12"
    legacy_id: object
    customer_name: object
    email: object
    phone: object
    amount: object
    status: object
    created_at: object
    updated_at: object = None
    payment_method: object = None
    payment_url: object = None
    token: object = None
    package_id: object = None
    discount_amount: object = 0
    discount_code: object = None
    expires_at: object = None
    paid_at: object = None
    client_ip: object = None
    user_agent: object = None
    referrer: object = None
    paid_notice: str = LegacyPaidNotice.UNKNOWN
    attempts: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    entitlements: list[dict] = field(default_factory=list)
    audit: list[dict] = field(default_factory=list)


@dataclass
class ImportCandidate:
    """A legacy order that fits this system, ready to be written."""

    record: LegacyRecord
    legacy_id: str
    status: str
    legacy_status: str
    package: Package
    customer_name: str
    email: str
    phone: str
    flags: list[str]
    list_price: int
    discount_amount: int
    amount: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    paid_at: datetime | None


# --- Parsing one value ---------------------------------------------------------------------


def amount_parse(*, value) -> int:
    """Integer rupiah from an integer, a REAL, a NUMERIC or text such as "99000.00"; exact.

    Fractions of a rupiah, zero and negative amounts are refused (RowRefused). Text with three
    decimals ("99.000") is refused too: it is a thousands separator, not 99 rupiah.
    """
    if value is None or isinstance(value, bool):
        raise RowRefused("amount is missing")
    if isinstance(value, int | float | Decimal):
        # Decimal(float) is the float's exact binary value: 99000.5 stays a fraction.
        number = Decimal(value)
    elif isinstance(value, str) and _AMOUNT_TEXT_RE.match(value.strip()):
        number = Decimal(value.strip())
    else:
        raise RowRefused(f"amount {value!r} is not a number of rupiah")
    try:
        whole = number == number.to_integral_value()
    except InvalidOperation:  # NaN, infinity
        raise RowRefused(f"amount {value!r} is not a number of rupiah") from None
    if not whole:
        raise RowRefused(f"amount {value!r} has a fraction of a rupiah")
    if number <= 0:
        raise RowRefused(f"amount {value!r} must be greater than zero")
    if number > _AMOUNT_MAX:
        raise RowRefused(f"amount {value!r} is too large")
    return int(number)


def status_map(*, source: str, value) -> str:
    """The Order status for a legacy status; RowRefused for a spelling not in the tables."""
    text = "" if value is None else str(value).strip()
    table = PLAN_STATUSES if source == SOURCE_PLAN else FREE_TEXT_STATUSES
    status = table.get(text.upper() if source == SOURCE_PLAN else text.lower())
    if status is None:
        raise RowRefused(f"unknown status {text!r}")
    return status


def moment_parse(*, value, name: str, required: bool = True) -> datetime | None:
    """An aware datetime from a TIMESTAMP(TZ), ISO text or SQLite's CURRENT_TIMESTAMP text.
    A value without a time zone is UTC (the old servers ran in UTC)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RowRefused(f"{name} is missing")
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = parse_datetime(str(value).strip())
        except ValueError:
            moment = None
        if moment is None:
            raise RowRefused(f"{name} {value!r} is not a date and time")
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    return moment


def email_normalize(*, value) -> str:
    email = ("" if value is None else str(value)).strip().lower()
    if len(email) > Order._meta.get_field("customer_email").max_length:
        raise RowRefused(f"email {email[:60]!r}... is longer than 254 characters")
    try:
        validate_email(email)
    except ValidationError:
        raise RowRefused(f"email {email!r} is not an email address") from None
    return email


def legacy_id_check(*, value) -> str:
    legacy_id = ("" if value is None else str(value)).strip()
    if not legacy_id:
        raise RowRefused("the order id is empty")
    if len(legacy_id) > 50:
        raise RowRefused(f"order id {legacy_id!r} is longer than the 50 characters Midtrans allows")
    if not MIDTRANS_ORDER_ID_RE.match(legacy_id):
        raise RowRefused(f"order id {legacy_id!r} has characters Midtrans does not allow (letters, digits, - _ ~ .)")
    return legacy_id


def _text(value, limit: int) -> str:
    return ("" if value is None else str(value)).strip()[:limit]


def record_normalize(*, record: LegacyRecord, packages: dict[str, Package]) -> ImportCandidate:
    """The candidate for one legacy row, or RowRefused with the first reason it does not fit."""
    legacy_id = legacy_id_check(value=record.legacy_id)
    status = status_map(source=record.source, value=record.status)
    email = email_normalize(value=record.email)
    flags: list[str] = []

    raw_phone = _text(record.phone, 1000)
    try:
        phone = phone_normalize(raw=raw_phone)
    except ValueError:
        # Kept as written so an operator can still reach the customer; no WhatsApp goes to it.
        if len(raw_phone) > Order._meta.get_field("customer_phone").max_length:
            raise RowRefused(f"phone {raw_phone!r} is unusable and longer than 20 characters") from None
        phone = raw_phone
        flags.append("phone_unusable")

    name = _text(record.customer_name, 1000)
    if len(name) > 100:
        name = name[:100]
        flags.append("name_truncated")

    package_id = _text(record.package_id, 50) or LEGACY_PACKAGE_ID
    package = packages.get(package_id)
    if package is None:
        raise RowRefused(f"unknown package {package_id!r} (create it first: manage.py package_upsert)")

    amount = amount_parse(value=record.amount)
    discount = 0
    if record.discount_amount not in (None, "", 0):
        try:
            discount = amount_parse(value=record.discount_amount)
        except RowRefused as exc:
            raise RowRefused(f"discount {exc}") from None

    created_at = moment_parse(value=record.created_at, name="created_at")
    updated_at = moment_parse(value=record.updated_at, name="updated_at", required=False) or created_at
    expires_at = moment_parse(value=record.expires_at, name="expires_at", required=False) or (
        created_at + timedelta(minutes=settings.ORDER_PAYMENT_WINDOW_MINUTES)
    )
    paid_at = None
    if status == OrderStatus.PAID:
        # The SQLite and interim tables keep no payment time: their last update is closest.
        paid_at = moment_parse(value=record.paid_at, name="paid_at", required=False) or updated_at

    return ImportCandidate(
        record=record,
        legacy_id=legacy_id,
        status=status,
        legacy_status=_text(record.status, 64),
        package=package,
        customer_name=name,
        email=email,
        phone=phone,
        flags=flags,
        list_price=amount + discount,
        discount_amount=discount,
        amount=amount,
        created_at=created_at,
        updated_at=updated_at,
        expires_at=expires_at,
        paid_at=paid_at,
    )


# --- Readers -------------------------------------------------------------------------------

# meaning -> accepted column names, in the order tried.
SQLITE_COLUMNS: dict[str, tuple[str, ...]] = {
    "legacy_id": ("id",),
    "customer_name": ("customer_name", "customerName"),
    "email": ("email",),
    "phone": ("phone",),
    "amount": ("amount",),
    "status": ("status",),
    "created_at": ("created_at", "createdAt"),
    "payment_method": ("payment_method", "paymentMethod"),
    "payment_url": ("payment_url", "paymentUrl"),
    "token": ("token",),
    "updated_at": ("updated_at", "updatedAt"),
}
SQLITE_REQUIRED = ("legacy_id", "customer_name", "email", "phone", "amount", "status", "created_at")


def _columns_pick(
    *, available: set[str], wanted: dict[str, tuple[str, ...]], required: tuple[str, ...], table: str
) -> dict[str, str]:
    """meaning -> the column that holds it; LegacySourceError naming every missing column."""
    picked: dict[str, str] = {}
    missing = []
    for meaning, names in wanted.items():
        name = next((n for n in names if n in available), None)
        if name is not None:
            picked[meaning] = name
        elif meaning in required:
            missing.append(" or ".join(names))
    if missing:
        raise LegacySourceError(
            f"table {table!r} does not have the expected columns: missing {', '.join(missing)} "
            f"(it has {', '.join(sorted(available)) or 'no columns'})"
        )
    return picked


class SqliteReader:
    """The original app's orders.db: table `orders`, snake_case or camelCase columns."""

    source = SOURCE_SQLITE

    def __init__(self, *, path: str):
        self.path = path
        file = Path(path)
        if not file.is_file():
            raise LegacySourceError(f"SQLite file {path!r} does not exist (or is not a file)")
        if not os.access(file, os.R_OK):
            raise LegacySourceError(f"SQLite file {path!r} cannot be read (permission denied)")
        try:
            # mode=ro: SQLite itself refuses every write on this connection.
            self.connection = sqlite3.connect(f"file:{quote(str(file.resolve()))}?mode=ro", uri=True)
            self.connection.execute("PRAGMA query_only = ON")
            tables = {row[0] for row in self.connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise LegacySourceError(f"SQLite file {path!r} cannot be read: {exc}") from None
        if "orders" not in tables:
            self.close()
            raise LegacySourceError(f"SQLite file {path!r} has no table 'orders'")
        available = {row[1] for row in self.connection.execute("PRAGMA table_info(orders)")}
        try:
            self.columns = _columns_pick(
                available=available, wanted=SQLITE_COLUMNS, required=SQLITE_REQUIRED, table="orders"
            )
        except LegacySourceError:
            self.close()
            raise

    def duplicate_ids(self) -> set[str]:
        """Ids held by more than one row (SQLite keeps them on disk; only the few repeats are
        returned), so a checking pass sees what the writing pass will."""
        column = self.columns["legacy_id"]
        query = f'SELECT trim("{column}") FROM orders GROUP BY 1 HAVING count(*) > 1'  # noqa: S608
        return {row[0] for row in self.connection.execute(query) if row[0]}

    def batches(self, *, size: int) -> Iterator[list[LegacyRecord]]:
        meanings = list(self.columns)
        selected = ", ".join(f'"{self.columns[m]}"' for m in meanings)
        cursor = self.connection.execute(f"SELECT rowid, {selected} FROM orders ORDER BY rowid")  # noqa: S608
        while rows := cursor.fetchmany(size):
            yield [
                LegacyRecord(source=self.source, row_ref=f"rowid {row[0]}", **dict(zip(meanings, row[1:], strict=True)))
                for row in rows
            ]

    def close(self) -> None:
        self.connection.close()


def _url_safe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


PAYMENT_ORDERS_COLUMNS: dict[str, tuple[str, ...]] = {
    "legacy_id": ("id",),
    "customer_name": ("customer_name",),
    "email": ("email",),
    "phone": ("phone",),
    "amount": ("amount",),
    "status": ("status",),
    "created_at": ("created_at",),
    "updated_at": ("updated_at",),
    "payment_method": ("payment_method",),
    "payment_url": ("payment_url",),
    "token": ("token",),
}
PAYMENT_ORDERS_REQUIRED = ("legacy_id", "customer_name", "email", "phone", "amount", "status", "created_at")

PLAN_ORDER_COLUMNS: dict[str, tuple[str, ...]] = {
    "legacy_id": ("order_id",),
    "customer_name": ("customer_name",),
    "email": ("customer_email",),
    "phone": ("customer_phone",),
    "package_id": ("package_id",),
    "amount": ("final_amount",),
    "discount_amount": ("discount_amount",),
    "discount_code": ("discount_code",),
    "status": ("status",),
    "client_ip": ("ip_address",),
    "user_agent": ("user_agent",),
    "referrer": ("referrer",),
    "created_at": ("created_at",),
    "updated_at": ("updated_at",),
    "expires_at": ("expires_at",),
    "paid_at": ("paid_at",),
}
PLAN_ORDER_REQUIRED = ("legacy_id", "customer_name", "email", "phone", "package_id", "amount", "status", "created_at")
# The plan's other tables: the columns read from each (all required when the table exists).
PLAN_RELATED: dict[str, tuple[str, ...]] = {
    "payment_attempts": (
        "attempt_id",
        "order_id",
        "snap_token",
        "redirect_url",
        "midtrans_transaction_id",
        "midtrans_payment_type",
        "midtrans_va_number",
        "status",
        "created_at",
        "error_message",
    ),
    "payment_events": (
        "event_id",
        "order_id",
        "raw_payload",
        "signature_valid",
        "processed",
        "processed_at",
        "processing_error",
        "received_at",
    ),
    "entitlements": ("entitlement_id", "order_id", "status", "granted_at"),
    "system_audit_log": (
        "id",
        "actor",
        "action",
        "entity_type",
        "entity_id",
        "old_value",
        "new_value",
        "correlation_id",
        "created_at",
    ),
}
OUTBOX_COLUMNS = ("order_id", "template_name", "status")


class PostgresReader:
    """The interim `payment_orders` table or the upgrade plan's schema, in a read-only session."""

    def __init__(self, *, url: str, layout: str):
        if layout not in (SOURCE_PAYMENT_ORDERS, SOURCE_PLAN):
            raise LegacySourceError(f"unknown PostgreSQL layout {layout!r}")
        self.source = layout
        self.url = url
        try:
            # Read-only twice over: the session default and the transaction psycopg opens.
            self.connection = psycopg.connect(
                url,
                connect_timeout=settings.LEGACY_DB_CONNECT_TIMEOUT,
                options="-c default_transaction_read_only=on",
            )
            self.connection.read_only = True
        except psycopg.Error as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LegacySourceError(f"cannot connect to the old database {_url_safe(url)}: {first_line}") from None
        try:
            self._layout_check()
        except LegacySourceError:
            self.close()
            raise

    def _table_columns(self, table: str) -> set[str] | None:
        rows = self.connection.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = %s AND table_schema = ANY(current_schemas(false))",
            [table],
        ).fetchall()
        return {r[0] for r in rows} or None

    def _layout_check(self) -> None:
        if self.source == SOURCE_PAYMENT_ORDERS:
            self.table = "payment_orders"
            wanted, required = PAYMENT_ORDERS_COLUMNS, PAYMENT_ORDERS_REQUIRED
        else:
            self.table = "orders"
            wanted, required = PLAN_ORDER_COLUMNS, PLAN_ORDER_REQUIRED
        available = self._table_columns(self.table)
        if available is None:
            raise LegacySourceError(f"the old database {_url_safe(self.url)} has no table {self.table!r}")
        self.columns = _columns_pick(available=available, wanted=wanted, required=required, table=self.table)
        self.related: dict[str, tuple[str, ...]] = {}
        if self.source == SOURCE_PLAN:
            for table, columns in PLAN_RELATED.items():
                found = self._table_columns(table)
                if found is None:
                    continue
                _columns_pick(
                    available=found, wanted={c: (c,) for c in columns}, required=columns, table=table
                )  # raises when one is missing
                self.related[table] = columns
        outbox = self._table_columns("notification_outbox")
        self.has_outbox = outbox is not None
        if outbox is not None:
            _columns_pick(
                available=outbox,
                wanted={c: (c,) for c in OUTBOX_COLUMNS},
                required=OUTBOX_COLUMNS,
                table="notification_outbox",
            )

    def batches(self, *, size: int) -> Iterator[list[LegacyRecord]]:
        meanings = list(self.columns)
        query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            sql.SQL(", ").join(sql.Identifier(self.columns[m]) for m in meanings),
            sql.Identifier(self.table),
            sql.Identifier(self.columns["legacy_id"]),
        )
        # A server-side cursor: the old table is streamed, never held in memory at once.
        with self.connection.cursor(name="legacy_orders") as cursor:
            cursor.itersize = size
            cursor.execute(query)
            while rows := cursor.fetchmany(size):
                records = [
                    LegacyRecord(
                        source=self.source,
                        row_ref=f"id {row[0]}",
                        **dict(zip(meanings, row, strict=True)),
                    )
                    for row in rows
                ]
                self._related_attach(records)
                yield records

    def duplicate_ids(self) -> set[str]:
        return set()  # the id is the table's primary key in both layouts

    def _rows_for(self, table: str, columns: tuple[str, ...], key: str, ids: list[str]) -> list[dict]:
        query = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s) ORDER BY 1").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.Identifier(table), sql.Identifier(key)
        )
        return [dict(zip(columns, row, strict=True)) for row in self.connection.execute(query, [ids]).fetchall()]

    def _related_attach(self, records: list[LegacyRecord]) -> None:
        ids = [str(r.legacy_id) for r in records if r.legacy_id is not None]
        by_id = {str(r.legacy_id): r for r in records}
        if self.has_outbox:
            sent = self.connection.execute(
                "SELECT DISTINCT order_id FROM notification_outbox "
                "WHERE order_id = ANY(%s) AND upper(status) = 'SENT' AND lower(template_name) = ANY(%s)",
                [ids, list(PAID_TEMPLATE_NAMES)],
            ).fetchall()
            sent_ids = {row[0] for row in sent}
            for record in records:
                # The old worker queued every message there: no sent row means not sent.
                sent_here = str(record.legacy_id) in sent_ids
                record.paid_notice = LegacyPaidNotice.SENT if sent_here else LegacyPaidNotice.NOT_SENT
        for table, columns in self.related.items():
            key = "entity_id" if table == "system_audit_log" else "order_id"
            target = {
                "payment_attempts": "attempts",
                "payment_events": "events",
                "entitlements": "entitlements",
                "system_audit_log": "audit",
            }[table]
            for row in self._rows_for(table, columns, key, ids):
                record = by_id.get(str(row[key]))
                if record is not None:
                    getattr(record, target).append(row)

    def close(self) -> None:
        self.connection.close()


# --- The import ----------------------------------------------------------------------------


@dataclass
class ImportReport:
    source: str
    dry_run: bool
    imported: Counter = field(default_factory=Counter)  # status -> orders written (or to write)
    unchanged: int = 0
    flagged: Counter = field(default_factory=Counter)
    entitlements_granted: int = 0
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # (row ref, legacy id, reason)
    rows_read: int = 0
    written: bool = False

    @property
    def imported_total(self) -> int:
        return sum(self.imported.values())

    def lines(self) -> list[str]:
        verb = "imported" if self.written else "would import"
        lines = [f"source {self.source}: {self.rows_read} rows read"]
        for status, count in sorted(self.imported.items()):
            lines.append(f"  {verb} {status}: {count}")
        lines.append(f"  {verb} total: {self.imported_total}")
        lines.append(f"  unchanged (imported before): {self.unchanged}")
        if self.written:
            lines.append(f"  entitlements granted: {self.entitlements_granted}")
        for flag, count in sorted(self.flagged.items()):
            lines.append(f"  flagged {flag}: {count}")
        lines.append(f"  refused: {len(self.refused)}")
        for row_ref, legacy_id, reason in self.refused:
            lines.append(f"  refused {row_ref} (id {legacy_id!r}): {reason}")
        if self.rows_read and not self.imported_total and not self.refused:
            lines.append("nothing to import: every order was imported before")
        return lines


@dataclass
class _RunState:
    """What one import keeps between batches: the open orders met (one per email and package),
    and the first row of each id the source holds more than once (SQLite has no primary key)."""

    duplicate_ids: set[str] = field(default_factory=set)
    first_of: dict[str, ImportCandidate] = field(default_factory=dict)
    open_orders: dict[tuple[str, str], str] = field(default_factory=dict)


def _packages() -> dict[str, Package]:
    return {p.id: p for p in Package.objects.all()}


def _refuse(report: ImportReport, record: LegacyRecord, reason: str) -> None:
    report.refused.append((record.row_ref, "" if record.legacy_id is None else str(record.legacy_id), reason))


def _batch_check(
    *, records: list[LegacyRecord], packages: dict[str, Package], state: _RunState, report: ImportReport
) -> list[ImportCandidate]:
    """The candidates of one batch to write; refusals and unchanged rows go on the report."""
    candidates: list[ImportCandidate] = []
    for record in records:
        try:
            candidates.append(record_normalize(record=record, packages=packages))
        except RowRefused as exc:
            _refuse(report, record, str(exc))
    ids = [c.legacy_id for c in candidates]
    existing = {
        row[0]: _Imported(*row[1:])
        for row in Order.objects.filter(legacy_id__in=ids).values_list(
            "legacy_id", "legacy_source", "customer_email", "amount", "status"
        )
    }
    # A Midtrans order id of an order not imported before, already used here (by a new order).
    new_ids = [legacy_id for legacy_id in ids if legacy_id not in existing]
    taken = set(
        PaymentAttempt.objects.filter(midtrans_order_id__in=new_ids).values_list("midtrans_order_id", flat=True)
    )
    open_candidates = [c for c in candidates if c.status in Order.OPEN_STATUSES]
    open_here = {
        (email, package_id): legacy_id or f"order {order_id} of this system"
        for email, package_id, order_id, legacy_id in Order.objects.filter(
            status__in=Order.OPEN_STATUSES, customer_email__in={c.email for c in open_candidates}
        ).values_list("customer_email", "package_id", "id", "legacy_id")
    }
    to_write: list[ImportCandidate] = []
    in_batch: dict[str, ImportCandidate] = {}
    for candidate in candidates:
        record = candidate.record
        seen = (
            existing.get(candidate.legacy_id)
            or in_batch.get(candidate.legacy_id)
            or state.first_of.get(candidate.legacy_id)
        )
        if seen is not None:
            problem = _difference(candidate=candidate, seen=seen)
            if problem:
                _refuse(report, record, problem)
            else:
                report.unchanged += 1
            continue
        if candidate.legacy_id in taken:
            _refuse(report, record, f"Midtrans order id {candidate.legacy_id!r} belongs to an order of this system")
            continue
        if candidate.status in Order.OPEN_STATUSES:
            key = (candidate.email, candidate.package.id)
            other = state.open_orders.get(key) or open_here.get(key)
            if other:
                _refuse(
                    report,
                    record,
                    f"the customer already has an open order for {candidate.package.id} "
                    f"({other}); run reconcile_payments, then import again",
                )
                continue
            state.open_orders[key] = candidate.legacy_id
        in_batch[candidate.legacy_id] = candidate
        if candidate.legacy_id in state.duplicate_ids:
            state.first_of[candidate.legacy_id] = candidate
        to_write.append(candidate)
    return to_write


@dataclass(frozen=True)
class _Imported:
    """What an order imported before is compared on."""

    legacy_source: str
    email: str
    amount: int
    status: str


def _difference(*, candidate: ImportCandidate, seen: _Imported | ImportCandidate) -> str:
    """Why a legacy id met again is not the same order; "" when it is."""
    if isinstance(seen, _Imported):
        where = f"imported from {seen.legacy_source}"
        email, amount, status = seen.email, seen.amount, seen.status
    else:
        where = f"met before in this source ({seen.record.row_ref})"
        email, amount, status = seen.email, seen.amount, seen.status
    if email != candidate.email or amount != candidate.amount:
        return f"order id {candidate.legacy_id!r} was {where} with different content (email or amount differ)"
    paid_family = (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED, OrderStatus.CHARGEBACK)
    if candidate.status == OrderStatus.PAID and status not in paid_family:
        return (
            f"order id {candidate.legacy_id!r} was {where} as {status} but this source says paid; "
            "run reconcile_payments --order for it (Midtrans decides)"
        )
    return ""


def _attempt_fields(candidate: ImportCandidate) -> dict:
    record = candidate.record
    latest = record.attempts[-1] if record.attempts else {}
    method = _text(latest.get("midtrans_payment_type") or record.payment_method, 32)
    if candidate.status == OrderStatus.PENDING_PAYMENT:
        status = AttemptStatus.PENDING if method else AttemptStatus.OPEN
    else:
        status = _ATTEMPT_STATUS[candidate.status]
    token = _text(latest.get("snap_token") or record.token, 100)
    url = _text(latest.get("redirect_url") or record.payment_url, 500)
    if url and not url.startswith(("http://", "https://")):
        url = ""  # the old app sometimes kept the token in this column
    return {
        "status": status,
        "snap_token": token,
        "redirect_url": url,
        "payment_type": method,
        "transaction_id": _text(latest.get("midtrans_transaction_id"), 64),
        "va_number": _text(latest.get("midtrans_va_number"), 64),
        "last_error": _text(latest.get("error_message"), 10_000),
    }


def _batch_write(*, candidates: list[ImportCandidate], report: ImportReport) -> None:
    """Write one batch (the caller's transaction): orders, attempts, events, entitlements, audit."""
    orders, attempts, events, audits = [], [], [], []
    for c in candidates:
        record = c.record
        order = Order(
            package=c.package,
            customer_name=c.customer_name,
            customer_email=c.email,
            customer_phone=c.phone,
            list_price=c.list_price,
            discount_amount=c.discount_amount,
            amount=c.amount,
            status=c.status,
            expires_at=c.expires_at,
            paid_at=c.paid_at,
            client_ip=_ip_or_none(record.client_ip),
            user_agent=_text(record.user_agent, 1000),
            referrer=_text(record.referrer, 2000),
            legacy_id=c.legacy_id,
            legacy_source=record.source,
            legacy_paid_notice=record.paid_notice,
            legacy_flags=c.flags,
            created_at=c.created_at,
            updated_at=c.updated_at,
        )
        orders.append(order)
        attempt = PaymentAttempt(
            order=order,
            number=1,
            midtrans_order_id=c.legacy_id,
            amount=c.amount,
            created_at=c.created_at,
            updated_at=c.updated_at,
        )
        for name, value in _attempt_fields(c).items():
            setattr(attempt, name, value)
        attempts.append(attempt)
        for row in record.events:
            events.append(_event_from_plan(row=row, attempt=attempt, legacy_id=c.legacy_id))
        for row in record.audit:
            audits.append(_audit_from_plan(row=row))

    _rows_insert_verbatim(orders)
    _rows_insert_verbatim(attempts)
    if events:
        pks = dict(
            PaymentAttempt.objects.filter(midtrans_order_id__in=[e.midtrans_order_id for e in events]).values_list(
                "midtrans_order_id", "pk"
            )
        )
        for event in events:
            event.attempt_id = pks[event.midtrans_order_id]
    _rows_insert_verbatim(events)
    _rows_insert_verbatim(audits)

    with audit_batch():
        for order, c in zip(orders, candidates, strict=True):
            audit_record(
                actor=ACTOR,
                action="order_imported",
                obj=order,
                new_value={
                    "legacy_source": c.record.source,
                    "legacy_id": c.legacy_id,
                    "legacy_row": c.record.row_ref,
                    "legacy_status": c.legacy_status,
                    "status": c.status,
                    "amount": c.amount,
                    "discount_code": _text(c.record.discount_code, 40) or None,
                    "paid_notice": c.record.paid_notice,
                    "flags": c.flags,
                    "legacy_attempts": [_jsonable(a) for a in c.record.attempts],
                },
            )
            report.imported[c.status] += 1
            for flag in c.flags:
                report.flagged[flag] += 1
    paid = [(order, c) for order, c in zip(orders, candidates, strict=True) if c.status == OrderStatus.PAID]
    entitlement_grant_many(
        grants=[
            {
                "email": order.customer_email,
                "course_code": c.package.course_code,
                "order_id": order.id,
                "reason": f"paid in the old system ({c.record.source} {c.legacy_id})",
            }
            for order, c in paid
        ]
    )
    report.entitlements_granted += len(paid)
    for order, c in paid:
        if any(str(e.get("status", "")).upper() in ("REVOKED", "SUSPENDED") for e in c.record.entitlements):
            entitlement_revoke(order_id=order.id, reason=f"revoked in the old system ({c.legacy_id})")


def _rows_insert_verbatim(instances: list) -> None:
    """Write rows of one model exactly as given: unlike bulk_create, the instances' created_at
    and updated_at are written as they are (the old times), where Django's auto_now would
    stamp the import time. On PostgreSQL one COPY (an INSERT of a thousand rows spends more
    CPU composing its parameters than the database spends storing them; automatic primary
    keys are not read back); elsewhere (the SQLite demo) one INSERT ... RETURNING.
    """
    if not instances:
        return
    model = type(instances[0])
    meta = model._meta
    connection = connections[router.db_for_write(model)]
    auto_pk = isinstance(meta.pk, AutoFieldMixin)
    fields = [f for f in meta.concrete_fields if not (auto_pk and f.primary_key)]
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in fields)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY sends text that the server parses by column type, so plain values go as
            # they are; only JSON needs Django's adapter (a dict or list has no text form).
            json_fields = {f.attname for f in fields if isinstance(f, JSONField)}
            with cursor.copy(f"COPY {qn(meta.db_table)} ({columns}) FROM STDIN") as copy:
                for obj in instances:
                    copy.write_row(
                        [
                            f.get_db_prep_save(getattr(obj, f.attname), connection)
                            if f.attname in json_fields
                            else getattr(obj, f.attname)
                            for f in fields
                        ]
                    )
        else:
            rows = [[f.get_db_prep_save(getattr(obj, f.attname), connection) for f in fields] for obj in instances]
            row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
            returning = f" RETURNING {qn(meta.pk.column)}" if auto_pk else ""
            query = f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES {', '.join([row_sql] * len(rows))}"  # noqa: S608
            cursor.execute(query + returning, [value for row in rows for value in row])
            if auto_pk:
                for obj, (pk,) in zip(instances, cursor.fetchall(), strict=True):
                    obj.pk = pk
    for obj in instances:
        obj._state.adding, obj._state.db = False, connection.alias


def _ip_or_none(value) -> str | None:
    from ipaddress import ip_address

    try:
        return str(ip_address(str(value).strip())) if value else None
    except ValueError:
        return None


def _jsonable(row: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def _event_from_plan(*, row: dict, attempt: PaymentAttempt, legacy_id: str) -> PaymentEvent:
    payload = row.get("raw_payload") if isinstance(row.get("raw_payload"), dict) else {}
    processed = bool(row.get("processed"))
    if processed and row.get("signature_valid"):
        result, error = EventResult.APPLIED, ""
    else:
        # Kept for the record only: the sweep asks Midtrans about the order instead.
        result = EventResult.STALE
        error = "imported from the old system unprocessed; not applied here"
        if row.get("signature_valid") is False:
            error = "imported from the old system with an invalid signature; not applied here"
        if row.get("processing_error"):
            error += f" (old error: {str(row['processing_error'])[:500]})"
    event = PaymentEvent(
        attempt=attempt,
        midtrans_order_id=legacy_id,
        source=EventSource.LEGACY,
        dedup_key=f"legacy:{row['event_id']}"[:128],
        transaction_status=str(payload.get("transaction_status", ""))[:32],
        status_code=str(payload.get("status_code", ""))[:8],
        gross_amount=str(payload.get("gross_amount", ""))[:32],
        payload=payload,
        result=result,
        error=error,
        processed_at=moment_parse(value=row.get("processed_at"), name="processed_at", required=False),
    )
    received_at = moment_parse(value=row.get("received_at"), name="received_at", required=False)
    event.received_at = received_at or timezone.now()
    return event


def _audit_from_plan(*, row: dict) -> AuditEntry:
    return AuditEntry(
        actor=f"legacy:{_text(row.get('actor'), 140)}",
        action=_text(row.get("action"), 64),
        object_type=_text(row.get("entity_type"), 64),
        object_id=_text(row.get("entity_id"), 64),
        old_value=row.get("old_value"),
        new_value=row.get("new_value"),
        correlation_id=f"legacy-audit:{row.get('id')}"[:128],
        created_at=moment_parse(value=row.get("created_at"), name="created_at", required=False) or timezone.now(),
    )


def reader_open(*, sqlite_path: str | None = None, postgres_url: str | None = None, layout: str | None = None):
    if sqlite_path is not None:
        return SqliteReader(path=sqlite_path)
    return PostgresReader(url=postgres_url, layout=layout or SOURCE_PAYMENT_ORDERS)


def _run(*, reader_factory, report: ImportReport, batch_size: int, write: bool) -> None:
    packages = _packages()
    if LEGACY_PACKAGE_ID not in packages and report.source != SOURCE_PLAN:
        raise LegacySourceError(
            f"package {LEGACY_PACKAGE_ID!r}, which every old order bought, does not exist here "
            "(run manage.py migrate, or create it with manage.py package_upsert)"
        )
    reader = reader_factory()
    state = _RunState(duplicate_ids=reader.duplicate_ids())
    try:
        for records in reader.batches(size=batch_size):
            report.rows_read += len(records)
            if not write:
                for candidate in _batch_check(records=records, packages=packages, state=state, report=report):
                    report.imported[candidate.status] += 1
                    for flag in candidate.flags:
                        report.flagged[flag] += 1
                continue
            with transaction.atomic():
                candidates = _batch_check(records=records, packages=packages, state=state, report=report)
                if candidates:
                    _batch_write(candidates=candidates, report=report)
            logger.info(
                "legacy_import_batch",
                extra={"source": report.source, "rows": report.rows_read, "imported": report.imported_total},
            )
    finally:
        reader.close()


def legacy_import(
    *, reader_factory, dry_run: bool = False, allow_partial: bool = False, batch_size: int | None = None
) -> ImportReport:
    """Import every order `reader_factory()` reads (see the module docstring).

    A checking pass reads everything and writes nothing; the dry run ends there, and so does
    an import with refused rows unless `allow_partial`. Then the writing pass, one
    transaction per batch. The returned report says what was (or would be) imported.
    Raises LegacySourceError when the source cannot be read; nothing is written then.
    """
    size = batch_size or settings.LEGACY_IMPORT_BATCH_SIZE
    probe = reader_factory()  # fail on an unreadable source before anything else
    source = probe.source
    probe.close()
    if dry_run or not allow_partial:
        # The checking pass decides whether to write at all; with allow_partial the writing
        # pass refuses the same rows itself, so it would only read everything twice.
        check = ImportReport(source=source, dry_run=True)
        _run(reader_factory=reader_factory, report=check, batch_size=size, write=False)
        if dry_run or check.refused:
            check.dry_run = dry_run
            return check
    report = ImportReport(source=source, dry_run=False)
    _run(reader_factory=reader_factory, report=report, batch_size=size, write=True)
    report.written = True
    logger.info(
        "legacy_import_done",
        extra={
            "source": source,
            "imported": report.imported_total,
            "unchanged": report.unchanged,
            "refused": len(report.refused),
        },
    )
    return report
