from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("payments", "0010_i17_discount_uses_follow_orders")]

    operations = [
        migrations.AddField(
            model_name="order",
            name="legacy_flags",
            field=models.JSONField(blank=True, default=list, editable=False),
        ),
        migrations.AddField(
            model_name="order",
            name="legacy_id",
            field=models.CharField(blank=True, editable=False, max_length=50, null=True, unique=True),
        ),
        migrations.AddField(
            model_name="order",
            name="legacy_paid_notice",
            field=models.CharField(
                blank=True,
                choices=[
                    ("sent", "Sent by the old system"),
                    ("not_sent", "Not sent by the old system"),
                    ("unknown", "Unknown (the old system kept no record)"),
                ],
                editable=False,
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="order",
            name="legacy_source",
            field=models.CharField(blank=True, editable=False, max_length=20),
        ),
    ]
