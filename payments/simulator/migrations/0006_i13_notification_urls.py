from django.db import migrations, models


class Migration(migrations.Migration):
    """X-Override-Notification / X-Append-Notification: a transaction's notification URLs, and
    the URL each queued notification goes to."""

    dependencies = [
        ("midtrans_simulator", "0005_i13_snap_page_expiry"),
    ]

    operations = [
        migrations.AddField(
            model_name="simtransaction",
            name="notification_override_urls",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="simtransaction",
            name="notification_append_urls",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="simnotification",
            name="target_url",
            field=models.CharField(blank=True, max_length=2000),
        ),
    ]
