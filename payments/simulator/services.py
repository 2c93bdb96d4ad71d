"""The simulator's behaviour: Midtrans' validations, state changes and answer bodies.

Views, the payment page, the trigger command and the test helper all call these
functions, so every path changes state the same way. Where this disagrees with
../shared/reference/midtrans-api.md, this file is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from payments.simulator.models import SimApiCall, SimIdempotencyKey, SimRefundConfirmation, SimTransaction
from payments.simulator.outbox import notification_queue

JAKARTA = ZoneInfo("Asia/Jakarta")
MERCHANT_ID = "G000000000"
# The characters Midtrans documents for an order id; only these work in a Core API path.
ORDER_ID_RE = re.compile(r"^[A-Za-z0-9\-_~.]+$")
# What Snap create accepts: more than documented. A space is accepted (midtrans-go#32, and the
# official Python client's own tests create ids like "py-midtransclient-test-2024-01-01 10:00:00"),
# as are "#" and "/" (midtrans-php#44, nodejs-client#70); such an order then cannot be read by
# order id, only by transaction_id. Printable ASCII only.
SNAP_ORDER_ID_RE = re.compile(r"^[\x20-\x7e]+$")
REFUND_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")

MSG_UNAUTHORIZED = "Access denied due to unauthorized transaction, please check client or server key"
MSG_NOT_EQUAL = "transaction_details.gross_amount is not equal to the sum of item_details"
MSG_PAID_AND_UTILIZED = "transaction_details.order_id has been paid and utilized, please use another order ID"
MSG_ORDER_ID_USED = "transaction_details.order_id sudah digunakan"
MSG_ORDER_ID_TAKEN = "transaction_details.order_id has already been taken"
MSG_START_TIME = "expiry.start_time must follow yyyy-MM-dd hh:mm:ss Z format (eg 2020-06-09 15:07:00 +0700)"
MSG_STATE = "Merchant cannot modify the status of the transaction"

# Payment methods the page offers: the key is our choice name, then how Midtrans reports it.
METHODS: dict[str, dict] = {
    "bca_va": {"payment_type": "bank_transfer", "bank": "bca", "label": "BCA Virtual Account"},
    "qris": {"payment_type": "qris", "bank": "", "label": "QRIS"},
    "gopay": {"payment_type": "gopay", "bank": "", "label": "GoPay"},
    "credit_card": {"payment_type": "credit_card", "bank": "bni", "label": "Kartu Kredit/Debit"},
    "dana": {"payment_type": "dana", "bank": "", "label": "DANA"},
    "danamon_va": {"payment_type": "bank_transfer", "bank": "danamon", "label": "Danamon Virtual Account"},
    "bsi_va": {"payment_type": "bank_transfer", "bank": "bsi", "label": "BSI Virtual Account"},
    "seabank_va": {"payment_type": "bank_transfer", "bank": "seabank", "label": "SeaBank Virtual Account"},
    "saqu_va": {"payment_type": "bank_transfer", "bank": "saqu", "label": "Bank Saqu Virtual Account"},
}
# enabled_payments names (and aliases) that turn each of our methods on.
_ENABLED_ALIASES = {
    "bca_va": "bca_va",
    "bank_transfer": "bca_va",
    "other_qris": "qris",
    "qris": "qris",
    "gopay": "gopay",
    "credit_card": "credit_card",
    "dana": "dana",
    "danamon_va": "danamon_va",
    "bsi_va": "bsi_va",
    "seabank_va": "seabank_va",
    "saqu_va": "saqu_va",
}
# Default time to pay after choosing a method (Midtrans defaults: VA 24 h, e-wallet/QRIS 15 min).
_DEFAULT_EXPIRY = {
    "bank_transfer": timedelta(hours=24),
    "qris": timedelta(minutes=15),
    "gopay": timedelta(minutes=15),
    "credit_card": timedelta(minutes=15),
    "dana": timedelta(minutes=15),
}
# Channels Midtrans runs on BI-SNAP: its status API answers them with the transaction id in
# `order_id` (midtrans-php #113 and #121), and a BSI notification may itself carry it there.
BI_SNAP_VA_BANKS = frozenset({"danamon", "bsi", "seabank", "saqu"})
BI_SNAP_NOTIFICATION_BANKS = frozenset({"bsi"})
# Snap's expiry and page_expiry units (plural forms too), in seconds.
EXPIRY_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
EXPIRY_MIN = timedelta(seconds=20)  # shorter is a validation error
PAGE_EXPIRY_MIN = timedelta(minutes=5)
SNAP_EXPIRY_MAX = timedelta(days=7)  # longer is cut to 7 days after the token was created
PAGE_EXPIRY_DEFAULT = timedelta(hours=24)
_START_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4}$")
# Idempotency-Key on Core API POSTs: a longer key is ignored, as Midtrans does.
IDEMPOTENCY_KEY_MAX_LENGTH = 46
IDEMPOTENCY_LIFETIME = timedelta(minutes=5)
# X-Override-Notification / X-Append-Notification: comma-separated, at most this many URLs each.
NOTIFICATION_URLS_MAX = 3
# Payment types Midtrans can refund through the API (no VA refunds, §2).
REFUNDABLE_TYPES = {"credit_card", "gopay", "qris", "shopeepay", "dana"}
# How long after a refund the bank confirms it (second notification), before time compression.
REFUND_CONFIRM_SECONDS = 60.0

# Which states each event may leave (Midtrans' transaction status cycle, §3).
TRANSITIONS: dict[str, set[str]] = {
    "settlement": {"pending", "capture"},
    "capture": {"pending"},
    "challenge": {"pending"},
    "deny": {"pending", "capture", "authorize"},
    "cancel": {"pending", "capture", "authorize"},
    "expire": {"pending", "authorize"},
    "refund": {"settlement", "partial_refund"},
    "partial_refund": {"settlement", "partial_refund"},
    "chargeback": {"settlement", "partial_refund"},
    "reversal": {"settlement"},
}


# What the views pass on for a body that is not JSON at all (None is JSON null, or no body).
INVALID_JSON = object()


class SimApiError(Exception):
    """An answer the simulator gives instead of success: HTTP status and JSON body."""

    def __init__(self, http_status: int, body: dict):
        self.http_status = http_status
        self.body = body
        super().__init__(f"{http_status} {body}")


class SimStateError(Exception):
    """A state change Midtrans would not make (for the page and the trigger command)."""


@dataclass(frozen=True)
class NotifyUrls:
    """A call's X-Override-Notification / X-Append-Notification URLs (override wins over append)."""

    override: list[str] = field(default_factory=list)
    append: list[str] = field(default_factory=list)

    @property
    def given(self) -> bool:
        return bool(self.override or self.append)


