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

import hashlib
import logging
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from common.db import rows_insert_or_skip
from notifications.backends import PermanentError, TransientError, channel_send
from notifications.models import Notification, NotificationAttempt

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
            raise NotificationInputError("recipient is not a valid email address") from None
        if len(recipient) > 254:
            raise NotificationInputError("recipient email is longer than 254 characters")
    elif channel == Notification.Channel.WHATSAPP:
        if not E164_RE.match(recipient or ""):
            raise NotificationInputError("recipient is not a phone number in E.164 (+6281234567890)")
        if not phonenumbers.is_possible_number(phonenumbers.parse(recipient)):
            raise NotificationInputError("recipient is not a possible phone number")
    else:
        raise NotificationInputError(f"channel {channel!r} is not one of {', '.join(Notification.Channel.values)}")


def notification_max_attempts() -> int:
    return len(settings.NOTIFICATION_RETRY_SCHEDULE) + 1


@dataclass(frozen=True)
class OutboxMessage:
    """One rendered message for the outbox, checked when it is made: one that exists is valid.

    Raises NotificationInputError on bad input, so a caller can skip one message of several
    (and log why) before anything is written.
    """

    channel: str
    template: str
    recipient: str
    subject: str
    body_text: str
    dedupe_key: str
    body_html: str = ""
    reference: str = ""
    template_params: tuple[str, ...] = ()

    def __post_init__(self):
        recipient_validate(channel=self.channel, recipient=self.recipient)
        if not TEMPLATE_NAME_RE.match(self.template or ""):
            raise NotificationInputError(f"template {self.template!r} must be 1-64 of a-z, 0-9 and _")
        if not self.dedupe_key or len(self.dedupe_key) > 200:
            raise NotificationInputError("dedupe_key must be 1-200 characters")
        if not (self.body_text or "").strip():
            raise NotificationInputError("body_text must not be empty")
        if self.channel == Notification.Channel.EMAIL and not (self.subject or "").strip():
            raise NotificationInputError("an email needs a subject")
        if len(self.subject or "") > 255:
            raise NotificationInputError("subject is longer than 255 characters")
        if len(self.reference or "") > 64:
            raise NotificationInputError("reference is longer than 64 characters")
        params = tuple(self.template_params or ())
        if not all(isinstance(p, str) for p in params):
            raise NotificationInputError("template_params must be a list of strings")
        # Frozen: the normalised values are set once, here.
        object.__setattr__(self, "template_params", params)
        for name in ("subject", "body_html", "reference"):
            object.__setattr__(self, name, getattr(self, name) or "")


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
    message = OutboxMessage(
        channel=channel,
        template=template,
        recipient=recipient,
        subject=subject,
        body_text=body_text,
        body_html=body_html,
        dedupe_key=dedupe_key,
        reference=reference,
        template_params=tuple(template_params or ()),
    )
    created = notification_enqueue_many(messages=[message])
    if created:
        return created[0]
    return Notification.objects.get(dedupe_key=dedupe_key)


def notification_enqueue_many(*, messages: Sequence[OutboxMessage]) -> list[Notification]:
    """Write outbox rows in the caller's transaction with ONE statement; one kick after the commit.

    Idempotent on each `dedupe_key`: a key stored already (or by a concurrent transaction
    that commits first) keeps its row unchanged, is logged as a duplicate and left out of
    the result; the content rendered first is what gets sent. Returns the rows this call
    created, in the order given. They share one broker publish after the commit.
    """
    first_by_key: dict[str, OutboxMessage] = {}
    for message in messages:
        first_by_key.setdefault(message.dedupe_key, message)
    if not first_by_key:
        return []
    max_attempts = notification_max_attempts()
    rows = [
        Notification(
            channel=m.channel,
            template=m.template,
            recipient=m.recipient,
            subject=m.subject,
            body_text=m.body_text,
            body_html=m.body_html,
            template_params=list(m.template_params),
            dedupe_key=m.dedupe_key,
            reference=m.reference,
            max_attempts=max_attempts,
        )
        for m in first_by_key.values()
    ]
    # One statement for all rows; a key stored already is skipped rather than raised, and a
    # concurrent insert of the same key waits for the other transaction, then is skipped.
    created = rows_insert_or_skip(rows, key="dedupe_key")
    for row in rows:
        log_extra: dict[str, object] = {
            "order_id": row.reference,
            "channel": row.channel,
            "template": row.template,
            "dedupe_key": row.dedupe_key,
        }
        if row.pk is not None:  # stored by this call (a skipped row gets no pk)
            logger.info("notification_enqueued", extra={"notification_id": row.pk} | log_extra)
        else:
            logger.info("notification_enqueue_duplicate", extra=log_extra)
    if created:
        _kick_after_commit(rows=created)
    return created


