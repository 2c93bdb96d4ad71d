"""Celery tasks: thin wrappers that take ids and call one service. Safe to run twice.

They run on the "notifications" queue (CELERY_TASK_ROUTES). Retries are not Celery
retries: the schedule lives in the database and the sweep re-kicks due rows.
"""

from celery import shared_task

from notifications.services import notification_purge, notification_send, notification_send_many, notification_sweep


# One message: retries, the sweep, operator actions; and messages queued before deliver_many existed.
@shared_task(name="notifications.deliver", ignore_result=True)
def notification_deliver_task(notification_id: int) -> str | None:
    return notification_send(notification_id=notification_id)


# The messages one transaction enqueued, kicked with one publish after its commit.
@shared_task(name="notifications.deliver_many", ignore_result=True)
def notification_deliver_many_task(notification_ids: list[int]) -> list[str | None]:
    return notification_send_many(notification_ids=notification_ids)


@shared_task(name="notifications.sweep", ignore_result=True)
def notification_sweep_task() -> dict:
    return notification_sweep()


@shared_task(name="notifications.purge", ignore_result=True)
def notification_purge_task() -> int:
    return notification_purge()
