"""The outbox services in-process: enqueue, claim, send, retry, dead letters, sweep, purge, operator actions.

Deliveries here go through the locmem backends (email: Django's locmem backend,
WhatsApp: notifications.backends.whatsapp.locmem); the process tests in
test_delivery_processes.py use real workers and real sockets.
"""

import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection, transaction
from django.utils import timezone

from notifications.backends import PermanentError, TransientError
from notifications.backends.whatsapp import locmem
from notifications.models import Notification, NotificationAttempt
from notifications.services import (
    NotificationInputError,
    OutboxMessage,
    notification_claim,
    notification_enqueue,
    notification_enqueue_many,
    notification_kick,
    notification_kick_many,
    notification_purge,
    notification_requeue,
    notification_resend,
    notification_send,
    notification_send_many,
    notification_sweep,
    retry_delay_compute,
)
from notifications.tests.factories import NotificationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clean_outboxes(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.WHATSAPP_BACKEND = "locmem"
    settings.NOTIFICATION_RETRY_SCHEDULE = [30, 120, 600]
    settings.NOTIFICATION_RETRY_JITTER = 0.2
    mail.outbox = []
    locmem.outbox.clear()
    yield
    locmem.outbox.clear()


@pytest.fixture
def kicks(monkeypatch):
    """The broker is the edge here: record kicks instead of publishing them."""
    calls = []

    def record(*, notification_id, reference="", countdown=None, force=False):
        calls.append({"id": notification_id, "countdown": countdown})
        return True

    monkeypatch.setattr("notifications.services.notification_kick", record)
    return calls


def _enqueue(**overrides):
    values = {
        "channel": "email",
        "template": "payment_received",
        "recipient": "budi@example.com",
        "subject": "Pembayaran diterima",
        "body_text": "Terima kasih.",
        "body_html": "<p>Terima kasih.</p>",
        "dedupe_key": "order:BF-1:paid:email",
        "reference": "BF-1",
    }
    return notification_enqueue(**(values | overrides))


@pytest.fixture
def batch_kicks(monkeypatch):
    """The after-commit kicks of enqueued rows, recorded instead of published: one list of ids each."""
    calls = []

    def record(*, notification_ids, reference=""):
        calls.append(list(notification_ids))
        return True

    monkeypatch.setattr("notifications.services.notification_kick_many", record)
    return calls


def _message(key: str, **overrides) -> OutboxMessage:
    values = {
        "channel": "email",
        "template": "payment_received",
        "recipient": "budi@example.com",
        "subject": "Pembayaran diterima",
        "body_text": f"Pesan {key}.",
        "dedupe_key": key,
        "reference": "BF-1",
    }
    return OutboxMessage(**(values | overrides))


def _failing_backend(monkeypatch, *errors):
    """channel_send raising the given errors in turn, then succeeding."""
    queue = list(errors)

    def send(*, notification):
        if queue:
            raise queue.pop(0)
        return "provider-1"

    monkeypatch.setattr("notifications.services.channel_send", send)


# --- enqueue ------------------------------------------------------------------------------------


def test_enqueue_stores_the_rendered_message_pending_and_kicks_after_commit(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        notification = _enqueue()
    assert (notification.status, notification.attempts, notification.max_attempts) == ("pending", 0, 4)
    assert notification.body_html == "<p>Terima kasih.</p>" and notification.reference == "BF-1"
    assert len(callbacks) == 1


def test_enqueue_is_idempotent_on_the_dedupe_key(django_capture_on_commit_callbacks):
    first = _enqueue()
    with django_capture_on_commit_callbacks() as callbacks:
        second = _enqueue(body_text="Different text, same key.")
    assert second.pk == first.pk and second.body_text == "Terima kasih."
    assert Notification.objects.count() == 1 and callbacks == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"channel": "sms"}, "channel 'sms'"),
        ({"recipient": "not-an-email"}, "not a valid email"),
        ({"channel": "whatsapp", "recipient": "081234567890"}, "E.164"),
        ({"channel": "whatsapp", "recipient": "+62 812 3456"}, "E.164"),
        ({"channel": "whatsapp", "recipient": "+1234567"}, "E.164"),
        ({"template": "Payment Received!"}, "template"),
        ({"dedupe_key": ""}, "dedupe_key"),
        ({"dedupe_key": "k" * 201}, "dedupe_key"),
        ({"body_text": "   "}, "body_text"),
        ({"subject": ""}, "subject"),
        ({"subject": "s" * 256}, "subject"),
        ({"reference": "r" * 65}, "reference"),
        ({"template_params": ["ok", 5]}, "template_params"),
    ],
)
def test_enqueue_refuses_bad_input_and_writes_nothing(overrides, message, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(NotificationInputError, match=message):
        _enqueue(**overrides)
    assert Notification.objects.count() == 0 and callbacks == []


def test_enqueue_many_writes_every_row_and_kicks_once_after_commit(django_capture_on_commit_callbacks, batch_kicks):
    # given
    messages = [
        _message("order:BF-1:paid:email"),
        _message("order:BF-1:paid:whatsapp", channel="whatsapp", recipient="+6281234567890", subject=""),
    ]
    # when
    with django_capture_on_commit_callbacks() as callbacks:
        created = notification_enqueue_many(messages=messages)
    # then: both rows, nothing kicked before the commit, then one kick for both rows
    assert [n.dedupe_key for n in created] == ["order:BF-1:paid:email", "order:BF-1:paid:whatsapp"]
    stored = {n.dedupe_key: n for n in Notification.objects.all()}
    assert [n.pk for n in created] == [stored[n.dedupe_key].pk for n in created]
    whatsapp = stored["order:BF-1:paid:whatsapp"]
    assert (whatsapp.status, whatsapp.attempts, whatsapp.max_attempts, whatsapp.subject) == ("pending", 0, 4, "")
    assert whatsapp.created_at and whatsapp.next_attempt_at <= timezone.now()
    assert batch_kicks == [] and len(callbacks) == 1
    callbacks[0]()
    assert batch_kicks == [[n.pk for n in created]]


def test_enqueue_many_leaves_stored_and_repeated_keys_alone(batch_kicks, django_capture_on_commit_callbacks):
    # given: k1 stored by an earlier transaction
    with django_capture_on_commit_callbacks(execute=True):
        first = _enqueue(dedupe_key="k1")
    batch_kicks.clear()
    # when: k1 comes again and k2 twice
    with django_capture_on_commit_callbacks(execute=True):
        created = notification_enqueue_many(
            messages=[_message("k1", body_text="Changed."), _message("k2"), _message("k2", body_text="Second k2.")]
        )
    # then: only k2 is new, with the content given first; k1 is unchanged and not kicked again
    assert [n.dedupe_key for n in created] == ["k2"] and created[0].body_text == "Pesan k2."
    assert Notification.objects.get(dedupe_key="k1").body_text == first.body_text == "Terima kasih."
    assert Notification.objects.count() == 2 and batch_kicks == [[created[0].pk]]
    assert notification_enqueue_many(messages=[]) == []


def test_each_enqueue_call_in_a_transaction_kicks_its_rows_after_the_commit(
    batch_kicks, django_capture_on_commit_callbacks
):
    # given: one transaction enqueues in two calls
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        a = _enqueue(dedupe_key="a")
        b, c = notification_enqueue_many(messages=[_message("b"), _message("c")])
        # then: nothing is kicked before the commit
        assert batch_kicks == []
    # then: one kick per call, after the commit
    assert len(callbacks) == 2 and batch_kicks == [[a.pk], [b.pk, c.pk]]


def test_a_rolled_back_savepoint_drops_its_kick_and_keeps_the_others(batch_kicks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        # given: rows enqueued in a savepoint that rolled back
        with pytest.raises(RuntimeError), transaction.atomic():
            _enqueue(dedupe_key="rolled-back")
            raise RuntimeError("a failed step")
        # when: another row is enqueued in the same transaction
        kept = _enqueue(dedupe_key="kept")
    # then: only the kept row is kicked
    assert batch_kicks == [[kept.pk]]
    assert list(Notification.objects.values_list("dedupe_key", flat=True)) == ["kept"]


@pytest.mark.django_db(transaction=True)
def test_enqueue_outside_a_transaction_kicks_each_call_at_once(batch_kicks):
    # autocommit: each INSERT commits on its own, so its kick follows at once
    a = _enqueue(dedupe_key="a")
    assert batch_kicks == [[a.pk]]
    b = _enqueue(dedupe_key="b")
    assert batch_kicks == [[a.pk], [b.pk]]


@pytest.mark.django_db(transaction=True)
def test_concurrent_enqueues_of_one_key_store_one_row_without_error():
    # given: one transaction holds the key, uncommitted
    holder_inserted, holder_commit = threading.Event(), threading.Event()
    results, errors = {}, []

    def holder():
        try:
            with transaction.atomic():
                results["holder"] = notification_enqueue_many(messages=[_message("same", body_text="Holder.")])
                holder_inserted.set()
                holder_commit.wait(10)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    def racer():
        try:
            holder_inserted.wait(10)
            with transaction.atomic():
                # blocks on the unique index until the holder commits, then skips the row
                results["racer"] = notification_enqueue_many(messages=[_message("same"), _message("other")])
                # the transaction is intact: no IntegrityError, no aborted transaction
                results["racer_count"] = Notification.objects.count()
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=holder), threading.Thread(target=racer)]
    for thread in threads:
        thread.start()
    holder_inserted.wait(10)
    time.sleep(0.3)  # the racer is now waiting on the holder's key
    holder_commit.set()
    for thread in threads:
        thread.join(20)
    # then
    assert errors == []
    assert [n.dedupe_key for n in results["holder"]] == ["same"]
    assert [n.dedupe_key for n in results["racer"]] == ["other"] and results["racer_count"] == 2
    assert Notification.objects.get(dedupe_key="same").body_text == "Holder."


