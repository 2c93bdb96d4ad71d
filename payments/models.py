"""Payments data model: catalog, orders, Midtrans attempts, recorded events, audit.

Status fields change only through services (payments/services/), which lock the
row and consult the transition tables. The database enforces every invariant it can.
"""

import secrets

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.utils import timezone

CURRENCY_IDR = "IDR"

# Crockford-style alphabet: no 0/O, 1/I/L, U, so ids survive being read aloud.
_ORDER_ID_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_order_id() -> str:
    """A public order id such as `BF-20261122-7K3QX9AB` (date in Jakarta time + 8 random chars)."""
    day = timezone.localdate().strftime("%Y%m%d")
    suffix = "".join(secrets.choice(_ORDER_ID_ALPHABET) for _ in range(8))
    return f"BF-{day}-{suffix}"


class Package(models.Model):
    id = models.SlugField(primary_key=True, max_length=50)
    name = models.CharField(max_length=100)
    price = models.PositiveIntegerField(help_text="Integer rupiah.")
    currency = models.CharField(max_length=3, default=CURRENCY_IDR, editable=False)
    is_active = models.BooleanField(default=True)
    capacity = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seats for sale (paid + live pending orders). Empty = unlimited."
    )
    course_code = models.SlugField(max_length=50, blank=True, help_text="Defaults to the package id.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(price__gt=0),
                name="package_price_positive",
                violation_error_message="The price must be at least Rp 1 (a whole number of rupiah).",
            ),
            models.CheckConstraint(condition=Q(currency=CURRENCY_IDR), name="package_currency_idr"),
            models.CheckConstraint(condition=~Q(course_code=""), name="package_course_code_set"),
        ]

    def __str__(self):
        return f"{self.name} ({self.id})"

    def save(self, *args, **kwargs):
        if not self.course_code:
            self.course_code = self.id
        super().save(*args, **kwargs)


class DiscountCode(models.Model):
    class Kind(models.TextChoices):
        PERCENT = "percent", "Percent"
        FIXED = "fixed", "Fixed rupiah"

    code = models.CharField(max_length=40, unique=True, help_text="Stored upper-case; matched case-insensitively.")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    value = models.PositiveIntegerField(help_text="Percent (1-99) or integer rupiah.")
    package = models.ForeignKey(Package, null=True, blank=True, on_delete=models.PROTECT, related_name="discounts")
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    max_uses = models.PositiveIntegerField(null=True, blank=True)
    times_used = models.PositiveIntegerField(default=0, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=["percent", "fixed"]), name="discount_kind_valid"),
            models.CheckConstraint(
                condition=Q(value__gt=0),
                name="discount_value_positive",
                violation_error_message="The discount value must be at least 1.",
            ),
            models.CheckConstraint(
                condition=~Q(kind="percent") | Q(value__lt=100),
                name="discount_percent_below_100",
                violation_error_message="A percent discount must be between 1 and 99.",
            ),
            # No times_used <= max_uses constraint: a late payment is honoured past the limit
            # (payments.services.discounts); new redemptions stop at it (discount_redeem).
            models.CheckConstraint(
                condition=Q(starts_at__isnull=True) | Q(ends_at__isnull=True) | Q(ends_at__gt=F("starts_at")),
                name="discount_window_ordered",
                violation_error_message="The end of the validity window must be after its start.",
            ),
            models.CheckConstraint(condition=Q(code=models.functions.Upper("code")), name="discount_code_upper"),
        ]

    def __str__(self):
        return self.code

    @staticmethod
    def code_normalize(code: str | None) -> str:
        """How a code is stored and looked up: trimmed, upper-case ("lebaran " finds LEBARAN)."""
        return (code or "").strip().upper()


class OrderStatus(models.TextChoices):
    CREATED = "CREATED", "Created"  # committed, no Snap token yet
    PENDING_PAYMENT = "PENDING_PAYMENT", "Pending payment"  # payable at Midtrans
    PAID = "PAID", "Paid"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED", "Partially refunded"
    REFUNDED = "REFUNDED", "Refunded"
    CHARGEBACK = "CHARGEBACK", "Chargeback"
    EXPIRED = "EXPIRED", "Expired"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"


class LegacyPaidNotice(models.TextChoices):
    """Whether the old system already told the customer their payment was received."""

    SENT = "sent", "Sent by the old system"
    NOT_SENT = "not_sent", "Not sent by the old system"
    UNKNOWN = "unknown", "Unknown (the old system kept no record)"


