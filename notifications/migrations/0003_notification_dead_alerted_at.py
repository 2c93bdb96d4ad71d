from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0002_notification_template_params"),
    ]

    operations = [
        migrations.AddField(
            model_name="notification",
            name="dead_alerted_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
