"""Simulator state, in the database so every web process (gunicorn worker) shares it.

These tables belong to the simulator only; nothing in the product reads them.
"""

from django.db import models


class SimTransaction(models.Model):
    """One Midtrans order id: its live Snap token and, once a method is chosen, the Core transaction."""

    order_id = models.CharField(max_length=50, unique=True)
    # The live Snap token. A new Snap create for the same order id before a method is
    # chosen replaces it (the old token dies), as Midtrans does.
    token = models.CharField(max_length=64, unique=True)
    token_canceled_at = models.DateTimeField(null=True, blank=True)
    request_payload = models.JSONField(default=dict)
    gross_amount = models.BigIntegerField()
    enabled_payments = models.JSONField(default=list, blank=True)
    finish_url = models.CharField(max_length=2000, blank=True)
    error_url = models.CharField(max_length=2000, blank=True)
    # Empty until the customer picks a method on the payment page (status API says 404 till then).
    transaction_id = models.CharField(max_length=64, blank=True, db_index=True)
    payment_type = models.CharField(max_length=32, blank=True)
    bank = models.CharField(max_length=16, blank=True)
    va_number = models.CharField(max_length=32, blank=True)
    transaction_status = models.CharField(max_length=32, blank=True)
    fraud_status = models.CharField(max_length=16, blank=True)
    transaction_time = models.DateTimeField(null=True, blank=True)
    settlement_time = models.DateTimeField(null=True, blank=True)
    expiry_time = models.DateTimeField(null=True, blank=True)
    # When the live token was issued, and when its payment page closes (page_expiry, else
    # the request's expiry, else 24 h; Midtrans sends no notification when it does).
    token_created_at = models.DateTimeField(null=True, blank=True)
    page_expires_at = models.DateTimeField(null=True, blank=True)
    # X-Override-Notification / X-Append-Notification of the latest call naming this transaction:
    # where its notifications go instead of, or besides, MIDTRANS_NOTIFICATION_URL.
    notification_override_urls = models.JSONField(default=list, blank=True)
    notification_append_urls = models.JSONField(default=list, blank=True)
    refund_amount = models.BigIntegerField(default=0)
    # Each refund: refund_chargeback_id, refund_amount, created_at, reason, refund_key, refund_method,
    # and bank_confirmed_at only once the bank confirmed it.
    refunds = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.order_id} {self.transaction_status or 'open'}"

    @property
    def method_chosen(self) -> bool:
        return bool(self.transaction_status)


class SimRefundConfirmation(models.Model):
    """The bank's confirmation of one refund: due work, applied when due.

    Midtrans sends two notifications for a refund: at once without, then later with the
    refund's bank_confirmed_at (reference §2). The refund itself writes only this row (in
    the same transaction); when it is due, bank_confirmed_at is stamped on exactly this
    refund and its notification queued, together, so the status API never shows the
    confirmation before the notification announcing it exists.
    """

    transaction = models.ForeignKey(SimTransaction, on_delete=models.CASCADE, related_name="refund_confirmations")
    refund_chargeback_id = models.PositiveIntegerField()
    due_at = models.DateTimeField()
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["due_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["transaction", "refund_chargeback_id"], name="simrefundconf_once_per_refund"
            )
        ]
        indexes = [models.Index(fields=["applied_at", "due_at"], name="simrefundconf_due_idx")]

    def __str__(self):
        return f"refund {self.refund_chargeback_id} of {self.transaction_id} due {self.due_at:%H:%M:%S}"


class SimNotification(models.Model):
    """One HTTP notification to deliver, with Midtrans' retry bookkeeping. The queue of the dispatcher."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to be sent"
        SENDING = "sending", "Being sent"
        DELIVERED = "delivered", "Answered 2xx"
        FAILED = "failed", "Given up"

    transaction = models.ForeignKey(SimTransaction, on_delete=models.CASCADE, related_name="notifications")
    # The exact JSON body; a trigger may have tampered with it on purpose.
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    due_at = models.DateTimeField()
    locked_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # Where to send it; empty = MIDTRANS_NOTIFICATION_URL, read at send time.
    target_url = models.CharField(max_length=2000, blank=True)
    url = models.CharField(max_length=2000, blank=True, help_text="Where the last attempt went.")
    # Every attempt: {"at", "url", "http_status", "error"} — lets tests and people watch retries.
    history = models.JSONField(default=list, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["due_at", "id"]
        indexes = [models.Index(fields=["status", "due_at"], name="simnotif_status_due_idx")]

    def __str__(self):
        return f"{self.payload.get('order_id')} {self.payload.get('transaction_status')} ({self.status})"


class SimApiCall(models.Model):
    """Every API request the simulator received, so tests can count calls (retries) exactly."""

    operation = models.CharField(max_length=32)
    order_id = models.CharField(max_length=64, blank=True)
    http_status = models.PositiveSmallIntegerField()
    fault = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.operation} {self.order_id} -> {self.http_status}"


class SimFault(models.Model):
    """Run-time fault injection for the simulator's API endpoints (one row, id=1)."""

    latency_ms = models.PositiveIntegerField(default=0)
    error_rate = models.FloatField(default=0.0, help_text="Share (0..1) of API calls answered 500.")
    fail_next = models.PositiveIntegerField(default=0, help_text="The next N API calls answer 500.")
    timeout = models.BooleanField(default=False, help_text="Hold each API call for timeout_seconds.")
    timeout_seconds = models.FloatField(default=30.0)
    down = models.BooleanField(default=False, help_text="Answer 503 with an HTML page, like a dead upstream.")
    answer_status = models.PositiveSmallIntegerField(
        default=0, help_text="HTTP status for the next answer_next calls: 404 (Spring-style), 429, 301/302/303/307/308."
    )
    answer_next = models.PositiveIntegerField(default=0, help_text="The next N API calls answer answer_status.")
    retry_after_seconds = models.PositiveIntegerField(default=1, help_text="Retry-After sent with a 429.")
    core_errors_as_http = models.BooleanField(
        default=False,
        help_text="Core API errors (and a status read's 404) come with their status_code as the HTTP status.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return "simulator faults"


class SimIdempotencyKey(models.Model):
    """One Idempotency-Key a Core API POST carried: in progress, or the success to replay.

    Midtrans keeps a key for five minutes, globally across endpoints, and replays only a
    successful answer (reference section 1, "Idempotency-Key"); a failed call deletes its row.
    """

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress", "First call still running"
        DONE = "done", "Success stored for replay"

    key = models.CharField(max_length=46, unique=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.IN_PROGRESS)
    operation = models.CharField(max_length=32)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    body = models.JSONField(null=True, blank=True)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.key} {self.operation} ({self.state})"
