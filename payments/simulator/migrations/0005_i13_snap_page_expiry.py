from django.db import migrations, models


class Migration(migrations.Migration):
    """When a token was issued and when its payment page closes (Snap's page_expiry / expiry)."""

    dependencies = [
        ("midtrans_simulator", "0004_transaction_id_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="simtransaction",
            name="token_created_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="simtransaction",
            name="page_expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