def _kick_after_commit(*, rows: list[Notification]) -> None:
    """One kick for the rows of one enqueue call, published once their transaction commits
    (at once outside a transaction). A rolled-back savepoint drops its kick with its rows."""
    ids = [row.pk for row in rows]
    references = ",".join(dict.fromkeys(row.reference for row in rows if row.reference))
    transaction.on_commit(lambda: notification_kick_many(notification_ids=ids, reference=references))


# After a failed publish, this process skips kicks for a few seconds: with Redis hanging
# (not refusing) each publish costs a socket timeout, and a request must not pay it twice.
KICK_SKIP_AFTER_FAILURE_SECONDS = 5.0
_kick_skip_until = 0.0
# Ids per broker message: one task sends them one after the other, so a long list would
# keep the last ones waiting.
KICK_BATCH_MAX = 10


def notification_kick(
    *, notification_id: int, reference: str = "", countdown: float | None = None, force: bool = False
) -> bool:
    """Ask a worker to deliver one message. Never raises: the row is the source of truth.

    With Redis down the publish fails fast (the broker transport has max_retries 0 and
    short socket timeouts) and the beat sweep re-kicks the row later. Without REDIS_URL
    Celery runs the task right here (eager mode); this is only ever called after a commit.
    """
    from notifications.tasks import notification_deliver_task

    return _kick_publish(
        task=notification_deliver_task,
        args=[notification_id],
        countdown=countdown,
        force=force,
        extra={"notification_id": notification_id, "order_id": reference},
    )


def notification_kick_many(*, notification_ids: Sequence[int], reference: str = "") -> bool:
    """Ask a worker to deliver several messages: one publish per KICK_BATCH_MAX ids. Never
    raises; the worker claims each id on its own, as for one."""
    from notifications.tasks import notification_deliver_many_task

    ids = list(dict.fromkeys(notification_ids))
    for start in range(0, len(ids), KICK_BATCH_MAX):
        chunk = ids[start : start + KICK_BATCH_MAX]
        extra = {"notification_ids": chunk, "order_id": reference}
        if not _kick_publish(task=notification_deliver_many_task, args=[chunk], extra=extra):
            return False  # the broker is down: the rest wait for the sweep too
    return True


def _kick_publish(*, task, args: list, extra: dict, countdown: float | None = None, force: bool = False) -> bool:
    global _kick_skip_until
    if not force and time.monotonic() < _kick_skip_until:
        logger.info("notification_kick_skipped", extra=extra | {"reason": "broker failed moments ago"})
        return False
    try:
        task.apply_async(args=args, countdown=countdown)
    except Exception as exc:  # any broker failure: log it, the sweep catches up
        _kick_skip_until = time.monotonic() + KICK_SKIP_AFTER_FAILURE_SECONDS
        logger.warning("notification_kick_failed", extra=extra | {"error": f"{type(exc).__name__}: {exc}"})
        return False
    _kick_skip_until = 0.0
    return True


# --- Delivery -----------------------------------------------------------------------------

# A provider's Retry-After is honoured up to this long; beyond it the schedule decides.
RETRY_AFTER_MAX_SECONDS = 24 * 3600
# Retries due sooner than this also get a Celery countdown kick; later ones wait for the
# sweep, since Redis redelivers countdowns that outlive its visibility timeout.
KICK_COUNTDOWN_MAX_SECONDS = 300

# Allowed status changes. The claim and the finish encode theirs in the WHERE clause of
# one conditional UPDATE; operator actions lock the row and check this table.
TRANSITIONS: dict[str, set[str]] = {
    Notification.Status.PENDING: {Notification.Status.SENDING},
    Notification.Status.SENDING: {
        Notification.Status.SENT,
        Notification.Status.PENDING,
        Notification.Status.DEAD,
        Notification.Status.SENDING,  # re-claimed after the lease expired
    },
    Notification.Status.DEAD: {Notification.Status.PENDING},
    Notification.Status.SENT: set(),
}


def _worker_name() -> str:
    # At call time: a prefork pool imports this module before forking its children.
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Claim:
    notification: Notification
    lease_token: uuid.UUID
    attempt_number: int


