"""Celery tasks of the project package."""

from celery import shared_task

from buatfilm.models import Heartbeat, heartbeat_record


@shared_task(name="buatfilm.heartbeat", ignore_result=True)
def heartbeat_task() -> None:
    """Beat sends it, a worker runs it: its timestamp on /metrics says both are alive."""
    heartbeat_record(name=Heartbeat.Name.BEAT)