def _urls_parse(header: str, name: str) -> list[str]:
    urls = [part.strip() for part in (header or "").split(",") if part.strip()]
    if len(urls) > NOTIFICATION_URLS_MAX:
        raise ValueError(f"{name} accepts at most {NOTIFICATION_URLS_MAX} URLs")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 2000:
            raise ValueError(f"{name} must be comma-separated http(s) URLs")
    return urls


def notify_urls_parse(*, override: str, append: str) -> NotifyUrls:
    """The headers' URLs; ValueError (a Midtrans-shaped 400 for the view) when they are malformed."""
    override_urls = _urls_parse(override, "X-Override-Notification")
    append_urls = _urls_parse(append, "X-Append-Notification")
    # When both are sent, Midtrans uses only the override.
    return NotifyUrls(override=override_urls, append=[] if override_urls else append_urls)


# --- Formats -----------------------------------------------------------------------------------


def amount_format(amount: int) -> str:
    """Midtrans' amount string: always two decimals, e.g. 99000 -> "99000.00"."""
    return f"{int(amount)}.00"


def time_format(value: datetime | None) -> str:
    """Midtrans' time string: "YYYY-MM-DD HH:MM:SS" in GMT+7."""
    return value.astimezone(JAKARTA).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def simulator_server_key() -> str:
    """The merchant's key as "Midtrans" knows it: MIDTRANS_SIMULATOR_SERVER_KEY, else MIDTRANS_SERVER_KEY."""
    return getattr(settings, "MIDTRANS_SIMULATOR_SERVER_KEY", "") or settings.MIDTRANS_SERVER_KEY


def signature_for(*, order_id: str, status_code: str, gross_amount: str) -> str:
    # Written out here rather than imported from payments.midtrans: the simulator signs
    # like Midtrans does, independently of the verifier under test.
    raw = order_id + status_code + gross_amount + simulator_server_key()
    return hashlib.sha512(raw.encode("utf-8")).hexdigest()


def status_code_for(tx: SimTransaction, *, for_notification: bool = False) -> str:
    status = tx.transaction_status
    if status == "pending":
        return "201"
    if status == "capture":
        return "201" if tx.fraud_status == "challenge" else "200"
    if status == "cancel" and not for_notification:
        # The status read of a cancelled transaction says 200 (the official Python client's own
        # test against the sandbox); the cancel notification says 202 (docs' samples).
        return "200"
    if status in {"deny", "cancel"}:
        return "202"
    if status == "expire":
        # Midtrans' documented expire notification says "202"; its status API, "407".
        return settings.MIDTRANS_SIMULATOR_EXPIRE_NOTIFICATION_CODE if for_notification else "407"
    return "200"


def auth_valid(header: str) -> bool:
    """Basic auth exactly as Midtrans wants it: base64(SERVER_KEY + ":")."""
    if not header.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    key = simulator_server_key()
    return bool(key) and hmac.compare_digest(decoded.encode(), f"{key}:".encode())


# --- Bodies -------------------------------------------------------------------------------------


def order_id_reported(tx: SimTransaction, *, for_notification: bool) -> str:
    """The `order_id` Midtrans puts in a body: ours, except on BI-SNAP channels (see BI_SNAP_VA_BANKS)."""
    bi_snap = tx.payment_type == "dana" or (tx.payment_type == "bank_transfer" and tx.bank in BI_SNAP_VA_BANKS)
    if not bi_snap or not tx.transaction_id:
        return tx.order_id
    if for_notification and tx.bank not in BI_SNAP_NOTIFICATION_BANKS:
        return tx.order_id
    return tx.transaction_id