# --- claim ----------------------------------------------------------------------------------------


def test_claim_takes_a_due_row_once_and_leases_it(settings):
    settings.NOTIFICATION_LEASE_SECONDS = 300
    notification = NotificationFactory()
    claim = notification_claim(notification_id=notification.pk)
    assert claim is not None and claim.attempt_number == 1
    notification.refresh_from_db()
    assert notification.status == "sending" and notification.lease_token == claim.lease_token
    assert notification.lease_expires_at > timezone.now() + timedelta(seconds=290)
    # a duplicate delivery of the task finds nothing to claim
    assert notification_claim(notification_id=notification.pk) is None


def test_claim_skips_rows_not_yet_due_sent_or_dead():
    later = NotificationFactory(next_attempt_at=timezone.now() + timedelta(minutes=5))
    sent = NotificationFactory(status="sent", sent_at=timezone.now())
    dead = NotificationFactory(status="dead")
    assert [notification_claim(notification_id=n.pk) for n in (later, sent, dead)] == [None, None, None]
    assert notification_claim(notification_id=999999) is None


def test_claim_takes_over_an_expired_lease_with_a_new_token():
    old_token = uuid.uuid4()
    notification = NotificationFactory(
        status="sending", attempts=1, lease_token=old_token, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    claim = notification_claim(notification_id=notification.pk)
    assert claim is not None and claim.lease_token != old_token and claim.attempt_number == 2


def test_claim_leaves_a_live_lease_alone():
    notification = NotificationFactory(
        status="sending", attempts=1, lease_token=uuid.uuid4(), lease_expires_at=timezone.now() + timedelta(minutes=1)
    )
    assert notification_claim(notification_id=notification.pk) is None


# --- send -------------------------------------------------------------------------------------------


def test_send_email_records_one_sent_attempt():
    notification = _enqueue()
    assert notification_send(notification_id=notification.pk) == "sent"
    notification.refresh_from_db()
    assert notification.status == "sent" and notification.sent_at and notification.lease_token is None
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert (message.subject, message.to, message.body) == ("Pembayaran diterima", ["budi@example.com"], "Terima kasih.")
    assert message.alternatives[0][0] == "<p>Terima kasih.</p>"
    assert message.extra_headers["X-Notification-Id"] == str(notification.pk)
    attempt = NotificationAttempt.objects.get(notification=notification)
    assert (attempt.number, attempt.outcome, attempt.provider_message_id) == (
        1,
        "sent",
        notification.provider_message_id,
    )
    # running the task again sends nothing
    assert notification_send(notification_id=notification.pk) is None
    assert len(mail.outbox) == 1


def test_send_whatsapp_through_the_configured_backend():
    notification = _enqueue(
        channel="whatsapp", recipient="+6281234567890", subject="", dedupe_key="wa", template_params=["Budi"]
    )
    assert notification_send(notification_id=notification.pk) == "sent"
    assert [(m.to, m.body, m.template_params) for m in locmem.outbox] == [
        ("+6281234567890", "Terima kasih.", ("Budi",))
    ]


def test_transient_error_schedules_the_next_try_in_the_database(monkeypatch, kicks):
    _failing_backend(monkeypatch, TransientError("SMTP 451: try later"))
    notification = _enqueue()
    before = timezone.now()
    assert notification_send(notification_id=notification.pk) == "retry"
    notification.refresh_from_db()
    assert (notification.status, notification.attempts, notification.lease_token) == ("pending", 1, None)
    assert notification.last_error == "SMTP 451: try later"
    delay = (notification.next_attempt_at - before).total_seconds()
    assert 24 <= delay <= 37  # 30 s +/- 20 % jitter
    assert kicks == [{"id": notification.pk, "countdown": pytest.approx(delay, abs=1)}]
    # not due yet: nothing to claim
    assert notification_send(notification_id=notification.pk) is None


def test_retry_after_from_the_provider_is_honoured(monkeypatch, kicks):
    _failing_backend(monkeypatch, TransientError("429", retry_after=3600))
    notification = _enqueue()
    notification_send(notification_id=notification.pk)
    notification.refresh_from_db()
    assert notification.next_attempt_at - timezone.now() > timedelta(minutes=59)
    assert kicks == []  # an hour away: the sweep kicks it, not a Celery countdown


def test_retry_delays_follow_the_schedule_with_jitter(settings):
    settings.NOTIFICATION_RETRY_SCHEDULE = [30, 120, 600, 1800, 3600, 7200, 14400, 28800]
    delays = [retry_delay_compute(attempts=n) for n in range(1, 10)]
    for delay, base in zip(delays, [30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800], strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    assert len({round(retry_delay_compute(attempts=1), 6) for _ in range(20)}) > 1  # jittered
    assert retry_delay_compute(attempts=1, retry_after=90) >= 90


def test_permanent_error_makes_a_dead_letter_after_one_try(monkeypatch):
    _failing_backend(monkeypatch, PermanentError("SMTP 550: no such user"))
    notification = _enqueue()
    assert notification_send(notification_id=notification.pk) == "dead"
    notification.refresh_from_db()
    assert (notification.status, notification.attempts, notification.last_error) == (
        "dead",
        1,
        "SMTP 550: no such user",
    )
    assert list(notification.attempt_log.values_list("outcome", flat=True)) == ["permanent"]


def test_exhausted_attempts_make_a_dead_letter(monkeypatch, kicks):
    _failing_backend(monkeypatch, *[TransientError(f"timeout {n}") for n in range(10)])
    notification = _enqueue()
    outcomes = []
    for _ in range(4):
        Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now())
        outcomes.append(notification_send(notification_id=notification.pk))
    notification.refresh_from_db()
    assert outcomes == ["retry", "retry", "retry", "dead"]
    assert notification.status == "dead" and notification.attempts == 4 == notification.max_attempts
    assert notification.last_error == "attempts exhausted (4); last error: timeout 3"
    assert list(notification.attempt_log.values_list("number", "outcome")) == [
        (1, "transient"),
        (2, "transient"),
        (3, "transient"),
        (4, "transient"),
    ]


def test_a_crashing_backend_is_a_transient_error(monkeypatch, kicks):
    _failing_backend(monkeypatch, KeyError("bug"))
    notification = _enqueue()
    assert notification_send(notification_id=notification.pk) == "retry"
    notification.refresh_from_db()
    assert notification.status == "pending" and "KeyError" in notification.last_error


def test_a_worker_that_lost_its_lease_does_not_overwrite_the_row(monkeypatch):
    # given: while this worker talks to the provider, its lease expires and another worker re-claims
    notification = _enqueue()

    def slow_provider(*, notification):
        Notification.objects.filter(pk=notification.pk).update(lease_token=uuid.uuid4())
        return "provider-late"

    monkeypatch.setattr("notifications.services.channel_send", slow_provider)
    # when
    notification_send(notification_id=notification.pk)
    # then: the row still belongs to the other worker, and the try is on record
    notification.refresh_from_db()
    assert notification.status == "sending" and notification.sent_at is None
    assert list(notification.attempt_log.values_list("outcome", "provider_message_id")) == [("sent", "provider-late")]


def test_send_many_claims_each_message_on_its_own_and_is_safe_to_run_twice():
    # given
    email = _enqueue(dedupe_key="e")
    whatsapp = _enqueue(channel="whatsapp", recipient="+6281234567890", subject="", dedupe_key="w")
    # when: the task runs, then runs again (a duplicate delivery)
    first = notification_send_many(notification_ids=[email.pk, whatsapp.pk])
    second = notification_send_many(notification_ids=[email.pk, whatsapp.pk])
    # then
    assert (first, second) == (["sent", "sent"], [None, None])
    assert len(mail.outbox) == 1 and len(locmem.outbox) == 1
    assert NotificationAttempt.objects.count() == 2


def test_send_many_goes_on_after_a_message_that_failed(monkeypatch, caplog):
    # given: the claim of the first message fails outright (the database went away, say)
    broken, fine = _enqueue(dedupe_key="broken"), _enqueue(dedupe_key="fine", recipient="sari@example.com")
    real_send = notification_send

    def send(*, notification_id):
        if notification_id == broken.pk:
            raise RuntimeError("connection lost")
        return real_send(notification_id=notification_id)

    monkeypatch.setattr("notifications.services.notification_send", send)
    # when
    outcomes = notification_send_many(notification_ids=[broken.pk, fine.pk])
    # then: the other one was sent; the broken one is still pending, for the sweep
    assert outcomes == [None, "sent"] and [m.to for m in mail.outbox] == [["sari@example.com"]]
    assert Notification.objects.get(pk=broken.pk).status == "pending"
    assert any(r.getMessage() == "notification_send_failed" for r in caplog.records)


def test_send_many_hands_the_rest_to_another_task_once_its_time_is_up(monkeypatch, batch_kicks):
    # given: a provider so slow that the first message uses the whole budget
    monkeypatch.setattr("notifications.services.SEND_MANY_BUDGET_SECONDS", 0.0)
    ids = [_enqueue(dedupe_key=f"k{n}").pk for n in range(3)]
    # when
    outcomes = notification_send_many(notification_ids=ids)
    # then: one was sent (there is always progress), the other two were kicked again
    assert outcomes == ["sent"] and batch_kicks == [ids[1:]]


def test_kick_many_publishes_one_message_per_batch_of_ids(monkeypatch):
    from notifications.tasks import notification_deliver_many_task

    published = []
    monkeypatch.setattr("notifications.services.KICK_BATCH_MAX", 2)
    monkeypatch.setattr(
        notification_deliver_many_task, "apply_async", lambda *, args, countdown: published.append(args)
    )
    assert notification_kick_many(notification_ids=[1, 2, 2, 3], reference="BF-1") is True
    assert published == [[[1, 2]], [[3]]]


def test_kick_many_on_a_refused_broker_fails_without_raising_and_later_kicks_skip(celery_broker_switch, caplog):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    celery_broker_switch(f"redis://127.0.0.1:{port}/0")
    assert notification_kick_many(notification_ids=[1, 2], reference="BF-1") is False
    assert notification_kick(notification_id=3, reference="BF-1") is False
    events = [(r.getMessage(), r.order_id) for r in caplog.records if r.name == "notifications.services"]
    assert events == [("notification_kick_failed", "BF-1"), ("notification_kick_skipped", "BF-1")]


def test_deliver_task_still_takes_one_id(monkeypatch):
    """Messages published before deliver_many existed name one id; the worker must still run them."""
    from notifications.tasks import notification_deliver_many_task, notification_deliver_task

    notification = _enqueue()
    assert notification_deliver_task.name == "notifications.deliver"
    assert notification_deliver_task.run(notification.pk) == "sent"
    assert notification_deliver_many_task.name == "notifications.deliver_many"
    assert notification_deliver_many_task.run([notification.pk]) == [None]


# --- sweep ------------------------------------------------------------------------------------------


def test_sweep_kicks_due_rows_and_expired_leases_only(settings, kicks):
    settings.NOTIFICATION_SWEEP_GRACE = 20
    now = timezone.now()
    stale = NotificationFactory(next_attempt_at=now - timedelta(minutes=1))
    NotificationFactory(next_attempt_at=now)  # just enqueued: its own kick comes first
    NotificationFactory(next_attempt_at=now + timedelta(minutes=5))
    crashed = NotificationFactory(
        status="sending", attempts=1, lease_token=uuid.uuid4(), lease_expires_at=now - timedelta(seconds=1)
    )
    NotificationFactory(status="sending", attempts=1, lease_token=uuid.uuid4(), lease_expires_at=now + timedelta(1))
    summary = notification_sweep()
    assert sorted(k["id"] for k in kicks) == sorted([stale.pk, crashed.pk])
    assert summary["kicked"] == 2


def test_sweep_buries_a_row_whose_worker_died_on_the_last_try(kicks):
    notification = NotificationFactory(
        status="sending",
        attempts=9,
        max_attempts=9,
        lease_token=uuid.uuid4(),
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    assert notification_sweep()["buried"] == 1
    notification.refresh_from_db()
    assert notification.status == "dead" and "last allowed try" in notification.last_error and kicks == []


def test_sweep_alerts_the_operators_once_per_dead_letter(settings, kicks):
    settings.ALERT_EMAILS = ["ops@example.com"]
    dead = NotificationFactory(status="dead", last_error="SMTP 550: no such user", reference="BF-9")
    # when
    first = notification_sweep()
    second = notification_sweep()
    # then
    assert (first["dead_alerted"], second["dead_alerted"]) == (1, 0)
    alert = Notification.objects.get(template="outbox_alert")
    assert alert.recipient == "ops@example.com" and alert.subject == "[BuatFilm] 1 pesan gagal terkirim (dead letter)"
    assert f"#{dead.pk} email payment_received" in alert.body_text and "SMTP 550" in alert.body_text
    dead.refresh_from_db()
    assert dead.dead_alerted_at is not None


def test_a_dead_alert_does_not_alert_about_itself(settings, kicks):
    settings.ALERT_EMAILS = ["ops@example.com"]
    NotificationFactory(status="dead", template="outbox_alert")
    assert notification_sweep()["dead_alerted"] == 1
    assert Notification.objects.filter(template="outbox_alert").count() == 1


def test_sweep_alerts_about_a_backlog_at_most_hourly(settings, kicks):
    settings.ALERT_EMAILS = ["ops@example.com"]
    settings.NOTIFICATION_BACKLOG_ALERT_SECONDS = 600
    old = NotificationFactory()
    Notification.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=11))
    summary = notification_sweep()
    notification_sweep()
    assert summary["backlog_alert"] is True and summary["oldest_pending_seconds"] > 600
    alerts = Notification.objects.filter(template="outbox_alert")
    assert alerts.count() == 1 and "Pesan tertunda" in alerts.get().subject


