"""Celery tasks: thin wrappers that take ids and call one service. Safe to run twice.

They run on the "notifications" queue (CELERY_TASK_ROUTES). Retries are not Celery
retries: the schedule lives in the database and the sweep re-kicks due rows.
"""

from celery import shared_task

from notifications.services import notification_purge, notification_send, notification_sweep


@shared_task(name="notifications.deliver", ignore_result=True)
def notification_deliver_task(notification_id: int) -> str | None:
    return notification_send(notification_id=notification_id)


@shared_task(name="notifications.sweep", ignore_result=True)
def notification_sweep_task() -> dict:
    return notification_sweep()


@shared_task(name="notifications.purge", ignore_result=True)
def notification_purge_task() -> int:
    return notification_purge()