def transaction_body(tx: SimTransaction, *, for_notification: bool) -> dict:
    """The JSON Midtrans sends as a notification, or answers to GET status, for the current state."""
    status_code = status_code_for(tx, for_notification=for_notification)
    gross_amount = amount_format(tx.gross_amount)
    order_id = order_id_reported(tx, for_notification=for_notification)
    body = {
        "transaction_time": time_format(tx.transaction_time),
        "transaction_status": tx.transaction_status,
        "transaction_id": tx.transaction_id,
        "status_message": "midtrans payment notification" if for_notification else "Success, transaction is found",
        "status_code": status_code,
        "signature_key": signature_for(order_id=order_id, status_code=status_code, gross_amount=gross_amount),
        "payment_type": tx.payment_type,
        "order_id": order_id,
        "merchant_id": MERCHANT_ID,
        "gross_amount": gross_amount,
        "currency": "IDR",
        "fraud_status": tx.fraud_status or "accept",
    }
    if tx.expiry_time:
        body["expiry_time"] = time_format(tx.expiry_time)
    if tx.settlement_time:
        body["settlement_time"] = time_format(tx.settlement_time)
    if tx.payment_type == "bank_transfer":
        body["va_numbers"] = [{"bank": tx.bank, "va_number": tx.va_number}]
        body["payment_amounts"] = (
            [{"paid_at": time_format(tx.settlement_time), "amount": gross_amount}] if tx.settlement_time else []
        )
    elif tx.payment_type == "qris":
        body.update(
            {
                "transaction_type": "off-us",
                "issuer": "gopay",
                "acquirer": "gopay",
                "merchant_cross_reference_id": f"SIM-{tx.transaction_id[:8]}",
            }
        )
    elif tx.payment_type == "credit_card":
        denied = tx.transaction_status == "deny"
        body.update(
            {
                "masked_card": "48111111-1114",
                "card_type": "credit",
                "bank": tx.bank or "bni",
                "eci": "05",
                "channel_response_code": "05" if denied else "00",
                "channel_response_message": "Do not honor" if denied else "Approved",
            }
        )
        if tx.transaction_status in {"capture", "settlement", "refund", "partial_refund", "chargeback"}:
            body["approval_code"] = f"{int(tx.transaction_id[:8], 16) % 10**12:012d}"
    if tx.refunds:
        body["refund_amount"] = amount_format(tx.refund_amount)
        body["refunds"] = [{k: v for k, v in r.items() if k != "refund_key" or v} for r in tx.refunds]
    return body


def status_not_found_body() -> dict:
    return {"status_code": "404", "status_message": "Transaction doesn't exist.", "id": str(uuid.uuid4())}


def _core_error(status_code: str, message: str) -> SimApiError:
    # Core API errors come back as HTTP 200 with the code in the body, as status reads do
    # (reference §2: "HTTP status is 200 in practice"); the client handles either form.
    return SimApiError(200, {"status_code": status_code, "status_message": message, "id": str(uuid.uuid4())})


# --- Snap ---------------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def snap_payload_errors(payload) -> list[str]:
    """Midtrans' 400 error_messages for a Snap create body; empty when it is acceptable."""
    if payload is None:  # an empty body, or JSON null: what is required is missing
        payload = {}
    if not isinstance(payload, dict):
        return ["Request body is not a valid JSON object"]
    details = payload.get("transaction_details")
    if not isinstance(details, dict):
        return ["transaction_details is required"]
    errors: list[str] = []
    order_id = details.get("order_id")
    if order_id is None or order_id == "":
        errors.append("transaction_details.order_id is required")
    elif not isinstance(order_id, str):
        errors.append("transaction_details.order_id must be a string")
    else:
        if len(order_id) > 50:
            errors.append("transaction_details.order_id too long. Maximum 50 characters")
        if not SNAP_ORDER_ID_RE.match(order_id):
            errors.append(
                "transaction_details.order_id contains invalid characters. Allowed: letters, digits, '-', '_', '~', '.'"
            )
    gross = details.get("gross_amount")
    gross_ok = False
    if gross is None:
        errors.append("transaction_details.gross_amount is required")
    elif not _is_int(gross):
        errors.append("transaction_details.gross_amount must be an integer, decimals are not allowed")
    elif gross <= 0:
        errors.append("transaction_details.gross_amount must be greater than 0")
    else:
        gross_ok = True
    items = payload.get("item_details")
    if items is not None:
        if not isinstance(items, list):
            errors.append("item_details must be an array")
        else:
            total, items_ok = 0, True
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    errors.append(f"item_details[{i}] must be an object")
                    items_ok = False
                    continue
                price, quantity, name = item.get("price"), item.get("quantity"), item.get("name")
                if not _is_int(price):
                    errors.append(f"item_details[{i}].price must be an integer")
                    items_ok = False
                if not _is_int(quantity) or quantity < 1:
                    errors.append(f"item_details[{i}].quantity must be an integer of at least 1")
                    items_ok = False
                if not isinstance(name, str) or not name:
                    errors.append(f"item_details[{i}].name is required")
                elif len(name) > 50:
                    errors.append(f"item_details[{i}].name too long. Maximum 50 characters")
                for field in ("id", "brand", "category", "merchant_name"):
                    if isinstance(item.get(field), str) and len(item[field]) > 50:
                        errors.append(f"item_details[{i}].{field} too long. Maximum 50 characters")
                if items_ok:
                    total += price * quantity
            if items_ok and gross_ok and items and total != gross:
                errors.append(MSG_NOT_EQUAL)
    customer = payload.get("customer_details")
    if customer is not None:
        if not isinstance(customer, dict):
            errors.append("customer_details must be an object")
        else:
            for field in ("first_name", "last_name", "email", "phone"):
                value = customer.get(field)
                if value is not None and (not isinstance(value, str) or len(value) > 255):
                    errors.append(f"customer_details.{field} must be a string of at most 255 characters")
    enabled = payload.get("enabled_payments")
    if enabled is not None and (not isinstance(enabled, list) or not all(isinstance(e, str) for e in enabled)):
        errors.append("enabled_payments must be an array of strings")
    callbacks = payload.get("callbacks")
    if callbacks is not None and (
        not isinstance(callbacks, dict) or not all(isinstance(v, str) for v in callbacks.values())
    ):
        errors.append("callbacks must be an object of URL strings")
    errors.extend(_expiry_errors(payload, now=timezone.now()))
    return errors


