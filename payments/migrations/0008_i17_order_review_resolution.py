"""Closing a review case (issue 17): who resolved it, when, and the note."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0007_i17_operator_permissions_and_refund"),
    ]

    operations = [
        migrations.AddField(
            model_name="order",
            name="review_resolution_note",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="order",
            name="review_resolved_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="order",
            name="review_resolved_by",
            field=models.CharField(blank=True, max_length=150),
        ),
    ]
