"""Checkout: from "I want the course" to a Snap payment page.

The order of things is the point of this module:

1. `order_create` commits the order and its first payment attempt (status `initiated`)
   in one transaction: capacity, "already owned", the discount redemption and the
   one-open-order-per-email-and-package rule are all decided there, under locks and
   database constraints, before anything leaves the building.
2. Only then is Snap called (`payments.midtrans.snap_create`), outside any transaction,
   so a notification can never arrive for an attempt that is not in the database.
3. The token is stored and the order becomes payable (`PENDING_PAYMENT`) in a second
   transaction, which also enqueues the payment instructions.

If Snap cannot be reached the attempt is marked failed and the order is kept (`CREATED`):
the next try (same Idempotency-Key, the pay endpoint, or simply checking out again)
opens attempt n+1 on the same order, never a second order.

Lock order everywhere: package (only when it has a capacity), then order, then attempt.
"""

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import phonenumbers
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from payments import midtrans
from payments.models import AttemptStatus, DiscountCode, Order, OrderStatus, Package, PaymentAttempt
from payments.notices import notice_expired, notice_payment_instructions
from payments.selectors import (
    order_open_for,
    package_for_checkout,
    package_seats_taken,
)
from payments.services.audit import audit_batch, audit_record
from payments.services.discounts import (
    MSG_EXHAUSTED,
    MSG_UNKNOWN,
    discount_amount_compute,
    discount_problem,
    discount_redeem,
)
from payments.services.events import attempt_status_set, order_status_set
from payments.states import CLOSED_ORDER_STATUSES, EVER_PAID_ORDER_STATUSES, PAYABLE_ATTEMPT_STATUSES, order_lock

logger = logging.getLogger(__name__)

ACTOR = "checkout"
OPEN_CONSTRAINT = "order_one_open_per_email_package"


# How long a caller waits for another request's Snap call on the same order (a double click)
# before answering "try again"; polled, never holding a transaction open.
_WAIT_POLL_SECONDS = 0.05
_IN_FLIGHT_WAIT_SECONDS = 2.0

# Customer-facing messages (Bahasa Indonesia).
MSG_PACKAGE_UNKNOWN = "Paket tidak ditemukan."
MSG_PACKAGE_INACTIVE = "Paket ini sedang tidak dijual."
MSG_PHONE_INVALID = "Nomor WhatsApp tidak valid. Contoh: 0812 3456 7890."
MSG_PHONE_NOT_MOBILE = "Gunakan nomor ponsel (WhatsApp), bukan nomor telepon rumah/kantor."


# --- Errors -------------------------------------------------------------------------------------


class CheckoutError(Exception):
    """A checkout that cannot go on. `code` is the contract's error code."""

    code = "checkout_error"
    message = "Checkout tidak dapat diproses."

    def __init__(self, message: str | None = None, *, order_id: str | None = None):
        self.message = message or self.message
        self.order_id = order_id
        super().__init__(self.message)


class CheckoutInvalid(CheckoutError):
    code = "invalid_request"
    message = "Periksa kembali data yang Anda isi."

    def __init__(self, fields: dict[str, str], message: str | None = None):
        self.fields = fields
        super().__init__(message)


class SoldOut(CheckoutError):
    code = "sold_out"
    message = "Maaf, kuota paket ini sudah habis."


class AlreadyOwned(CheckoutError):
    code = "already_owned"
    message = "Email ini sudah memiliki akses ke kelas ini. Silakan cek email Anda untuk tautan akses."


class AlreadyPaid(CheckoutError):
    code = "already_paid"
    message = "Pesanan ini sudah dibayar."


class OrderExpired(CheckoutError):
    code = "order_expired"
    message = "Pesanan ini sudah tidak berlaku. Silakan buat pesanan baru."


class GatewayUnavailable(CheckoutError):
    code = "payment_gateway_unavailable"
    message = (
        "Layanan pembayaran sedang tidak dapat dihubungi. Pesanan Anda tersimpan; silakan coba lagi sebentar lagi."
    )

    def __init__(self, message: str | None = None, *, order_id: str | None = None, retry_after: int = 5):
        self.retry_after = retry_after
        super().__init__(message, order_id=order_id)


# --- Input normalisation -----------------------------------------------------------------------------