def _unit_seconds(unit) -> int | None:
    """Seconds in a Snap expiry unit ("minute", "minutes", "HOUR" ...); None when it is not one."""
    if not isinstance(unit, str):
        return None
    name = unit.strip().lower()
    return EXPIRY_UNITS.get(name[:-1] if name.endswith("s") else name)


def _duration(spec: dict) -> timedelta:
    """The duration of a validated expiry or page_expiry object."""
    return timedelta(seconds=spec["duration"] * _unit_seconds(spec["unit"]))


def _start_time(spec: dict) -> datetime | None:
    """A validated expiry's start_time ("2026-01-01 10:00:00 +0700"), None when it has none."""
    raw = spec.get("start_time")
    return datetime.strptime(raw, "%Y-%m-%d %H:%M:%S %z") if raw else None


def _duration_errors(spec, name: str) -> list[str]:
    if not isinstance(spec, dict):
        return [f"{name} must be an object"]
    errors = []
    duration = spec.get("duration")
    if duration is None:
        errors.append(f"{name}.duration is required")
    elif not _is_int(duration) or duration <= 0:
        errors.append(f"{name}.duration must be a positive integer")
    if spec.get("unit") is None:
        errors.append(f"{name}.unit is required")
    elif _unit_seconds(spec["unit"]) is None:
        errors.append(f"{name}.unit must be one of: second, minute, hour, day (or their plurals)")
    return errors


def _expiry_errors(payload: dict, *, now: datetime) -> list[str]:
    """Midtrans' validation of `expiry` and `page_expiry` (reference §1, docs' JSON objects)."""
    errors: list[str] = []
    expiry = payload.get("expiry")
    if expiry is not None:
        expiry_errors = _duration_errors(expiry, "expiry")
        raw_start = expiry.get("start_time") if isinstance(expiry, dict) else None
        start = None
        if raw_start is not None:
            try:
                if not isinstance(raw_start, str) or not _START_TIME_RE.match(raw_start):
                    raise ValueError(raw_start)
                start = _start_time(expiry)
            except ValueError:
                expiry_errors.append(MSG_START_TIME)
        if not expiry_errors:
            duration = _duration(expiry)
            if duration < EXPIRY_MIN or (start is not None and start + duration < now + EXPIRY_MIN):
                expiry_errors.append("expiry must end at least 20 seconds after the transaction is created")
        errors.extend(expiry_errors)
    page_expiry = payload.get("page_expiry")
    if page_expiry is not None:
        page_errors = _duration_errors(page_expiry, "page_expiry")
        if not page_errors and _duration(page_expiry) < PAGE_EXPIRY_MIN:
            page_errors.append("page_expiry must be at least 5 minutes")
        errors.extend(page_errors)
    return errors


def _page_expires_at(payload: dict, *, now: datetime) -> datetime:
    """When a new token's payment page closes: page_expiry, else the expiry's end, else 24 h;
    never more than 7 days after the token (Midtrans' order of priority, "Expire a Snap Session")."""
    if payload.get("page_expiry") is not None:
        deadline = now + _duration(payload["page_expiry"])
    elif payload.get("expiry") is not None:
        deadline = (_start_time(payload["expiry"]) or now) + _duration(payload["expiry"])
    else:
        deadline = now + PAGE_EXPIRY_DEFAULT
    return min(deadline, now + SNAP_EXPIRY_MAX)


def page_expired(tx: SimTransaction, *, now: datetime | None = None) -> bool:
    """The payment page closed before a method was chosen (no notification: Midtrans sends none)."""
    return bool(tx.page_expires_at) and tx.page_expires_at <= (now or timezone.now()) and not tx.method_chosen


def order_id_used_message() -> str:
    """Snap's "order id already used" error in the simulator's language (MIDTRANS_SIMULATOR_LANGUAGE)."""
    return MSG_ORDER_ID_TAKEN if settings.MIDTRANS_SIMULATOR_LANGUAGE == "en" else MSG_ORDER_ID_USED