def test_no_backlog_alert_for_a_fresh_queue(settings, kicks):
    settings.ALERT_EMAILS = ["ops@example.com"]
    NotificationFactory()
    assert notification_sweep()["backlog_alert"] is False
    assert not Notification.objects.filter(template="outbox_alert").exists()


def test_purge_removes_only_sent_rows_past_retention(settings):
    settings.NOTIFICATION_RETENTION_DAYS = 90
    old_sent = NotificationFactory(status="sent", sent_at=timezone.now() - timedelta(days=91))
    NotificationAttempt.objects.create(notification=old_sent, number=1, outcome="sent", started_at=timezone.now())
    recent = NotificationFactory(status="sent", sent_at=timezone.now() - timedelta(days=89))
    old_dead = NotificationFactory(status="dead")
    Notification.objects.filter(pk=old_dead.pk).update(created_at=timezone.now() - timedelta(days=200))
    assert notification_purge() == 1
    assert set(Notification.objects.values_list("pk", flat=True)) == {recent.pk, old_dead.pk}
    assert NotificationAttempt.objects.count() == 0


# --- operator actions ----------------------------------------------------------------------------------


def test_requeue_resets_a_dead_letter(kicks, django_capture_on_commit_callbacks, caplog):
    dead = NotificationFactory(status="dead", attempts=9, last_error="x", dead_alerted_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        notification_requeue(notification_id=dead.pk, actor="operator1")
    dead.refresh_from_db()
    assert (dead.status, dead.attempts, dead.dead_alerted_at) == ("pending", 0, None)
    assert dead.next_attempt_at <= timezone.now() and kicks == [{"id": dead.pk, "countdown": None}]
    record = next(r for r in caplog.records if r.getMessage() == "notification_requeued")
    assert record.actor == "operator1" and record.old == {"status": "dead", "attempts": 9}


@pytest.mark.parametrize("status", ["pending", "sending", "sent"])
def test_requeue_refuses_anything_but_a_dead_letter(status):
    notification = NotificationFactory(
        status=status,
        attempts=1,
        lease_token=uuid.uuid4() if status == "sending" else None,
        lease_expires_at=timezone.now() if status == "sending" else None,
        sent_at=timezone.now() if status == "sent" else None,
    )
    before = Notification.objects.values().get(pk=notification.pk)
    with pytest.raises(NotificationInputError, match=f"is {status}"):
        notification_requeue(notification_id=notification.pk, actor="operator1")
    assert Notification.objects.values().get(pk=notification.pk) == before


def test_resend_makes_a_new_message_with_the_same_content(kicks):
    sent = NotificationFactory(status="sent", sent_at=timezone.now(), body_html="<p>x</p>", template_params=["a"])
    copy = notification_resend(notification_id=sent.pk, actor="operator1")
    assert copy.pk != sent.pk and copy.resent_from == sent and copy.status == "pending"
    fields = ["channel", "template", "recipient", "subject", "body_text", "body_html", "template_params", "reference"]
    assert [getattr(copy, f) for f in fields] == [getattr(sent, f) for f in fields]
    sent.refresh_from_db()
    assert sent.status == "sent"


def test_resend_refuses_a_message_still_on_its_way_and_writes_nothing():
    pending = NotificationFactory()
    with pytest.raises(NotificationInputError, match="will be sent anyway"):
        notification_resend(notification_id=pending.pk, actor="operator1")
    with pytest.raises(NotificationInputError, match="does not exist"):
        notification_resend(notification_id=999999, actor="operator1")
    assert Notification.objects.count() == 1


def test_without_a_broker_the_message_is_sent_in_process_after_the_commit(django_capture_on_commit_callbacks):
    # given: the demo's configuration (no REDIS_URL -> Celery's eager mode)
    from buatfilm.celery import app

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        # when
        with django_capture_on_commit_callbacks(execute=True):
            notification = _enqueue()
            assert mail.outbox == []  # nothing leaves before the commit
    finally:
        app.conf.task_always_eager = eager
    # then
    notification.refresh_from_db()
    assert notification.status == "sent" and len(mail.outbox) == 1


@pytest.fixture
def hung_broker():
    """A TCP port that accepts connections and never answers: Redis frozen, or a black hole."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()


def test_kick_gives_up_on_a_hung_broker_and_later_kicks_skip_it(hung_broker, celery_broker_switch, caplog):
    # given
    celery_broker_switch(hung_broker)
    # when
    started = time.monotonic()
    first = notification_kick(notification_id=1, reference="BF-1")
    second = notification_kick(notification_id=2, reference="BF-1")
    elapsed = time.monotonic() - started
    # then: bounded by the 1 s socket timeout, paid once (a liveness bound, not a benchmark)
    assert (first, second) == (False, False)
    assert elapsed < 3, elapsed
    events = [r.getMessage() for r in caplog.records if r.name == "notifications.services"]
    assert events == ["notification_kick_failed", "notification_kick_skipped"]


def test_kick_on_a_refused_broker_fails_without_raising(celery_broker_switch):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    celery_broker_switch(f"redis://127.0.0.1:{port}/0")
    assert notification_kick(notification_id=1) is False


def test_sweep_leaves_overdue_rows_alone_while_a_full_batch_is_queued(settings, broker_flushed):
    # given: the real broker (this run's Redis database) with 3 kicks waiting and no worker
    from notifications.services import broker_queue_depth

    settings.NOTIFICATION_SWEEP_BATCH = 3
    settings.NOTIFICATION_SWEEP_GRACE = 0
    assert broker_queue_depth() is None  # an empty queue
    for notification_id in (900001, 900002, 900003):
        assert notification_kick(notification_id=notification_id)
    NotificationFactory(next_attempt_at=timezone.now() - timedelta(minutes=1))
    NotificationFactory(
        status="sending", attempts=1, lease_token=uuid.uuid4(), lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    # when
    summary = notification_sweep()
    # then: only the expired lease was kicked
    assert (summary["queue_depth"], summary["kicked"]) == (3, 1)
    assert broker_queue_depth() == 4
    # and once the queue drains below a batch, overdue rows are kicked again
    settings.NOTIFICATION_SWEEP_BATCH = 10
    assert notification_sweep()["kicked"] == 2