def phone_normalize(*, raw: str) -> str:
    """An Indonesian (or other) mobile number in E.164: 0812…, 62812…, +62 812-… -> +62812…

    Raises ValueError with a customer-facing message.
    """
    text = (raw or "").strip()
    digits = "".join(ch for ch in text if ch.isdigit())
    if not digits or len(digits) > 17:
        raise ValueError(MSG_PHONE_INVALID)
    if text.startswith("+"):
        candidate = "+" + digits
    elif text.startswith("00"):
        candidate = "+" + digits[2:]
    elif digits.startswith("62"):
        # Written with the country code but without "+", as Indonesians often do.
        candidate = "+" + digits
    else:
        candidate = digits
    try:
        number = phonenumbers.parse(candidate, "ID")
    except phonenumbers.NumberParseException as exc:
        raise ValueError(MSG_PHONE_INVALID) from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError(MSG_PHONE_INVALID)
    if phonenumbers.number_type(number) not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise ValueError(MSG_PHONE_NOT_MOBILE)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def package_problem(*, package: Package | None) -> str | None:
    if package is None:
        return MSG_PACKAGE_UNKNOWN
    if not package.is_active:
        return MSG_PACKAGE_INACTIVE
    return None


@dataclass(frozen=True)
class RequestMeta:
    client_ip: str | None = None
    user_agent: str = ""
    referrer: str = ""


@dataclass(frozen=True)
class CheckoutResult:
    order: Order
    attempt: PaymentAttempt
    created: bool  # a new order (201) rather than the customer's live open order (200, reused)


@dataclass(frozen=True)
class PayResult:
    order: Order
    attempt: PaymentAttempt
    new_attempt: bool  # 201 when a new attempt was opened, 200 when the live one is returned


# --- Checkout ------------------------------------------------------------------------------------


def checkout_start(
    *,
    package_id: str,
    name: str,
    email: str,
    phone: str,
    discount_code: str = "",
    meta: RequestMeta | None = None,
    resume_order_id: str | None = None,
    package: Package | None = None,
) -> CheckoutResult:
    """The whole checkout. `resume_order_id`: the order an earlier try with the same Idempotency-Key made.

    `package`: what package_for_checkout() answered for this package and email, when the caller
    read it already (the API validates the package with it); it is then not read again.
    """
    if resume_order_id:
        pay = order_pay(order_id=resume_order_id)
        return CheckoutResult(order=pay.order, attempt=pay.attempt, created=True)

    order, attempt = order_create(
        package_id=package_id,
        name=name,
        email=email,
        phone=phone,
        discount_code=discount_code,
        meta=meta or RequestMeta(),
        package=package,
    )
    if attempt is None:
        # The customer's live open order: hand back its payment page (or open one).
        pay = order_pay(order_id=order.id)
        logger.info("checkout_reused", extra={"order_id": order.id})
        return CheckoutResult(order=pay.order, attempt=pay.attempt, created=False)
    order, attempt = _attempt_snap_open(order=order, attempt=attempt)
    return CheckoutResult(order=order, attempt=attempt, created=True)


def order_create(
    *,
    package_id: str,
    name: str,
    email: str,
    phone: str,
    discount_code: str = "",
    meta: RequestMeta,
    package: Package | None = None,
) -> tuple[Order, PaymentAttempt | None]:
    """Commit a new order and its first attempt, or return the live open order (attempt None).

    `package`: as in checkout_start(); used only when it was read for this very package and email.
    Raises CheckoutInvalid, AlreadyOwned or SoldOut, having changed nothing.
    """
    now = timezone.now()
    email = email.strip().lower()
    if package is None or package.pk != package_id or getattr(package, "checkout_email", None) != email:
        package = package_for_checkout(package_id=package_id, email=email)
    if package is not None and package.open_order_id is not None:
        existing = _order_open_live(email=email, package_id=package_id, now=now)
        if existing is not None:
            return existing, None
        # The open order that read saw is gone: expired, or paid a moment ago, and then the
        # customer owns the course. Read again, so ownership is judged after that payment.
        package = package_for_checkout(package_id=package_id, email=email)

    try:
        with transaction.atomic(), audit_batch():
            order, attempt = _order_insert(
                package=package,
                name=name.strip(),
                email=email,
                phone=phone,
                discount_code=DiscountCode.code_normalize(discount_code),
                meta=meta,
                now=now,
            )
    except IntegrityError as exc:
        if not open_order_conflict(exc):
            raise
        # A concurrent request (a double click) committed the open order first: use that one.
        existing = _order_open_live(email=email, package_id=package_id, now=timezone.now())
        if existing is None:
            raise
        logger.info("checkout_open_order_race", extra={"order_id": existing.id})
        return existing, None
    logger.info(
        "order_created",
        extra={
            "order_id": order.id,
            "package_id": order.package_id,
            "amount": order.amount,
            "discount_code": order.discount_code.code if order.discount_code else "",
        },
    )
    return order, attempt


