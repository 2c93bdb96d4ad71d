"""The transactional outbox: one row per message, rendered once at enqueue.

This app knows nothing of orders; callers pass rendered content and a dedupe key.
"""

import uuid

from django.db import models
from django.db.models import F, Q
from django.utils import timezone


class Notification(models.Model):
    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        WHATSAPP = "whatsapp", "WhatsApp"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # due at next_attempt_at
        SENDING = "sending", "Sending"  # claimed by a worker until lease_expires_at
        SENT = "sent", "Sent"
        DEAD = "dead", "Dead letter"  # permanent error or attempts exhausted

    channel = models.CharField(max_length=10, choices=Channel.choices)
    template = models.CharField(max_length=64)
    recipient = models.CharField(max_length=254, help_text="Email address, or phone in E.164.")
    subject = models.CharField(max_length=255, blank=True)
    body_text = models.TextField()
    body_html = models.TextField(blank=True)
    # Positional body parameters for providers that send pre-approved templates (Meta's
    # WhatsApp Cloud API), rendered at enqueue like the text itself.
    template_params = models.JSONField(default=list, blank=True)
    dedupe_key = models.CharField(max_length=200, unique=True)
    reference = models.CharField(max_length=64, blank=True, db_index=True, help_text="Caller's id, e.g. an order.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=9)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # Set once the operators were told about this dead letter; cleared by a requeue.
    dead_alerted_at = models.DateTimeField(null=True, blank=True)
    # An operator's "Resend" makes a new row with the same rendered content.
    resent_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="resends")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="notification_due_idx"),
            models.Index(fields=["status", "lease_expires_at"], name="notification_lease_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(channel__in=["email", "whatsapp"]), name="notification_channel_valid"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "sending", "sent", "dead"]), name="notification_status_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status="sending") | (Q(lease_token__isnull=False) & Q(lease_expires_at__isnull=False)),
                name="notification_sending_has_lease",
            ),
            models.CheckConstraint(
                condition=~Q(status="sent") | Q(sent_at__isnull=False), name="notification_sent_has_time"
            ),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="notification_max_attempts_positive"),
            models.CheckConstraint(
                condition=Q(attempts__lte=F("max_attempts")), name="notification_attempts_within_max"
            ),
        ]

    def __str__(self):
        return f"{self.channel}:{self.template} -> {self.recipient} ({self.status})"


class NotificationAttempt(models.Model):
    class Outcome(models.TextChoices):
        SENT = "sent", "Sent"
        TRANSIENT = "transient", "Transient error"
        PERMANENT = "permanent", "Permanent error"

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    lease_token = models.UUIDField(default=uuid.uuid4)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    error = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["notification_id", "number"]
        constraints = [
            models.CheckConstraint(
                condition=Q(outcome__in=["sent", "transient", "permanent"]), name="notification_attempt_outcome_valid"
            ),
        ]

    def __str__(self):
        return f"attempt {self.number} of notification {self.notification_id}: {self.outcome}"