class Order(models.Model):
    Status = OrderStatus
    LegacyPaidNotice = LegacyPaidNotice

    OPEN_STATUSES = (Status.CREATED, Status.PENDING_PAYMENT)

    id = models.CharField(primary_key=True, max_length=32, default=new_order_id, editable=False)
    package = models.ForeignKey(Package, on_delete=models.PROTECT, related_name="orders")
    discount_code = models.ForeignKey(
        DiscountCode, null=True, blank=True, on_delete=models.PROTECT, related_name="orders"
    )
    customer_name = models.CharField(max_length=100)
    customer_email = models.EmailField(max_length=254)
    customer_phone = models.CharField(max_length=20, help_text="E.164, e.g. +6281234567890.")
    list_price = models.PositiveIntegerField()
    discount_amount = models.PositiveIntegerField(default=0)
    amount = models.PositiveIntegerField(help_text="Final amount in integer rupiah.")
    refunded_amount = models.PositiveIntegerField(default=0)
    currency = models.CharField(max_length=3, default=CURRENCY_IDR, editable=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CREATED)
    expires_at = models.DateTimeField()
    paid_at = models.DateTimeField(null=True, blank=True)
    # Set when something needs a person: late payment, double payment, amount mismatch, reversal.
    needs_review = models.BooleanField(default=False)
    review_reason = models.TextField(blank=True)
    # The last time an operator closed a review case (payments.services.support.review_resolve).
    review_resolved_at = models.DateTimeField(null=True, blank=True)
    review_resolved_by = models.CharField(max_length=150, blank=True)
    review_resolution_note = models.TextField(blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True)
    referrer = models.TextField(blank=True)
    # Set on orders imported from the old systems (manage.py import_legacy): the old order id,
    # which is also the Midtrans order id of the order's only attempt.
    legacy_id = models.CharField(max_length=50, null=True, blank=True, unique=True, editable=False)
    legacy_source = models.CharField(max_length=20, blank=True, editable=False)
    legacy_paid_notice = models.CharField(max_length=10, choices=LegacyPaidNotice.choices, blank=True, editable=False)
    # What did not fit on import, e.g. "phone_unusable" (the phone is kept as written).
    legacy_flags = models.JSONField(default=list, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        # "Sync from Midtrans" calls Midtrans and may change payment state (expire a
        # transaction there, mark the order paid or expired): more than viewing allows.
        permissions = [
            ("sync_order", "Can sync order from Midtrans"),
            # Operator tools (issue 17): each moves money or customer data, so each has its own.
            ("refund_order", "Can refund order"),
            ("resolve_review", "Can resolve order review case"),
            ("correct_contact", "Can correct customer email or phone"),
            ("resend_access", "Can resend access message"),
            ("export_orders", "Can export orders as CSV"),
        ]
        indexes = [
            models.Index(fields=["status", "expires_at"], name="order_status_expires_idx"),
            models.Index(fields=["customer_email"], name="order_email_idx"),
            models.Index(fields=["customer_phone"], name="order_phone_idx"),
            models.Index(fields=["created_at"], name="order_created_idx"),
            # The open review cases only, so /metrics counts them without reading every order.
            models.Index(fields=["needs_review"], condition=Q(needs_review=True), name="order_needs_review_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=OrderStatus.values), name="order_status_valid"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="order_amount_positive"),
            models.CheckConstraint(
                condition=Q(amount=F("list_price") - F("discount_amount")), name="order_amount_is_price_minus_discount"
            ),
            models.CheckConstraint(condition=Q(refunded_amount__lte=F("amount")), name="order_refund_within_amount"),
            models.CheckConstraint(condition=Q(currency=CURRENCY_IDR), name="order_currency_idr"),
            models.CheckConstraint(condition=Q(customer_email=Lower("customer_email")), name="order_email_lowercase"),
            models.CheckConstraint(
                condition=~Q(status__in=["PAID", "PARTIALLY_REFUNDED", "REFUNDED", "CHARGEBACK"])
                | Q(paid_at__isnull=False),
                name="order_paid_has_paid_at",
            ),
            # At most one open order per email and package: a double click reuses it.
            models.UniqueConstraint(
                fields=["customer_email", "package"],
                condition=Q(status__in=["CREATED", "PENDING_PAYMENT"]),
                name="order_one_open_per_email_package",
            ),
        ]

    def __str__(self):
        return self.id


class AttemptStatus(models.TextChoices):
    INITIATED = "initiated", "Initiated"  # committed before Snap is called
    OPEN = "open", "Open"  # Snap token issued, no method chosen yet
    PENDING = "pending", "Pending"  # method chosen, waiting for money
    CHALLENGE = "challenge", "Held by fraud check"
    PAID = "paid", "Paid"
    FAILED = "failed", "Failed"  # deny, cancel, failure, or Snap create failed
    EXPIRED = "expired", "Expired"
    REVERSED = "reversed", "Reversed"  # deny after settlement
    PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
    REFUNDED = "refunded", "Refunded"
    CHARGEBACK = "chargeback", "Chargeback"


class PaymentAttempt(models.Model):
    """One Midtrans transaction (`order_id` at Midtrans), e.g. `BF-20261122-7K3QX9AB-1`."""

    Status = AttemptStatus

    LIVE_STATUSES = (Status.INITIATED, Status.OPEN, Status.PENDING, Status.CHALLENGE)

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    midtrans_order_id = models.CharField(max_length=50, unique=True)
    amount = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.INITIATED)
    snap_token = models.CharField(max_length=100, blank=True)
    redirect_url = models.URLField(max_length=500, blank=True)
    transaction_id = models.CharField(max_length=64, blank=True)
    transaction_status = models.CharField(max_length=32, blank=True, help_text="Last status Midtrans confirmed.")
    payment_type = models.CharField(max_length=32, blank=True)
    va_number = models.CharField(max_length=64, blank=True)
    fraud_status = models.CharField(max_length=16, blank=True)
    refunded_amount = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # When the reconciliation sweep last asked Midtrans about it: the sweep goes through
    # stale attempts oldest-checked first, so none starves behind the others.
    status_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order_id", "number"]
        indexes = [
            models.Index(fields=["status", "updated_at"], name="attempt_status_updated_idx"),
            # BI-SNAP channels name a transaction by its transaction id (see services.events._attempt_ref).
            models.Index(fields=["transaction_id"], name="attempt_transaction_id_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["order", "number"], name="attempt_number_unique_per_order"),
            models.CheckConstraint(condition=Q(number__gte=1), name="attempt_number_positive"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="attempt_amount_positive"),
            models.CheckConstraint(condition=Q(status__in=AttemptStatus.values), name="attempt_status_valid"),
            models.CheckConstraint(condition=Q(refunded_amount__lte=F("amount")), name="attempt_refund_within_amount"),
        ]

    def __str__(self):
        return self.midtrans_order_id


class EventSource(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"
    RECONCILE = "reconcile", "Reconciliation"
    ADMIN = "admin", "Admin sync"
    LEGACY = "legacy", "Imported from the old system"


class EventResult(models.TextChoices):
    RECEIVED = "received", "Received, not processed yet"
    APPLIED = "applied", "Applied"
    DUPLICATE = "duplicate", "Duplicate"
    STALE = "stale", "Stale, ignored"
    ORPHAN = "orphan", "Orphan (unknown Midtrans order id)"
    MISMATCH = "mismatch", "Amount mismatch, flagged"
    FAILED = "failed", "Failed"


class PaymentEvent(models.Model):
    """A verified Midtrans notification or status read, kept raw, applied at most once."""

    Source = EventSource

    Result = EventResult

    attempt = models.ForeignKey(PaymentAttempt, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    midtrans_order_id = models.CharField(max_length=50, db_index=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    dedup_key = models.CharField(max_length=128, unique=True)
    transaction_status = models.CharField(max_length=32, blank=True)
    status_code = models.CharField(max_length=8, blank=True)
    gross_amount = models.CharField(max_length=32, blank=True, help_text="Verbatim, e.g. '99000.00'.")
    payload = models.JSONField()
    confirmed_payload = models.JSONField(null=True, blank=True, help_text="What the status API said.")
    result = models.CharField(max_length=10, choices=Result.choices, default=Result.RECEIVED)
    error = models.TextField(blank=True)
    processing_attempts = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # The sweep retries unprocessed events least recently tried first, up to
    # RECONCILE_EVENT_MAX_ATTEMPTS tries; operators are alerted once (alerted_at) when an
    # event is given up or an orphan stays unmatched.
    last_tried_at = models.DateTimeField(null=True, blank=True)
    alerted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["result", "received_at"], name="event_result_received_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(source__in=EventSource.values), name="event_source_valid"),
            models.CheckConstraint(condition=Q(result__in=EventResult.values), name="event_result_valid"),
        ]

    def __str__(self):
        return f"{self.midtrans_order_id} {self.transaction_status} ({self.source})"


class IdempotencyRecord(models.Model):
    """Stripe-style Idempotency-Key: the first response, replayed for the same key and body."""

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"

    scope = models.CharField(max_length=50, help_text="The endpoint, e.g. 'checkout'.")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the canonical request body.")
    state = models.CharField(max_length=12, choices=State.choices, default=State.IN_PROGRESS)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    locked_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="idempotency_created_idx")]
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="idempotency_key_unique_per_scope"),
            models.CheckConstraint(condition=Q(state__in=["in_progress", "completed"]), name="idempotency_state_valid"),
            models.CheckConstraint(
                condition=Q(state="in_progress") | Q(response_status__isnull=False),
                name="idempotency_completed_has_response",
            ),
        ]

    def __str__(self):
        return f"{self.scope}:{self.key} ({self.state})"


