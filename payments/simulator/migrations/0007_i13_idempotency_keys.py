from django.db import migrations, models


class Migration(migrations.Migration):
    """Idempotency-Key of Core API POSTs: in progress, or the success to replay for five minutes."""

    dependencies = [
        ("midtrans_simulator", "0006_i13_notification_urls"),
    ]

    operations = [
        migrations.CreateModel(
            name="SimIdempotencyKey",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key", models.CharField(max_length=46, unique=True)),
                (
                    "state",
                    models.CharField(
                        choices=[("in_progress", "First call still running"), ("done", "Success stored for replay")],
                        default="in_progress",
                        max_length=12,
                    ),
                ),
                ("operation", models.CharField(max_length=32)),
                ("http_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("body", models.JSONField(blank=True, null=True)),
                ("expires_at", models.DateTimeField()),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"ordering": ["id"]},
        ),
    ]