def _log_extra(notification: Notification, **more) -> dict:
    return {
        "notification_id": notification.pk,
        "order_id": notification.reference,
        "channel": notification.channel,
        "template": notification.template,
        **more,
    }


def notification_claim(*, notification_id: int) -> Claim | None:
    """Take one message for sending with ONE conditional UPDATE, committed at once.

    Claimable: a pending row that is due, or a sending row whose lease expired (its
    worker died). A duplicate Celery delivery, or a row another worker holds, matches
    nothing and gets None. No row lock outlives this statement, so the provider call
    that follows holds none.
    """
    now = timezone.now()
    token = uuid.uuid4()
    claimable = Q(status=Notification.Status.PENDING, next_attempt_at__lte=now) | Q(
        status=Notification.Status.SENDING, lease_expires_at__lt=now
    )
    with transaction.atomic():
        claimed = Notification.objects.filter(claimable, pk=notification_id, attempts__lt=F("max_attempts")).update(
            status=Notification.Status.SENDING,
            lease_token=token,
            lease_expires_at=now + timedelta(seconds=settings.NOTIFICATION_LEASE_SECONDS),
            attempts=F("attempts") + 1,
            updated_at=now,
        )
    if not claimed:
        return None
    notification = Notification.objects.get(pk=notification_id)
    if notification.lease_token != token:  # only if the lease expired in between
        return None
    return Claim(notification=notification, lease_token=token, attempt_number=notification.attempts)


def retry_delay_compute(*, attempts: int, retry_after: float | None = None) -> float:
    """Seconds until the next try after `attempts` tries: the schedule with jitter, or longer
    if the provider asked for it."""
    schedule = settings.NOTIFICATION_RETRY_SCHEDULE or [30]
    base = float(schedule[min(max(attempts, 1), len(schedule)) - 1])
    jitter = settings.NOTIFICATION_RETRY_JITTER
    delay = base * random.uniform(1 - jitter, 1 + jitter)
    if retry_after:
        delay = max(delay, min(float(retry_after), RETRY_AFTER_MAX_SECONDS))
    return delay


def notification_send(*, notification_id: int) -> str | None:
    """Claim, call the provider with no lock held, record the outcome. Safe to run twice.

    Returns the outcome ("sent", "retry", "dead") or None when there was nothing to claim.
    """
    claim = notification_claim(notification_id=notification_id)
    if claim is None:
        logger.debug("notification_nothing_to_claim", extra={"notification_id": notification_id})
        return None
    notification = claim.notification
    started_at = timezone.now()
    provider_message_id, error, retry_after = "", "", None
    try:
        provider_message_id = channel_send(notification=notification)
        outcome = NotificationAttempt.Outcome.SENT
    except TransientError as exc:
        outcome, error, retry_after = NotificationAttempt.Outcome.TRANSIENT, str(exc), exc.retry_after
    except PermanentError as exc:
        outcome, error = NotificationAttempt.Outcome.PERMANENT, str(exc)
    except Exception as exc:  # a bug or a time limit: keep the message, retry it, and say why
        logger.exception("notification_backend_crashed", extra=_log_extra(notification))
        outcome, error = NotificationAttempt.Outcome.TRANSIENT, f"{type(exc).__name__}: {exc}"
    return _notification_finish(
        claim=claim,
        outcome=outcome,
        error=error[:2000],
        provider_message_id=str(provider_message_id or "")[:255],
        retry_after=retry_after,
        started_at=started_at,
    )


# A task sending several messages starts no new one after this long, so that slow
# providers cannot make it outlive CELERY_TASK_SOFT_TIME_LIMIT; the rest get a new kick.
SEND_MANY_BUDGET_SECONDS = 30.0


def notification_send_many(*, notification_ids: Sequence[int]) -> list[str | None]:
    """notification_send for each id in turn, each claimed on its own: safe to run twice.

    One id that fails (the database went away mid-way, say) does not keep the others
    from being tried; its row stays claimable and the sweep kicks it again.
    """
    started = time.monotonic()
    outcomes: list[str | None] = []
    for index, notification_id in enumerate(notification_ids):
        if index and time.monotonic() - started > SEND_MANY_BUDGET_SECONDS:
            notification_kick_many(notification_ids=notification_ids[index:])
            break
        try:
            outcomes.append(notification_send(notification_id=notification_id))
        except Exception:
            logger.exception("notification_send_failed", extra={"notification_id": notification_id})
            outcomes.append(None)
    return outcomes


