"""Refunds (issue 17): the Refund model and the operators' new order permissions."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0006_attempt_transaction_id_index"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="order",
            options={
                "ordering": ["-created_at"],
                "permissions": [
                    ("sync_order", "Can sync order from Midtrans"),
                    ("refund_order", "Can refund order"),
                    ("resolve_review", "Can resolve order review case"),
                    ("correct_contact", "Can correct customer email or phone"),
                    ("resend_access", "Can resend access message"),
                    ("export_orders", "Can export orders as CSV"),
                ],
            },
        ),
        migrations.CreateModel(
            name="Refund",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "refund_key",
                    models.CharField(help_text="Sent to Midtrans; stable across retries.", max_length=100, unique=True),
                ),
                ("amount", models.PositiveIntegerField(help_text="Integer rupiah.")),
                (
                    "reason",
                    models.CharField(
                        choices=[
                            ("customer_request", "Customer request"),
                            ("duplicate", "Duplicate payment"),
                            ("fraud", "Fraud"),
                            ("not_delivered", "Not delivered"),
                            ("other", "Other"),
                        ],
                        max_length=20,
                    ),
                ),
                ("note", models.TextField(blank=True)),
                ("offline", models.BooleanField(default=False, help_text="Sent back by hand, not through Midtrans.")),
                (
                    "offline_reference",
                    models.CharField(blank=True, help_text="The bank transfer's reference.", max_length=200),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[("requested", "Requested"), ("confirmed", "Confirmed"), ("failed", "Failed")],
                        default="requested",
                        max_length=10,
                    ),
                ),
                ("operator", models.CharField(help_text="Username of the operator who asked for it.", max_length=150)),
                ("midtrans_accepted_at", models.DateTimeField(blank=True, null=True)),
                (
                    "midtrans_refund_id",
                    models.CharField(blank=True, help_text="Midtrans' refund_chargeback_id.", max_length=32),
                ),
                ("tries", models.PositiveSmallIntegerField(default=0)),
                ("last_error", models.TextField(blank=True)),
                ("requested_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("confirmed_at", models.DateTimeField(blank=True, null=True)),
                ("bank_confirmed_at", models.DateTimeField(blank=True, null=True)),
                ("failed_at", models.DateTimeField(blank=True, null=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "attempt",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="refunds",
                        to="payments.paymentattempt",
                    ),
                ),
                (
                    "order",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="refunds", to="payments.order"
                    ),
                ),
            ],
            options={
                "ordering": ["-requested_at", "-id"],
                "indexes": [models.Index(fields=["status", "requested_at"], name="refund_status_requested_idx")],
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("amount__gt", 0)), name="refund_amount_positive"),
                    models.CheckConstraint(
                        condition=models.Q(("status__in", ["requested", "confirmed", "failed"])),
                        name="refund_status_valid",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("reason__in", ["customer_request", "duplicate", "fraud", "not_delivered", "other"])
                        ),
                        name="refund_reason_valid",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("offline", False), models.Q(("offline_reference", ""), _negated=True), _connector="OR"
                        ),
                        name="refund_offline_has_reference",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("status", "confirmed"), _negated=True),
                            ("confirmed_at__isnull", False),
                            _connector="OR",
                        ),
                        name="refund_confirmed_has_time",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("refund_key", ""), _negated=True), name="refund_key_set"
                    ),
                ],
            },
        ),
    ]