def open_order_conflict(exc: IntegrityError) -> bool:
    """Whether the one-open-order constraint refused an order. PostgreSQL names the violated
    constraint in the error's diagnostics; SQLite (the demo) only says which columns, in a
    message that carries no values. Never a search in PostgreSQL's text: its DETAIL line
    quotes the row, so a customer's name could contain any word."""
    constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
    if constraint is not None:
        return constraint == OPEN_CONSTRAINT
    meta = Order._meta
    columns = ", ".join(f"{meta.db_table}.{meta.get_field(name).column}" for name in ("customer_email", "package"))
    return str(exc) == f"UNIQUE constraint failed: {columns}"


def _order_open_live(*, email: str, package_id: str, now: datetime) -> Order | None:
    """The open order of email+package inside its window; a stale one is expired first."""
    order = order_open_for(email=email, package_id=package_id)
    if order is None:
        return None
    if order.expires_at > now:
        return order
    order_expire_stale(order_id=order.id)
    return None


def _order_insert(
    *, package: Package | None, name: str, email: str, phone: str, discount_code: str, meta: RequestMeta, now: datetime
) -> tuple[Order, PaymentAttempt]:
    """`package`: as package_for_checkout() read it just before this transaction (None: unknown id)."""
    owned = package is not None and package.owned
    if package is not None and package.capacity is not None:
        # Seats are counted under the package lock, so concurrent checkouts queue here
        # and the last seat is sold exactly once. Unlimited packages skip the lock.
        package = Package.objects.select_for_update().get(pk=package.pk)

    fields = {}
    problem = package_problem(package=package)
    if problem:
        fields["package_id"] = problem
    discount = None
    if discount_code:
        discount = DiscountCode.objects.filter(code=discount_code).first()
        if discount is None:
            fields["discount_code"] = MSG_UNKNOWN
        elif package is not None:
            problem = discount_problem(discount=discount, package=package, now=now)
            if problem:
                fields["discount_code"] = problem
    if fields:
        raise CheckoutInvalid(fields)

    if owned:
        raise AlreadyOwned
    if package.capacity is not None and package_seats_taken(package=package, now=now) >= package.capacity:
        logger.info("checkout_sold_out", extra={"package_id": package.id, "capacity": package.capacity})
        raise SoldOut

    discount_amount = 0
    if discount is not None:
        if not discount_redeem(discount_id=discount.pk):
            raise CheckoutInvalid({"discount_code": MSG_EXHAUSTED})
        discount_amount = discount_amount_compute(discount=discount, price=package.price)

    order = Order(
        package=package,
        discount_code=discount,
        customer_name=name,
        customer_email=email,
        customer_phone=phone,
        list_price=package.price,
        discount_amount=discount_amount,
        amount=package.price - discount_amount,
        status=OrderStatus.CREATED,
        expires_at=now + timedelta(minutes=settings.ORDER_PAYMENT_WINDOW_MINUTES),
        client_ip=meta.client_ip,
        user_agent=meta.user_agent[:1000],
        referrer=meta.referrer[:2000],
    )
    attempt = _attempt_new(order=order, number=1)
    # Like create(): an IntegrityError when a constraint refuses the order (the one-open-order
    # rule included); both rows are part of the caller's transaction.
    order.save(force_insert=True)
    attempt.save(force_insert=True)
    audit_record(
        actor=ACTOR,
        action="order_created",
        obj=order,
        new_value={
            "status": order.status,
            "package_id": package.id,
            "list_price": order.list_price,
            "discount_code": discount.code if discount else None,
            "discount_amount": discount_amount,
            "amount": order.amount,
            "expires_at": order.expires_at.isoformat(),
        },
    )
    _attempt_created_audit(attempt=attempt)
    return order, attempt