def _notification_finish(
    *, claim: Claim, outcome: str, error: str, provider_message_id: str, retry_after: float | None, started_at
) -> str:
    notification = claim.notification
    now = timezone.now()
    values: dict = {"updated_at": now, "lease_token": None, "lease_expires_at": None}
    delay = 0.0  # seconds to the next try, when one is scheduled
    if outcome == NotificationAttempt.Outcome.SENT:
        result = "sent"
        values |= {
            "status": Notification.Status.SENT,
            "sent_at": now,
            "provider_message_id": provider_message_id,
            "last_error": "",
        }
    elif outcome == NotificationAttempt.Outcome.TRANSIENT and claim.attempt_number < notification.max_attempts:
        result = "retry"
        delay = retry_delay_compute(attempts=claim.attempt_number, retry_after=retry_after)
        values |= {
            "status": Notification.Status.PENDING,
            "next_attempt_at": now + timedelta(seconds=delay),
            "last_error": error,
        }
    else:
        result = "dead"
        if outcome == NotificationAttempt.Outcome.TRANSIENT:
            error = f"attempts exhausted ({claim.attempt_number}); last error: {error}"
        values |= {"status": Notification.Status.DEAD, "last_error": error}

    with transaction.atomic():
        # Only while the lease is still ours: a worker that lost it must not overwrite
        # what the worker that re-claimed the message recorded.
        updated = Notification.objects.filter(
            pk=notification.pk, status=Notification.Status.SENDING, lease_token=claim.lease_token
        ).update(**values)
        # The try happened whatever the row says now, so it is always recorded.
        NotificationAttempt.objects.create(
            notification_id=notification.pk,
            number=claim.attempt_number,
            lease_token=claim.lease_token,
            outcome=outcome,
            error=error,
            provider_message_id=provider_message_id,
            worker=_worker_name(),
            started_at=started_at,
            finished_at=now,
        )
    extra = _log_extra(notification, attempt=claim.attempt_number, outcome=outcome)
    if not updated:
        logger.warning("notification_lease_lost", extra=extra | {"error": error})
        return result
    if result == "sent":
        logger.info("notification_sent", extra=extra | {"provider_message_id": provider_message_id})
    elif result == "retry":
        logger.warning("notification_retry_scheduled", extra=extra | {"error": error, "delay_seconds": round(delay, 1)})
        if delay <= KICK_COUNTDOWN_MAX_SECONDS:
            notification_kick(notification_id=notification.pk, reference=notification.reference, countdown=delay)
    else:
        logger.error("notification_dead", extra=extra | {"error": error})
    return result


# --- Sweep, alerts, retention -----------------------------------------------------------------


NOTIFICATIONS_QUEUE = "notifications"


def broker_queue_depth() -> int | None:
    """Kicks waiting in the broker's notifications queue; None when unknown (eager mode, broker down)."""
    from celery import current_app as app

    if app.conf.task_always_eager:
        return None
    try:
        with app.connection_for_write() as conn:
            return conn.default_channel.queue_declare(queue=NOTIFICATIONS_QUEUE, passive=True).message_count
    except Exception:  # an empty queue does not exist on Redis; a dead broker fails the kicks anyway
        return None


def notification_sweep() -> dict:
    """The beat job (every NOTIFICATION_SWEEP_INTERVAL): what makes broker outages and killed
    workers lose nothing. Re-kicks due messages and expired leases, buries messages whose
    last try died with its worker, and alerts the operators about backlog and dead letters."""
    now = timezone.now()
    # A worker died during the last allowed try: the provider may or may not have the
    # message; retrying could exceed max_attempts, so it becomes a dead letter for a person.
    buried = Notification.objects.filter(
        status=Notification.Status.SENDING, lease_expires_at__lt=now, attempts__gte=F("max_attempts")
    ).update(
        status=Notification.Status.DEAD,
        lease_token=None,
        lease_expires_at=None,
        last_error="the worker stopped during the last allowed try (lease expired)",
        updated_at=now,
    )
    expired = Q(status=Notification.Status.SENDING, lease_expires_at__lt=now)
    overdue = Q(
        status=Notification.Status.PENDING,
        next_attempt_at__lte=now - timedelta(seconds=settings.NOTIFICATION_SWEEP_GRACE),
    )
    # While the workers still have a full batch of kicks queued, overdue rows most likely have
    # theirs among them: re-kicking would only add no-op tasks to a backlog. Expired leases
    # are never in the queue, so they are always kicked.
    depth = broker_queue_depth()
    busy = depth is not None and depth >= settings.NOTIFICATION_SWEEP_BATCH
    due = (
        Notification.objects.filter(expired if busy else expired | overdue)
        .order_by("next_attempt_at")
        .values_list("pk", "reference")[: settings.NOTIFICATION_SWEEP_BATCH]
    )
    kicked = 0
    for notification_id, reference in due:
        if not notification_kick(notification_id=notification_id, reference=reference, force=True):
            break  # the broker is down: the rest wait for the next sweep
        kicked += 1
    summary = {"kicked": kicked, "buried": buried, "queue_depth": depth, **_outbox_alerts_raise(now=now)}
    logger.info("notification_sweep", extra=summary)
    return summary


