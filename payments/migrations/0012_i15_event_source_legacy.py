from django.db import migrations, models

SOURCES = [
    ("webhook", "Webhook"),
    ("reconcile", "Reconciliation"),
    ("admin", "Admin sync"),
    ("legacy", "Imported from the old system"),
]


class Migration(migrations.Migration):
    dependencies = [("payments", "0011_i15_order_legacy_fields")]

    operations = [
        migrations.RemoveConstraint(model_name="paymentevent", name="event_source_valid"),
        migrations.AlterField(
            model_name="paymentevent",
            name="source",
            field=models.CharField(choices=SOURCES, max_length=10),
        ),
        migrations.AddConstraint(
            model_name="paymentevent",
            constraint=models.CheckConstraint(
                condition=models.Q(("source__in", ["webhook", "reconcile", "admin", "legacy"])),
                name="event_source_valid",
            ),
        ),
    ]