def _attempt_new(*, order: Order, number: int) -> PaymentAttempt:
    return PaymentAttempt(
        order=order,
        number=number,
        midtrans_order_id=f"{order.id}-{number}",
        amount=order.amount,
        status=AttemptStatus.INITIATED,
    )


def _attempt_insert(*, order: Order, number: int) -> PaymentAttempt:
    attempt = _attempt_new(order=order, number=number)
    attempt.save(force_insert=True)
    _attempt_created_audit(attempt=attempt)
    return attempt


def _attempt_created_audit(*, attempt: PaymentAttempt) -> None:
    audit_record(
        actor=ACTOR,
        action="attempt_created",
        obj=attempt,
        new_value={"status": attempt.status, "midtrans_order_id": attempt.midtrans_order_id, "amount": attempt.amount},
    )


# --- Paying (again) ----------------------------------------------------------------------------------


def order_pay(*, order_id: str) -> PayResult:
    """The order's live payment page, or a new attempt when there is none.

    Raises AlreadyPaid, OrderExpired, GatewayUnavailable; Order.DoesNotExist for an unknown id.
    """
    waited = False
    while True:
        decision = _order_pay_decide(order_id=order_id)
        if isinstance(decision, PayResult):
            return decision
        kind, value = decision
        if kind == "new":
            order, attempt = _attempt_snap_open(order=value.order, attempt=value)
            return PayResult(order=order, attempt=attempt, new_attempt=True)
        if kind == "expired":
            raise OrderExpired(order_id=order_id)
        # kind == "in_flight": another request is calling Snap for this order right now.
        if waited:
            raise GatewayUnavailable(
                "Pembayaran sedang disiapkan. Silakan coba lagi sebentar lagi.", order_id=order_id, retry_after=2
            )
        _attempt_wait(attempt_id=value)
        waited = True


def _snap_budget_seconds() -> float:
    return float(settings.MIDTRANS_CONNECT_TIMEOUT) + float(settings.MIDTRANS_READ_TIMEOUT)


def _order_pay_decide(*, order_id: str):
    now = timezone.now()
    with transaction.atomic():
        order = order_lock(order_id=order_id)
        if order.status in EVER_PAID_ORDER_STATUSES:
            raise AlreadyPaid(order_id=order.id)
        if order.status in CLOSED_ORDER_STATUSES:
            return ("expired", None)
        if order.expires_at <= now:
            _order_status_set(order=order, new=OrderStatus.EXPIRED, reason="payment window over")
            notice_expired(order=order)
            return ("expired", None)

        latest = PaymentAttempt.objects.select_for_update().filter(order=order).order_by("-number").first()
        if latest is not None and latest.status in PAYABLE_ATTEMPT_STATUSES and latest.snap_token:
            return PayResult(order=order, attempt=latest, new_attempt=False)
        if latest is not None and latest.status == AttemptStatus.INITIATED:
            # Another request's Snap call; if it outlived every timeout, that request died.
            if latest.created_at > now - timedelta(seconds=_snap_budget_seconds() + 5):
                return ("in_flight", latest.id)
            _attempt_status_set(attempt=latest, new=AttemptStatus.FAILED, reason="abandoned: no Snap answer recorded")
        number = (latest.number + 1) if latest else 1
        return ("new", _attempt_insert(order=order, number=number))


def _attempt_wait(*, attempt_id: int) -> None:
    """Wait briefly for another request's Snap call (a double click, a resumed key): long
    enough for a healthy Midtrans to answer, short enough that a slow one does not hold
    this thread too (the caller then answers 503 "being prepared", Retry-After 2)."""
    deadline = time.monotonic() + min(_IN_FLIGHT_WAIT_SECONDS, _snap_budget_seconds())
    while time.monotonic() < deadline:
        status = PaymentAttempt.objects.filter(pk=attempt_id).values_list("status", flat=True).first()
        if status != AttemptStatus.INITIATED:
            return
        time.sleep(_WAIT_POLL_SECONDS)