def snap_create(*, payload, redirect_base: str, notify: NotifyUrls | None = None) -> dict:
    """Snap create: returns {"token", "redirect_url"} or raises SimApiError(400) like Midtrans.

    `notify`: the call's X-Override-Notification / X-Append-Notification URLs.
    """
    errors = snap_payload_errors(payload)
    if errors:
        raise SimApiError(400, {"error_messages": errors})
    details = payload["transaction_details"]
    order_id, gross = details["order_id"], details["gross_amount"]
    callbacks = payload.get("callbacks") or {}
    now = timezone.now()
    notify = notify or NotifyUrls()
    fields = {
        "request_payload": payload,
        "gross_amount": gross,
        "enabled_payments": payload.get("enabled_payments") or [],
        "finish_url": callbacks.get("finish", ""),
        "error_url": callbacks.get("error", ""),
        "token_canceled_at": None,
        "token_created_at": now,
        "page_expires_at": _page_expires_at(payload, now=now),
        "notification_override_urls": notify.override,
        "notification_append_urls": notify.append,
    }
    for _ in range(3):  # a token collision, or the row gone between the INSERT and the lock, tries again
        token = str(uuid.uuid4())
        # A new order id (the checkout's usual case) is created here; one Snap already knows
        # is locked and judged below.
        _, created = SimTransaction.objects.get_or_create(order_id=order_id, defaults={"token": token, **fields})
        if created:
            return _snap_created(token=token, redirect_base=redirect_base)
        try:
            with transaction.atomic():
                tx = SimTransaction.objects.select_for_update().filter(order_id=order_id).first()
                if tx is None:
                    SimTransaction.objects.create(order_id=order_id, token=token, **fields)
                elif tx.method_chosen:
                    paid = tx.transaction_status in {"settlement", "capture", "refund", "partial_refund", "chargeback"}
                    message = MSG_PAID_AND_UTILIZED if paid else order_id_used_message()
                    raise SimApiError(400, {"error_messages": [message]})
                else:
                    # Before a method is chosen Midtrans issues a new token and the old one dies.
                    for name, value in fields.items():
                        setattr(tx, name, value)
                    tx.token = token
                    tx.save()
            return _snap_created(token=token, redirect_base=redirect_base)
        except IntegrityError:
            continue
    raise SimApiError(500, {"error_messages": ["Sorry, we encountered internal server error. Please try again."]})


def _snap_created(*, token: str, redirect_base: str) -> dict:
    return {"token": token, "redirect_url": f"{redirect_base.rstrip('/')}/snap/v4/redirection/{token}"}


def snap_cancel(*, token: str) -> dict:
    with transaction.atomic():
        tx = SimTransaction.objects.select_for_update().filter(token=token).first()
        if tx is None:
            raise SimApiError(404, {"error_messages": ["token not found"]})
        if tx.token_canceled_at:
            raise SimApiError(412, {"error_messages": ["token already canceled"]})
        if tx.method_chosen:
            raise SimApiError(412, {"error_messages": ["Transaction is on progress"]})
        tx.token_canceled_at = timezone.now()
        tx.save(update_fields=["token_canceled_at", "updated_at"])
    return {"canceled_at": time_format(tx.token_canceled_at)}


def methods_offered(tx: SimTransaction) -> list[tuple[str, str]]:
    """(key, label) of the methods the page shows, honouring enabled_payments."""
    if tx.enabled_payments:
        keys = {_ENABLED_ALIASES[e] for e in tx.enabled_payments if e in _ENABLED_ALIASES}
    else:
        keys = set(METHODS)
    return [(key, spec["label"]) for key, spec in METHODS.items() if key in keys]


def _expiry_after_choice(tx: SimTransaction, payment_type: str, now: datetime) -> datetime:
    """The payment's expiry_time: the request's expiry counted from its start_time (from now, the
    transaction time, when it has none), else the method's default; at most 7 days after the token."""
    expiry = tx.request_payload.get("expiry") if isinstance(tx.request_payload, dict) else None
    if isinstance(expiry, dict) and not _duration_errors(expiry, "expiry"):
        try:
            start = _start_time(expiry) or now
        except (TypeError, ValueError):  # validated at create; a row written by hand may differ
            start = now
        deadline = start + _duration(expiry)
    else:
        deadline = now + _DEFAULT_EXPIRY.get(payment_type, timedelta(hours=24))
    return min(deadline, (tx.token_created_at or now) + SNAP_EXPIRY_MAX)


@dataclass
class _Lookup:
    token: str | None = None
    order_id: str | None = None


def _locked(lookup: _Lookup) -> SimTransaction:
    qs = SimTransaction.objects.select_for_update()
    tx = qs.filter(token=lookup.token).first() if lookup.token else qs.filter(order_id=lookup.order_id).first()
    if tx is None:
        raise SimStateError("Transaksi tidak ditemukan.")
    return tx


def method_choose(*, method: str, token: str | None = None, order_id: str | None = None) -> SimTransaction:
    """The customer picks a method: the Core transaction now exists (pending) and a 201 notification goes out."""
    with transaction.atomic():
        tx = _locked(_Lookup(token=token, order_id=order_id))
        method_apply(tx, method=method)
        notification_queue(transaction=tx, payloads=[transaction_body(tx, for_notification=True)])
    return tx


