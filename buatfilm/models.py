"""Rows the project package itself keeps: when periodic work last succeeded."""

from django.db import models
from django.utils import timezone


class Heartbeat(models.Model):
    """The last time a periodic job succeeded ("beat": the beat schedule ran a task on a worker;
    "backup": a database backup was stored). /metrics reports each, so an alert fires when one
    stops, whatever else is down."""

    class Name(models.TextChoices):
        BEAT = "beat", "Beat and worker"
        BACKUP = "backup", "Database backup"

    name = models.CharField(primary_key=True, max_length=32, choices=Name.choices)
    at = models.DateTimeField()

    def __str__(self):
        return f"{self.name} at {self.at.isoformat()}"


def heartbeat_record(*, name: str) -> None:
    Heartbeat.objects.update_or_create(name=name, defaults={"at": timezone.now()})