class AuditEntry(models.Model):
    actor = models.CharField(max_length=150, help_text="'system', 'webhook', 'reconcile' or an operator's username.")
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    old_value = models.JSONField(null=True, blank=True)
    new_value = models.JSONField(null=True, blank=True)
    correlation_id = models.CharField(max_length=128, blank=True, help_text="Request id or task id.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object_idx")]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_type}:{self.object_id}"


class RefundReason(models.TextChoices):
    CUSTOMER_REQUEST = "customer_request", "Customer request"
    DUPLICATE = "duplicate", "Duplicate payment"
    FRAUD = "fraud", "Fraud"
    NOT_DELIVERED = "not_delivered", "Not delivered"
    OTHER = "other", "Other"


class RefundStatus(models.TextChoices):
    # Recorded (and asked of Midtrans, or about to be); money not confirmed back yet.
    REQUESTED = "requested", "Requested"
    # Midtrans lists the refund (notification or status read), or an offline refund was recorded.
    CONFIRMED = "confirmed", "Confirmed"
    # Midtrans refused it and does not list it: no money moved.
    FAILED = "failed", "Failed"


class Refund(models.Model):
    """Money sent back for one payment attempt, through Midtrans or by hand (offline).

    Created by payments.services.refunds only, committed BEFORE Midtrans is called, so a
    timeout then a retry reuses `refund_key` and Midtrans refuses to refund twice.
    """

    Reason = RefundReason
    Status = RefundStatus

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="refunds")
    attempt = models.ForeignKey(PaymentAttempt, on_delete=models.PROTECT, related_name="refunds")
    refund_key = models.CharField(max_length=100, unique=True, help_text="Sent to Midtrans; stable across retries.")
    amount = models.PositiveIntegerField(help_text="Integer rupiah.")
    reason = models.CharField(max_length=20, choices=Reason.choices)
    note = models.TextField(blank=True)
    offline = models.BooleanField(default=False, help_text="Sent back by hand, not through Midtrans.")
    offline_reference = models.CharField(max_length=200, blank=True, help_text="The bank transfer's reference.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.REQUESTED)
    operator = models.CharField(max_length=150, help_text="Username of the operator who asked for it.")
    # Midtrans took the request (HTTP 200, or 406 "Duplicate refund ID" on a retry).
    midtrans_accepted_at = models.DateTimeField(null=True, blank=True)
    midtrans_refund_id = models.CharField(max_length=32, blank=True, help_text="Midtrans' refund_chargeback_id.")
    tries = models.PositiveSmallIntegerField(default=0)
    # Why the last call did not settle the refund. Set (non-empty) only when the outcome is
    # unknown (timeout, 5xx) or refused; empty while a call is in flight.
    last_error = models.TextField(blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    bank_confirmed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [models.Index(fields=["status", "requested_at"], name="refund_status_requested_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
            models.CheckConstraint(condition=Q(status__in=RefundStatus.values), name="refund_status_valid"),
            models.CheckConstraint(condition=Q(reason__in=RefundReason.values), name="refund_reason_valid"),
            models.CheckConstraint(
                condition=Q(offline=False) | ~Q(offline_reference=""), name="refund_offline_has_reference"
            ),
            models.CheckConstraint(
                condition=~Q(status="confirmed") | Q(confirmed_at__isnull=False), name="refund_confirmed_has_time"
            ),
            models.CheckConstraint(condition=~Q(refund_key=""), name="refund_key_set"),
        ]

    def __str__(self):
        return f"{self.refund_key} ({self.status})"