def method_apply(tx: SimTransaction, *, method: str) -> None:
    """Make a locked, still open transaction pending with `method` (no notification queued here)."""
    if method not in METHODS:
        raise SimStateError(f"Metode pembayaran tidak dikenal: {method}")
    if tx.token_canceled_at:
        raise SimStateError("Sesi pembayaran ini sudah dibatalkan.")
    if tx.method_chosen:
        raise SimStateError("Metode pembayaran sudah dipilih untuk transaksi ini.")
    if method not in dict(methods_offered(tx)):
        raise SimStateError("Metode pembayaran ini tidak tersedia untuk transaksi ini.")
    spec = METHODS[method]
    now = timezone.now()
    if page_expired(tx, now=now):
        raise SimStateError("Sesi pembayaran ini sudah kedaluwarsa.")
    if _expiry_after_choice(tx, spec["payment_type"], now) <= now:
        raise SimStateError("Batas waktu pembayaran transaksi ini sudah lewat.")
    tx.transaction_id = str(uuid.uuid4())
    tx.payment_type = spec["payment_type"]
    tx.bank = spec["bank"]
    if spec["payment_type"] == "bank_transfer":
        tx.va_number = "12345" + "".join(secrets.choice("0123456789") for _ in range(6))
    tx.transaction_status = "pending"
    tx.fraud_status = "accept"
    tx.transaction_time = now
    tx.expiry_time = _expiry_after_choice(tx, spec["payment_type"], now)
    tx.save()


def transition_apply(
    tx: SimTransaction, *, event: str, refund_amount: int | None = None, refund_key: str = "", reason: str = ""
) -> None:
    """Change a locked transaction's state as Midtrans would; raises SimStateError when it would not."""
    allowed = TRANSITIONS[event]
    if tx.transaction_status not in allowed:
        raise SimStateError(f"Tidak bisa '{event}' dari status '{tx.transaction_status or 'belum memilih metode'}'.")
    now = timezone.now()
    if event == "settlement":
        tx.transaction_status, tx.fraud_status = "settlement", "accept"
        tx.settlement_time = now
    elif event == "capture":
        tx.transaction_status, tx.fraud_status = "capture", "accept"
        tx.settlement_time = None
    elif event == "challenge":
        if tx.payment_type != "credit_card":
            raise SimStateError("Status challenge hanya terjadi pada pembayaran kartu.")
        tx.transaction_status, tx.fraud_status = "capture", "challenge"
    elif event == "deny":
        tx.transaction_status = "deny"
        if tx.fraud_status == "challenge":
            tx.fraud_status = "deny"
    elif event == "reversal":
        # A bank reversal: Midtrans reports it as deny after settlement.
        tx.transaction_status = "deny"
    elif event in {"cancel", "expire", "chargeback"}:
        tx.transaction_status = event
    elif event in {"refund", "partial_refund"}:
        remaining = tx.gross_amount - tx.refund_amount
        amount = remaining if refund_amount is None else refund_amount
        if amount <= 0 or amount > remaining:
            raise SimStateError(f"Jumlah refund harus antara 1 dan {remaining}.")
        tx.refund_amount += amount
        refund_chargeback_id = len(tx.refunds) + 1
        tx.refunds = [
            *tx.refunds,
            {
                "refund_chargeback_id": refund_chargeback_id,
                "refund_amount": amount_format(amount),
                "created_at": time_format(now),
                "reason": reason,
                "refund_key": refund_key,
                # Refunds through the API; bank_confirmed_at is added once the bank confirms.
                "refund_method": "online",
            },
        ]
        tx.transaction_status = "refund" if tx.refund_amount >= tx.gross_amount else "partial_refund"
        # The bank confirms later (Midtrans' second notification): due work for this refund,
        # written in the same transaction as the refund itself.
        SimRefundConfirmation.objects.create(
            transaction=tx,
            refund_chargeback_id=refund_chargeback_id,
            due_at=now + timedelta(seconds=REFUND_CONFIRM_SECONDS / _compression()),
        )
    tx.save()


def _compression() -> float:
    return max(float(settings.MIDTRANS_SIMULATOR_TIME_COMPRESSION), 1e-9)


def refund_confirmation_apply(*, pk: int) -> list[int]:
    """Apply one due bank confirmation: stamp its refund and queue the notification, together.

    Returns the queued notification ids ([] when it is not due, already applied or gone).
    """
    transaction_pk = SimRefundConfirmation.objects.filter(pk=pk).values_list("transaction_id", flat=True).first()
    if transaction_pk is None:
        return []
    with transaction.atomic():
        # Lock order as everywhere else: the transaction, then the rows hanging off it.
        tx = SimTransaction.objects.select_for_update().filter(pk=transaction_pk).first()
        now = timezone.now()
        confirmation = (
            SimRefundConfirmation.objects.select_for_update()
            .filter(pk=pk, applied_at__isnull=True, due_at__lte=now)
            .first()
        )
        if tx is None or confirmation is None:
            return []
        stamp = time_format(now)
        tx.refunds = [
            {**refund, "bank_confirmed_at": stamp}
            if refund.get("refund_chargeback_id") == confirmation.refund_chargeback_id
            else refund
            for refund in tx.refunds
        ]
        tx.save(update_fields=["refunds", "updated_at"])
        confirmation.applied_at = now
        confirmation.save(update_fields=["applied_at"])
        return notification_queue(transaction=tx, payloads=[transaction_body(tx, for_notification=True)])


def refund_confirmations_apply_due(*, transaction_pks: list[int] | None = None, limit: int = 50) -> list[int]:
    """Apply every bank confirmation now due (optionally of these transactions); the queued ids."""
    due = SimRefundConfirmation.objects.filter(applied_at__isnull=True, due_at__lte=timezone.now())
    if transaction_pks is not None:
        due = due.filter(transaction_id__in=transaction_pks)
    queued: list[int] = []
    for pk in due.order_by("due_at", "id").values_list("pk", flat=True)[:limit]:
        queued.extend(refund_confirmation_apply(pk=pk))
    return queued


