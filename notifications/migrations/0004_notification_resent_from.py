import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0003_notification_dead_alerted_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="notification",
            name="resent_from",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="resends",
                to="notifications.notification",
            ),
        ),
    ]
