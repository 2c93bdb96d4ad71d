"""Who may watch which course. Granted and revoked only by entitlements.services."""

from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower


class Entitlement(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        REVOKED = "revoked", "Revoked"

    email = models.EmailField(max_length=254)
    course_code = models.SlugField(max_length=50)
    # The payments order that paid for it. A plain reference, not a foreign key:
    # entitlements must not depend on payments (payments -> entitlements only).
    order_id = models.CharField(max_length=32, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    granted_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=255, blank=True, help_text="Why it was granted or revoked.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-granted_at"]
        indexes = [models.Index(fields=["email", "course_code"], name="entitlement_email_course_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["active", "revoked"]), name="entitlement_status_valid"),
            models.CheckConstraint(condition=Q(email=Lower("email")), name="entitlement_email_lowercase"),
            models.CheckConstraint(
                condition=(Q(status="active") & Q(revoked_at__isnull=True))
                | (Q(status="revoked") & Q(revoked_at__isnull=False)),
                name="entitlement_revoked_at_matches_status",
            ),
        ]

    def __str__(self):
        return f"{self.email} -> {self.course_code} ({self.status})"