def outcome_apply(*, token: str, outcome: str) -> SimTransaction:
    """What the payment page's buttons do: pay, let expire, or get denied (then notify)."""
    event = {"expire": "expire", "deny": "deny"}.get(outcome)
    with transaction.atomic():
        tx = _locked(_Lookup(token=token))
        if outcome == "pay":
            event = "capture" if tx.payment_type == "credit_card" else "settlement"
        if event is None:
            raise SimStateError(f"Aksi tidak dikenal: {outcome}")
        transition_apply(tx, event=event)
        notification_queue(transaction=tx, payloads=[transaction_body(tx, for_notification=True)])
    return tx


def finish_redirect_url(tx: SimTransaction) -> str:
    """callbacks.finish plus Midtrans' (untrusted) query params."""
    from urllib.parse import urlencode, urlsplit, urlunsplit

    base = tx.finish_url
    if not base:
        return ""
    parts = urlsplit(base)
    params = urlencode(
        {"order_id": tx.order_id, "status_code": status_code_for(tx), "transaction_status": tx.transaction_status}
    )
    query = f"{parts.query}&{params}" if parts.query else params
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


# --- Core API -------------------------------------------------------------------------------------


def _find(identifier: str) -> SimTransaction | None:
    # An order id Snap accepted with characters outside the documented set (a space, "#") is
    # not found by Midtrans' Core API (midtrans-go#32); its transaction_id still is.
    tx = SimTransaction.objects.filter(order_id=identifier).first() if ORDER_ID_RE.match(identifier) else None
    if tx is None:
        tx = SimTransaction.objects.filter(transaction_id=identifier).exclude(transaction_id="").first()
    return tx


def status_read(*, identifier: str) -> dict:
    tx = _find(identifier)
    if tx is None or not tx.method_chosen:
        return status_not_found_body()
    if tx.transaction_status == "pending" and tx.expiry_time and tx.expiry_time <= timezone.now():
        tx = transaction_expire_if_due(pk=tx.pk) or tx
    # A bank confirmation that fell due is applied (with its notification) before answering,
    # as expiry is; only a transaction with an unconfirmed refund pays for the lookup.
    if any(not refund.get("bank_confirmed_at") for refund in tx.refunds) and refund_confirmations_apply_due(
        transaction_pks=[tx.pk]
    ):
        tx = SimTransaction.objects.get(pk=tx.pk)
    return transaction_body(tx, for_notification=False)


def transaction_expire_if_due(*, pk: int) -> SimTransaction | None:
    """Expire a pending transaction whose expiry_time has passed (and notify), as Midtrans does."""
    with transaction.atomic():
        tx = SimTransaction.objects.select_for_update().filter(pk=pk).first()
        if tx is None or tx.transaction_status != "pending" or not tx.expiry_time or tx.expiry_time > timezone.now():
            return tx
        transition_apply(tx, event="expire")
        notification_queue(transaction=tx, payloads=[transaction_body(tx, for_notification=True)])
        return tx


def transactions_expire_due(*, limit: int = 50) -> int:
    """Expire every pending transaction past its expiry_time; the sender thread runs this each round."""
    due = SimTransaction.objects.filter(transaction_status="pending", expiry_time__lte=timezone.now())
    pks = list(due.values_list("pk", flat=True)[:limit])
    for pk in pks:
        transaction_expire_if_due(pk=pk)
    return len(pks)


def _core_action(identifier: str, event: str, *, notify: NotifyUrls | None = None, **kwargs) -> SimTransaction:
    with transaction.atomic():
        found = _find(identifier)
        tx = SimTransaction.objects.select_for_update().filter(pk=found.pk).first() if found else None
        if tx is None or not tx.method_chosen:
            raise _core_error("404", "Transaction doesn't exist.")
        if notify is not None and notify.given:
            # A call naming new notification URLs sends this and later notifications there.
            tx.notification_override_urls, tx.notification_append_urls = notify.override, notify.append
        if event in {"approve", "deny_challenge"}:
            # Only a card payment held by the fraud check (capture + challenge) can be approved or denied.
            if (tx.transaction_status, tx.fraud_status) != ("capture", "challenge"):
                raise _core_error("412", MSG_STATE)
            if event == "approve":
                tx.fraud_status = "accept"
                tx.save()
            else:
                transition_apply(tx, event="deny")
            notification_queue(transaction=tx, payloads=[transaction_body(tx, for_notification=True)])
            return tx
        if event in {"refund", "partial_refund"}:
            if tx.payment_type not in REFUNDABLE_TYPES:
                raise _core_error("412", f"Payment type {tx.payment_type} does not support refund via API")
            key = kwargs.get("refund_key") or ""
            if key and any(r.get("refund_key") == key for r in tx.refunds):
                raise _core_error("406", "Duplicate refund ID")
            amount = kwargs.get("refund_amount")
            remaining = tx.gross_amount - tx.refund_amount
            if tx.transaction_status in TRANSITIONS[event] and amount is not None and amount > remaining:
                raise _core_error("414", "Refund request is rejected due to invalid amount")
        if tx.transaction_status not in TRANSITIONS[event]:
            raise _core_error("412", MSG_STATE)
        transition_apply(tx, event=event, **kwargs)
        notification_queue(transaction=tx, payloads=[transaction_body(tx, for_notification=True)])
        return tx