# --- Snap ------------------------------------------------------------------------------------------


def snap_payload_build(*, order: Order, attempt: PaymentAttempt, now: datetime | None = None) -> dict:
    """The Snap request: amounts from our database only; the items add up to gross_amount."""
    now = now or timezone.now()
    package = order.package
    items = [
        {
            "id": package.id[:50],
            "price": order.list_price,
            "quantity": 1,
            "name": package.name[:50],
            "category": "course",
        }
    ]
    if order.discount_amount:
        code = order.discount_code.code if order.discount_code else ""
        items.append(
            {
                "id": f"discount-{code}"[:50],
                "price": -order.discount_amount,
                "quantity": 1,
                "name": f"Diskon {code}".strip()[:50],
                "category": "discount",
            }
        )
    if sum(item["price"] * item["quantity"] for item in items) != attempt.amount:
        # The database constraints make this impossible; refusing beats a Midtrans 400.
        raise ValueError(f"item_details do not add up to {attempt.amount} for {attempt.midtrans_order_id}")
    # Midtrans closes the payment when our order's window closes (rounded up to a minute).
    remaining = (order.expires_at - now).total_seconds()
    duration = max(1, math.ceil(remaining / 60))
    return {
        "transaction_details": {"order_id": attempt.midtrans_order_id, "gross_amount": attempt.amount},
        "item_details": items,
        "customer_details": {
            "first_name": order.customer_name,
            "email": order.customer_email,
            "phone": order.customer_phone,
        },
        "expiry": {
            "start_time": timezone.localtime(now).strftime("%Y-%m-%d %H:%M:%S %z"),
            "unit": "minute",
            "duration": duration,
        },
        "credit_card": {"secure": True},
        "callbacks": {"finish": f"{settings.PUBLIC_BASE_URL}/orders/{order.id}/"},
        "custom_field1": order.id,
    }


def _attempt_snap_open(*, order: Order, attempt: PaymentAttempt) -> tuple[Order, PaymentAttempt]:
    """Ask Snap for a token for a committed `initiated` attempt; store it and make the order payable.

    Returns the order and attempt, updated to what was committed.
    """
    payload = snap_payload_build(order=order, attempt=attempt)
    try:
        snap = midtrans.snap_create(payload=payload)
    except midtrans.MidtransError as exc:
        _attempt_snap_failed(order_id=order.pk, attempt_id=attempt.pk, error=exc)
        raise GatewayUnavailable(order_id=order.id, retry_after=_retry_after(exc)) from exc

    with transaction.atomic(), audit_batch():
        # Lock order: the order, then the attempt.
        made_payable = _order_lock_for_token(order=order)
        if not _attempt_token_store(attempt=attempt, snap=snap):
            # Another request gave up on this attempt (it took longer than every timeout).
            # Raising rolls back the order's change too.
            status = PaymentAttempt.objects.filter(pk=attempt.pk).values_list("status", flat=True).first()
            logger.warning(
                "snap_token_too_late",
                extra={"order_id": order.id, "midtrans_order_id": attempt.midtrans_order_id, "status": status},
            )
            raise GatewayUnavailable(order_id=order.id, retry_after=1)
        if made_payable:
            # The row is written already; this checks the transition table and audits it.
            order_status_set(
                order=order,
                new=OrderStatus.PENDING_PAYMENT,
                actor=ACTOR,
                reason=f"snap token for {attempt.midtrans_order_id}",
            )
        if order.status == OrderStatus.PENDING_PAYMENT:
            notice_payment_instructions(order=order, attempt=attempt)
    logger.info(
        "snap_token_issued",
        extra={"order_id": order.id, "midtrans_order_id": attempt.midtrans_order_id, "amount": attempt.amount},
    )
    return order, attempt