def alert_enqueue(*, template: str, context: dict, dedupe_key: str, reference: str = "") -> int:
    """Email `template` to every operator in ALERT_EMAILS through the outbox, once per
    `dedupe_key` and recipient however often the cause repeats. Never raises for a bad
    address (an alert must not abort the transaction it describes). Returns how many
    messages this call enqueued."""
    if not settings.ALERT_EMAILS:
        logger.error("operator_alert_no_recipients", extra={"order_id": reference, "template": template})
        return 0
    from notifications.rendering import email_render

    rendered = email_render(template=template, context=context)
    messages = []
    for recipient in settings.ALERT_EMAILS:
        try:
            messages.append(
                OutboxMessage(
                    channel=Notification.Channel.EMAIL,
                    template=template,
                    recipient=recipient,
                    subject=rendered.subject[:255],
                    body_text=rendered.body_text,
                    body_html=rendered.body_html,
                    dedupe_key=f"{dedupe_key}:{hashlib.sha256(recipient.encode()).hexdigest()[:16]}",
                    reference=reference,
                )
            )
        except NotificationInputError as exc:
            logger.error("operator_alert_skipped", extra={"order_id": reference, "error": str(exc)})
    return len(notification_enqueue_many(messages=messages))


def _outbox_alert(*, subject: str, body: str, dedupe_key: str) -> int:
    context = {"subject": subject, "body": body, "admin_url": f"{settings.PUBLIC_BASE_URL}/admin/notifications/"}
    return alert_enqueue(template="outbox_alert", context=context, dedupe_key=dedupe_key)


def _outbox_alerts_raise(*, now) -> dict:
    result = {"oldest_pending_seconds": 0.0, "backlog_alert": False, "dead_alerted": 0}
    oldest = (
        Notification.objects.filter(status__in=[Notification.Status.PENDING, Notification.Status.SENDING])
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    if oldest:
        age = (now - oldest).total_seconds()
        result["oldest_pending_seconds"] = round(age, 1)
        if age > settings.NOTIFICATION_BACKLOG_ALERT_SECONDS:
            result["backlog_alert"] = True
            backlog = Notification.objects.filter(
                status__in=[Notification.Status.PENDING, Notification.Status.SENDING]
            ).count()
            logger.error("outbox_backlog", extra={"oldest_pending_seconds": round(age), "backlog": backlog})
            with transaction.atomic():
                # At most one email per hour while the backlog lasts.
                _outbox_alert(
                    subject="Pesan tertunda di antrean",
                    body=(
                        f"{backlog} pesan belum terkirim; yang tertua menunggu {round(age / 60)} menit.\n"
                        "Periksa worker Celery, Redis dan penyedia email/WhatsApp."
                    ),
                    dedupe_key=f"outbox-alert:backlog:{timezone.localtime(now):%Y%m%d%H}",
                )

    with transaction.atomic():
        dead = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(status=Notification.Status.DEAD, dead_alerted_at__isnull=True)
            .order_by("pk")[:200]
        )
        if dead:
            lines = [
                f"#{n.pk} {n.channel} {n.template} -> {n.recipient} (pesanan {n.reference or '-'}): "
                f"{n.last_error[:200]}"
                for n in dead
            ]
            logger.error("outbox_dead_letters", extra={"notification_ids": [n.pk for n in dead]})
            # An alert about an alert that died would only loop; the log line above is the alert.
            if any(not n.template.endswith("_alert") for n in dead):
                digest = hashlib.sha256(",".join(str(n.pk) for n in dead).encode()).hexdigest()[:16]
                _outbox_alert(
                    subject=f"{len(dead)} pesan gagal terkirim (dead letter)",
                    body="\n".join(lines) + "\n\nSetelah penyebabnya diperbaiki, kirim ulang dengan Requeue di admin "
                    "atau `manage.py requeue_notifications --dead`.",
                    dedupe_key=f"outbox-alert:dead:{digest}",
                )
            Notification.objects.filter(pk__in=[n.pk for n in dead]).update(dead_alerted_at=now)
            result["dead_alerted"] = len(dead)
    return result