def _action_body(tx: SimTransaction, status_code: str, message: str) -> dict:
    body = transaction_body(tx, for_notification=False)
    body.pop("signature_key", None)
    body.update({"status_code": status_code, "status_message": message})
    return body


def transaction_cancel(*, identifier: str, notify: NotifyUrls | None = None) -> dict:
    tx = _core_action(identifier, "cancel", notify=notify)
    return _action_body(tx, "200", "Success, transaction is canceled")


def transaction_expire(*, identifier: str, notify: NotifyUrls | None = None) -> dict:
    tx = _core_action(identifier, "expire", notify=notify)
    return _action_body(tx, "407", "Success, transaction has expired")


def transaction_approve(*, identifier: str, notify: NotifyUrls | None = None) -> dict:
    """Approve a card payment the fraud check challenged (legacy FDS flow)."""
    tx = _core_action(identifier, "approve", notify=notify)
    return _action_body(tx, "200", "Success, transaction is approved")


def transaction_deny(*, identifier: str, notify: NotifyUrls | None = None) -> dict:
    """Deny a card payment the fraud check challenged (legacy FDS flow)."""
    tx = _core_action(identifier, "deny_challenge", notify=notify)
    return _action_body(tx, "200", "Success, transaction is denied")


def transaction_refund(*, identifier: str, body, notify: NotifyUrls | None = None) -> dict:
    if not isinstance(body, dict):
        body = {}
    amount = body.get("amount")
    if amount is not None and (not _is_int(amount) or amount <= 0):
        raise _core_error("400", "amount must be a positive integer")
    refund_key = body.get("refund_key") or ""
    if not isinstance(refund_key, str) or len(refund_key) > 100:
        raise _core_error("400", "refund_key must be a string of at most 100 characters")
    if refund_key and not REFUND_KEY_RE.match(refund_key):
        raise _core_error("400", "refund_key allowed characters are alphabets, numbers, dash (-), and underscore (_)")
    reason = str(body.get("reason") or "")[:255]
    # The bank's confirmation (Midtrans' second notification) was stored as due work with the
    # refund, in the same transaction; it is applied when due (refund_confirmation_apply).
    tx = _core_action(identifier, "refund", notify=notify, refund_amount=amount, refund_key=refund_key, reason=reason)
    refund = tx.refunds[-1]
    return {
        **_action_body(tx, "200", "Success, refund request is approved"),
        "refund_chargeback_id": refund["refund_chargeback_id"],
        "refund_amount": refund["refund_amount"],
        "refund_key": refund_key,
    }


# --- Idempotency-Key ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdempotencyClaim:
    """What an Idempotency-Key means for one call: ignored (no key), go ahead (`owned`),
    replay the stored success (`replay`: HTTP status and body), or wait (`in_progress`)."""

    key: str = ""
    owned: bool = False
    replay: tuple[int, dict] | None = None
    in_progress: bool = False


def idempotency_claim(*, key: str, operation: str) -> IdempotencyClaim:
    """Claim `key` for a Core API POST (committed at once, so a concurrent call sees it).

    Midtrans ignores a key longer than 46 characters; a key is global across endpoints and
    lives five minutes; a live key answers with its stored success, or 202 while the first
    call runs; an expired one is taken over by the new call.
    """
    if not key or len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        return IdempotencyClaim()
    for _ in range(3):  # the row may vanish (a failed first call) between the INSERT and the read
        now = timezone.now()
        try:
            existing, created = SimIdempotencyKey.objects.get_or_create(
                key=key, defaults={"operation": operation, "expires_at": now + IDEMPOTENCY_LIFETIME}
            )
        except IntegrityError:
            continue
        if created:
            return IdempotencyClaim(key=key, owned=True)
        if existing.expires_at <= now:
            taken = SimIdempotencyKey.objects.filter(pk=existing.pk, expires_at__lte=now).update(
                state=SimIdempotencyKey.State.IN_PROGRESS,
                operation=operation,
                http_status=None,
                body=None,
                expires_at=now + IDEMPOTENCY_LIFETIME,
            )
            if taken:
                return IdempotencyClaim(key=key, owned=True)
            continue
        if existing.state == SimIdempotencyKey.State.DONE:
            return IdempotencyClaim(key=key, replay=(existing.http_status, existing.body))
        return IdempotencyClaim(key=key, in_progress=True)
    return IdempotencyClaim(key=key, in_progress=True)


def idempotency_finish(*, claim: IdempotencyClaim, http_status: int, body, success: bool) -> None:
    """Store the owned call's success for replay, or forget the key after a failure."""
    if not claim.owned:
        return
    rows = SimIdempotencyKey.objects.filter(key=claim.key, state=SimIdempotencyKey.State.IN_PROGRESS)
    if success:
        rows.update(state=SimIdempotencyKey.State.DONE, http_status=http_status, body=body)
    else:
        rows.delete()


def idempotency_in_progress_body() -> dict:
    return {"status_code": "202", "status_message": "Request is still being processed, please retry later"}


# --- Call log -------------------------------------------------------------------------------------


def api_call_record(*, operation: str, order_id: str, http_status: int, fault: str) -> None:
    """Log one API call."""
    SimApiCall.objects.create(operation=operation, order_id=order_id[:64], http_status=http_status, fault=fault)