def _order_lock_for_token(*, order: Order) -> bool:
    """Lock the order before its attempt's token is stored. True when this also made the row
    payable (CREATED -> PENDING_PAYMENT): `order.status` is then still CREATED, for the caller
    to record the transition once the attempt is open; otherwise it is the status read under
    the lock.

    A new order, the common case, takes one conditional UPDATE that locks and changes the row
    together (a locking read and a save took two round trips). Only the status is ever read
    back: the rest of the row is as this request wrote it (nothing but status changes touch an
    order before it is payable), so the objects in hand stay the source for the answer.
    """
    now = timezone.now()
    made_payable = Order.objects.filter(pk=order.pk, status=OrderStatus.CREATED).update(
        status=OrderStatus.PENDING_PAYMENT, updated_at=now
    )
    if made_payable:
        order.status, order.updated_at = OrderStatus.CREATED, now
        return True
    order.status = Order.objects.select_for_update().filter(pk=order.pk).values_list("status", flat=True).get()
    return False


def _attempt_token_store(*, attempt: PaymentAttempt, snap: midtrans.SnapTransaction) -> bool:
    """Store Snap's token and open the attempt, if it is still `initiated`. False when it is not.

    One conditional UPDATE both locks the row and checks its status (under READ COMMITTED it
    waits for a concurrent writer and then sees that writer's status), where a locking read
    and a save took two round trips. Call with the order locked.
    """
    now = timezone.now()
    stored = PaymentAttempt.objects.filter(pk=attempt.pk, status=AttemptStatus.INITIATED).update(
        status=AttemptStatus.OPEN, snap_token=snap.token, redirect_url=snap.redirect_url, updated_at=now
    )
    if not stored:
        return False
    attempt.status = AttemptStatus.INITIATED  # as the UPDATE found it: the transition and audit below start there
    attempt.snap_token, attempt.redirect_url, attempt.updated_at = snap.token, snap.redirect_url, now
    attempt_status_set(attempt=attempt, new=AttemptStatus.OPEN, actor=ACTOR, reason="snap token issued")
    return True


def _attempt_snap_failed(*, order_id: str, attempt_id: int, error: Exception) -> None:
    with transaction.atomic():
        order_lock(order_id=order_id)
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.status == AttemptStatus.INITIATED:
            _attempt_status_set(
                attempt=attempt, new=AttemptStatus.FAILED, reason=f"snap create failed: {type(error).__name__}: {error}"
            )
    # Timeouts and 5xx are Midtrans' trouble; anything else (401: wrong server key, 400: a
    # request Midtrans refuses) is ours and fails every checkout until someone fixes it.
    level = logging.WARNING if isinstance(error, midtrans.MidtransUnavailable) else logging.ERROR
    logger.log(
        level,
        "snap_create_failed",
        extra={
            "order_id": attempt.order_id,
            "midtrans_order_id": attempt.midtrans_order_id,
            "error": type(error).__name__,
            "detail": str(error)[:300],
        },
    )


def _retry_after(exc: Exception) -> int:
    """Seconds the customer should wait: what the breaker or Midtrans said, else a few seconds."""
    said = getattr(exc, "retry_after", None)  # open circuit: its cool-down left; 429: Midtrans' Retry-After
    if said:
        return max(1, min(math.ceil(float(said)), 300))
    if isinstance(exc, midtrans.MidtransCircuitOpen):
        return max(1, math.ceil(float(settings.MIDTRANS_BREAKER_COOLDOWN)))
    return 5


# --- Expiry of stale open orders --------------------------------------------------------------------


def order_expire_stale(*, order_id: str) -> bool:
    """Expire an open order whose payment window is over. True when this call expired it."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.status not in Order.OPEN_STATUSES or order.expires_at > timezone.now():
            return False
        _order_status_set(order=order, new=OrderStatus.EXPIRED, reason="payment window over")
        notice_expired(order=order)
    logger.info("order_expired", extra={"order_id": order_id, "by": ACTOR})
    return True


# --- Status changes (locked rows only; the transition tables live in payments/states.py) ------------


def _order_status_set(*, order: Order, new: str, reason: str) -> None:
    order_status_set(order=order, new=new, actor=ACTOR, reason=reason)
    order.save(update_fields=["status", "updated_at"])


def _attempt_status_set(*, attempt: PaymentAttempt, new: str, reason: str, extra_fields=()) -> None:
    attempt_status_set(attempt=attempt, new=new, actor=ACTOR, reason=reason[:300])
    fields = ["status", "updated_at", *extra_fields]
    if new == AttemptStatus.FAILED:
        attempt.last_error = reason[:2000]
        fields.append("last_error")
    attempt.save(update_fields=fields)