def notification_purge(*, batch_size: int = 1000) -> int:
    """Delete sent messages (and their attempts) older than NOTIFICATION_RETENTION_DAYS."""
    cutoff = timezone.now() - timedelta(days=settings.NOTIFICATION_RETENTION_DAYS)
    deleted = 0
    while True:
        ids = list(
            Notification.objects.filter(status=Notification.Status.SENT, sent_at__lt=cutoff).values_list(
                "pk", flat=True
            )[:batch_size]
        )
        if not ids:
            break
        with transaction.atomic():
            NotificationAttempt.objects.filter(notification_id__in=ids).delete()
            deleted += (
                Notification.objects.filter(pk__in=ids, status=Notification.Status.SENT)
                .delete()[1]
                .get("notifications.Notification", 0)
            )
    logger.info("notification_purged", extra={"deleted": deleted, "cutoff": cutoff.isoformat()})
    return deleted


# --- Operator actions ---------------------------------------------------------------------------


def _transition_check(notification: Notification, new_status: str) -> None:
    if new_status not in TRANSITIONS[notification.status]:
        raise NotificationInputError(
            f"notification {notification.pk} is {notification.status}; it cannot become {new_status}"
        )


def notification_requeue(*, notification_id: int, actor: str) -> Notification:
    """A dead letter back to pending with its attempts reset (the operator fixed the cause)."""
    with transaction.atomic():
        try:
            notification = Notification.objects.select_for_update().get(pk=notification_id)
        except Notification.DoesNotExist:
            raise NotificationInputError(f"notification {notification_id} does not exist") from None
        if notification.status != Notification.Status.DEAD:
            raise NotificationInputError(
                f"notification {notification_id} is {notification.status}; only dead letters can be requeued"
            )
        _transition_check(notification, Notification.Status.PENDING)
        old = {"status": notification.status, "attempts": notification.attempts}
        notification.status = Notification.Status.PENDING
        notification.attempts = 0
        notification.max_attempts = notification_max_attempts()
        notification.next_attempt_at = timezone.now()
        notification.lease_token = None
        notification.lease_expires_at = None
        notification.dead_alerted_at = None
        notification.save()
        # The audit trail: notifications must not import payments (whose audit table this
        # would be), so the record is this structured log line plus, from the admin, Django's
        # admin LogEntry on the row's history.
        logger.info(
            "notification_requeued",
            extra=_log_extra(notification, actor=actor, old=old, new={"status": "pending", "attempts": 0}),
        )
        transaction.on_commit(
            lambda: notification_kick(notification_id=notification.pk, reference=notification.reference)
        )
    return notification


def notification_resend(*, notification_id: int, actor: str) -> Notification:
    """A new message with the same rendered content (e.g. the customer lost the email)."""
    with transaction.atomic():
        try:
            original = Notification.objects.get(pk=notification_id)
        except Notification.DoesNotExist:
            raise NotificationInputError(f"notification {notification_id} does not exist") from None
        if original.status not in (Notification.Status.SENT, Notification.Status.DEAD):
            raise NotificationInputError(
                f"notification {notification_id} is {original.status} and will be sent anyway; resend only sent "
                "or dead messages"
            )
        copy = Notification.objects.create(
            channel=original.channel,
            template=original.template,
            recipient=original.recipient,
            subject=original.subject,
            body_text=original.body_text,
            body_html=original.body_html,
            template_params=original.template_params,
            dedupe_key=f"resend:{original.pk}:{uuid.uuid4().hex}",
            reference=original.reference,
            max_attempts=notification_max_attempts(),
            resent_from=original,
        )
        logger.info("notification_resent", extra=_log_extra(original, actor=actor, new_notification_id=copy.pk))
        transaction.on_commit(lambda: notification_kick(notification_id=copy.pk, reference=copy.reference))
    return copy
