"""The outbox: enqueue in the caller's transaction, claim, send, retry, dead letters, sweep.

The one public module that the Celery tasks, the management command and the admin
actions all call. The notification state machine (design.md):

    pending -> sending          claim: one conditional UPDATE, committed before any I/O
    sending -> sent             the provider accepted it
    sending -> pending          transient error; the next try is scheduled in the database
    sending -> dead             permanent error, or attempts exhausted
    sending -> sending          a lease expired (the worker died) and another worker claims it
    dead    -> pending          an operator's requeue (attempts reset)

This app knows nothing of orders: callers pass rendered content, a dedupe key and
an opaque reference (an order id) that every log line carries.
"""

import logging
import re

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from notifications.models import Notification

logger = logging.getLogger(__name__)

E164_RE = re.compile(r"^\+[1-9]\d{7,14}$")
TEMPLATE_NAME_RE = re.compile(r"^[a-z0-9_]{1,64}$")


class NotificationInputError(ValueError):
    """Bad input to a notification service; nothing was written."""


def recipient_validate(*, channel: str, recipient: str) -> None:
    """Raise NotificationInputError unless the recipient fits the channel (email, or E.164 phone)."""
    if channel == Notification.Channel.EMAIL:
        try:
            validate_email(recipient)
        except ValidationError:
            raise NotificationInputError(f"recipient {recipient!r} is not a valid email address") from None
        if len(recipient) > 254:
            raise NotificationInputError("recipient email is longer than 254 characters")
    elif channel == Notification.Channel.WHATSAPP:
        if not E164_RE.match(recipient or ""):
            raise NotificationInputError(f"recipient {recipient!r} is not a phone number in E.164 (+6281234567890)")
        if not phonenumbers.is_possible_number(phonenumbers.parse(recipient)):
            raise NotificationInputError(f"recipient {recipient!r} is not a possible phone number")
    else:
        raise NotificationInputError(f"channel {channel!r} is not one of {', '.join(Notification.Channel.values)}")


def notification_max_attempts() -> int:
    return len(settings.NOTIFICATION_RETRY_SCHEDULE) + 1


def notification_enqueue(
    *,
    channel: str,
    template: str,
    recipient: str,
    subject: str,
    body_text: str,
    body_html: str = "",
    dedupe_key: str,
    reference: str = "",
    template_params: list[str] | None = None,
) -> Notification:
    """Write one outbox row in the caller's transaction; kick a worker after the commit.

    Idempotent on `dedupe_key`: a second call returns the existing row unchanged (the
    content rendered first is what gets sent). The kick never fails or blocks the
    caller: with the broker down the row waits for the sweep.
    """
    recipient_validate(channel=channel, recipient=recipient)
    if not TEMPLATE_NAME_RE.match(template or ""):
        raise NotificationInputError(f"template {template!r} must be 1-64 of a-z, 0-9 and _")
    if not dedupe_key or len(dedupe_key) > 200:
        raise NotificationInputError("dedupe_key must be 1-200 characters")
    if not (body_text or "").strip():
        raise NotificationInputError("body_text must not be empty")
    if channel == Notification.Channel.EMAIL and not (subject or "").strip():
        raise NotificationInputError("an email needs a subject")
    if len(subject or "") > 255:
        raise NotificationInputError("subject is longer than 255 characters")
    if len(reference or "") > 64:
        raise NotificationInputError("reference is longer than 64 characters")
    params = list(template_params or [])
    if not all(isinstance(p, str) for p in params):
        raise NotificationInputError("template_params must be a list of strings")

    # get_or_create runs in a savepoint: a concurrent enqueue of the same key waits on the
    # unique index, gets IntegrityError, and then reads the winner's committed row.
    notification, created = Notification.objects.get_or_create(
        dedupe_key=dedupe_key,
        defaults={
            "channel": channel,
            "template": template,
            "recipient": recipient,
            "subject": subject or "",
            "body_text": body_text,
            "body_html": body_html or "",
            "template_params": params,
            "reference": reference or "",
            "max_attempts": notification_max_attempts(),
        },
    )
    log_extra = {
        "notification_id": notification.pk,
        "order_id": reference,
        "channel": channel,
        "template": template,
        "dedupe_key": dedupe_key,
    }
    if not created:
        logger.info("notification_enqueue_duplicate", extra=log_extra)
        return notification
    logger.info("notification_enqueued", extra=log_extra)
    notification_id = notification.pk
    transaction.on_commit(lambda: notification_kick(notification_id=notification_id, reference=reference))
    return notification


def notification_kick(*, notification_id: int, reference: str = "", countdown: float | None = None) -> bool:
    """Ask a worker to deliver one message. Never raises: the row is the source of truth.

    With Redis down the publish fails fast (the broker transport has max_retries 0 and
    short socket timeouts) and the beat sweep re-kicks the row later. Without REDIS_URL
    Celery runs the task right here (eager mode); this is only ever called after a commit.
    """
    try:
        from notifications.tasks import notification_deliver_task

        notification_deliver_task.apply_async(args=[notification_id], countdown=countdown)
    except Exception as exc:  # any broker failure: log it, the sweep catches up
        logger.warning(
            "notification_kick_failed",
            extra={"notification_id": notification_id, "order_id": reference, "error": f"{type(exc).__name__}: {exc}"},
        )
        return False
    return True
