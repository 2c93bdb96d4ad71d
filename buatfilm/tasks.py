"""Celery tasks of the project package."""

from celery import shared_task

from buatfilm.models import Heartbeat, heartbeat_record


@shared_task(name="buatfilm.heartbeat", ignore_result=True)
def heartbeat_task() -> None:
    """Beat sends it, a worker runs it: its timestamp on /metrics says both are alive."""
    heartbeat_record(name=Heartbeat.Name.BEAT)


@shared_task(name="buatfilm.backup", ignore_result=True)
def backup_task() -> None:
    """The daily backup: compressed, encrypted when BACKUP_GPG_RECIPIENT is set, and only the
    newest BACKUP_KEEP kept. A success is recorded (post_backup) and shown on /metrics."""
    from django.conf import settings
    from django.core.management import call_command

    options = ["--compress", "--clean", "--noinput"]
    if settings.BACKUP_GPG_RECIPIENT:
        options.append("--encrypt")
    call_command("dbbackup", *options)
