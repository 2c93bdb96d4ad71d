"""Delivery with real parts: PostgreSQL, Redis, `celery worker` subprocesses, SMTP and WhatsApp stubs over sockets.

Data is committed (transactional_db) so the worker processes see it. Backoff is
compressed through the environment (NOTIFICATION_RETRY_SCHEDULE=0.3,...), so
every test finishes in seconds.
"""

import threading
import time

import pytest
import requests
from django.db import close_old_connections, connection, transaction

from notifications.models import Notification, NotificationAttempt
from notifications.services import notification_enqueue, notification_requeue, notification_sweep
from notifications.tests.conftest import wait_for
from notifications.tests.factories import NotificationFactory
from notifications.tests.stubs import Reply, SmtpStub, WhatsAppStub
from payments import notices
from payments.tests.factories import OrderFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PHONE = "+6281234567890"


def _channels_env(smtp: SmtpStub | None = None, whatsapp: WhatsAppStub | None = None) -> dict:
    env = {}
    if smtp:
        env["EMAIL_URL"] = smtp.url
        env["EMAIL_TIMEOUT"] = "5"
    if whatsapp and whatsapp.kind == "meta":
        env |= {
            "WHATSAPP_BACKEND": "meta",
            "WHATSAPP_META_API_URL": whatsapp.url + "/v21.0",
            "WHATSAPP_META_TOKEN": "stub-token",
            "WHATSAPP_META_PHONE_NUMBER_ID": "1055",
            "WHATSAPP_TIMEOUT": "5",
        }
    elif whatsapp:
        env |= {
            "WHATSAPP_BACKEND": "fonnte",
            "WHATSAPP_FONNTE_API_URL": whatsapp.url + "/send",
            "WHATSAPP_FONNTE_TOKEN": "stub-token",
            "WHATSAPP_TIMEOUT": "30",
        }
    return env


def _statuses(*notifications) -> list[str]:
    return [Notification.objects.get(pk=n.pk).status for n in notifications]


def _outcomes(notification) -> list[str]:
    return list(NotificationAttempt.objects.filter(notification=notification).values_list("outcome", flat=True))


def _enqueue_whatsapp(recipient: str, key: str) -> Notification:
    with transaction.atomic():
        return notification_enqueue(
            channel="whatsapp",
            template="payment_received",
            recipient=recipient,
            subject="",
            body_text="Pembayaran diterima.",
            template_params=["Budi"],
            dedupe_key=key,
        )


def _enqueue_email(recipient: str, key: str) -> Notification:
    with transaction.atomic():
        return notification_enqueue(
            channel="email",
            template="payment_received",
            recipient=recipient,
            subject="Pembayaran diterima",
            body_text="Terima kasih.",
            body_html="<p>Terima kasih.</p>",
            dedupe_key=key,
        )


def test_paid_is_sent_once_per_channel_under_50_concurrent_duplicate_notices(celery_worker_factory):
    with SmtpStub() as smtp, WhatsAppStub("meta") as whatsapp:
        worker = celery_worker_factory(**_channels_env(smtp, whatsapp))
        order = OrderFactory(customer_email="budi@example.com", customer_phone=PHONE)
        barrier = threading.Barrier(50)
        errors = []

        def settle():
            try:
                barrier.wait()
                with transaction.atomic():  # each "webhook" in its own transaction and connection
                    notices.notice_paid(order=order)
            except Exception as exc:  # asserted below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=settle) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        rows = Notification.objects.filter(reference=order.id)
        wait_for(lambda: rows.filter(status="sent").count() == 2, message="both messages sent", on_fail=worker.log)
        # a sweep and a quiet moment later: still nothing more
        notification_sweep()
        time.sleep(1.0)

        assert errors == []
        assert sorted(rows.values_list("channel", "status", "attempts")) == [
            ("email", "sent", 1),
            ("whatsapp", "sent", 1),
        ]
        assert smtp.delivered_to("budi@example.com") == 1
        assert whatsapp.calls_to(PHONE.lstrip("+")) == 1
        assert whatsapp.requests[0]["payload"]["template"]["name"] == "payment_received"
        assert NotificationAttempt.objects.filter(notification__reference=order.id, outcome="sent").count() == 2


def test_a_worker_runs_kicks_in_the_old_one_id_shape_and_the_batch_shape(celery_worker_factory):
    from buatfilm.celery import app

    with SmtpStub() as smtp:
        worker = celery_worker_factory(**_channels_env(smtp))
        # given: rows with no kick of their own (as if committed before the kicks below)
        old, first, second = (NotificationFactory(recipient=f"shape{n}@example.com") for n in range(3))
        # when: a message queued by the previous release (one id), and one batch naming two ids twice
        app.send_task("notifications.deliver", args=[old.pk])
        app.send_task("notifications.deliver_many", args=[[first.pk, second.pk]])
        app.send_task("notifications.deliver_many", args=[[first.pk, second.pk]])
        # then
        wait_for(lambda: _statuses(old, first, second) == ["sent"] * 3, message="all sent", on_fail=worker.log)
        time.sleep(0.5)
        assert [smtp.delivered_to(f"shape{n}@example.com") for n in range(3)] == [1, 1, 1]
        assert NotificationAttempt.objects.count() == 3


def test_worker_killed_mid_send_is_taken_over_after_the_lease(celery_worker_factory, settings):
    # given: a provider that hangs on the first request, and a short lease
    settings.NOTIFICATION_LEASE_SECONDS = 3
    script = {PHONE.lstrip("+"): [Reply(block=True)]}
    with WhatsAppStub("fonnte", script=script) as whatsapp:
        env = _channels_env(whatsapp=whatsapp) | {"NOTIFICATION_LEASE_SECONDS": "3"}
        first = celery_worker_factory(**env)
        notification = _enqueue_whatsapp(PHONE, "kill-test")
        wait_for(whatsapp.first_request.is_set, message="the provider call", on_fail=first.log)

        # when: the worker dies in the middle of the send
        first.kill()
        held = Notification.objects.get(pk=notification.pk)
        assert (held.status, held.attempts) == ("sending", 1)
        second = celery_worker_factory(**env)

        def swept_and_sent():
            notification_sweep()  # what beat runs every 30 s
            return Notification.objects.get(pk=notification.pk).status == "sent"

        wait_for(swept_and_sent, interval=0.5, message="the message to be taken over", on_fail=second.log)

        # then
        sent = Notification.objects.get(pk=notification.pk)
        assert (sent.status, sent.attempts) == ("sent", 2)
        assert whatsapp.calls_to(PHONE.lstrip("+")) == 2  # at most two calls
        assert whatsapp.successes[PHONE.lstrip("+")] == 1
        # the killed try never got to write anything; the take-over recorded one success
        assert list(NotificationAttempt.objects.filter(notification=sent).values_list("number", "outcome")) == [
            (2, "sent")
        ]


def test_smtp_451_is_retried_then_sent_and_550_is_dead_after_one_try(celery_worker_factory):
    with SmtpStub(
        data_script={"greylist@example.com": ["451 4.7.1 Greylisted, try again later"]},
        rcpt_script={"nobody@example.com": ["550 5.1.1 No such user"]},
    ) as smtp:
        worker = celery_worker_factory(**_channels_env(smtp=smtp))
        retried = _enqueue_email("greylist@example.com", "smtp-451")
        refused = _enqueue_email("nobody@example.com", "smtp-550")
        wait_for(lambda: _statuses(retried, refused) == ["sent", "dead"], message="sent and dead", on_fail=worker.log)

        assert _outcomes(retried) == ["transient", "sent"]
        assert smtp.data_attempts["greylist@example.com"] == 2 and smtp.delivered_to("greylist@example.com") == 1
        assert _outcomes(refused) == ["permanent"]
        dead = Notification.objects.get(pk=refused.pk)
        assert dead.attempts == 1 and "SMTP 550" in dead.last_error
        assert smtp.delivered_to("nobody@example.com") == 0


def test_whatsapp_429_with_retry_after_5xx_and_permanent_4xx(celery_worker_factory):
    throttled, flaky, unknown = "6281111111111", "6282222222222", "6283333333333"
    script = {
        throttled: [
            Reply(status=429, body={"error": {"code": 130429, "message": "rate limit"}}, headers={"Retry-After": "1"})
        ],
        flaky: [Reply(status=503, body={"error": {"code": 2, "message": "service unavailable"}})],
        unknown: [Reply(status=400, body={"error": {"code": 131026, "message": "message undeliverable"}})],
    }
    with WhatsAppStub("meta", script=script) as whatsapp:
        worker = celery_worker_factory(**_channels_env(whatsapp=whatsapp))
        a = _enqueue_whatsapp("+" + throttled, "wa-429")
        b = _enqueue_whatsapp("+" + flaky, "wa-503")
        c = _enqueue_whatsapp("+" + unknown, "wa-400")
        wait_for(lambda: _statuses(a, b, c) == ["sent", "sent", "dead"], message="final states", on_fail=worker.log)

        assert (_outcomes(a), _outcomes(b), _outcomes(c)) == (
            ["transient", "sent"],
            ["transient", "sent"],
            ["permanent"],
        )
        assert [whatsapp.calls_to(n) for n in (throttled, flaky, unknown)] == [2, 2, 1]
        # the provider's Retry-After (1 s) won over the 0.3 s schedule
        first, second = NotificationAttempt.objects.filter(notification=a).order_by("number")
        assert (second.started_at - first.finished_at).total_seconds() >= 1.0
        assert "130429" in first.error and "131026" in Notification.objects.get(pk=c.pk).last_error


def test_requeued_dead_letter_is_sent_once(celery_worker_factory):
    recipient = "6284444444444"
    script = {recipient: [Reply(status=400, body={"error": {"code": 132001, "message": "template does not exist"}})]}
    with WhatsAppStub("meta", script=script) as whatsapp:
        worker = celery_worker_factory(**_channels_env(whatsapp=whatsapp))
        notification = _enqueue_whatsapp("+" + recipient, "wa-requeue")
        wait_for(lambda: _statuses(notification) == ["dead"], message="a dead letter", on_fail=worker.log)

        # when: the operator fixed the template and requeues
        notification_requeue(notification_id=notification.pk, actor="operator1")
        wait_for(lambda: _statuses(notification) == ["sent"], message="the requeued message sent", on_fail=worker.log)
        notification_sweep()
        time.sleep(0.5)

        assert whatsapp.calls_to(recipient) == 2 and whatsapp.successes[recipient] == 1
        assert _outcomes(notification) == ["permanent", "sent"]
        assert Notification.objects.get(pk=notification.pk).attempts == 1


def test_broker_outage_delays_checkout_and_payment_messages_but_loses_none(
    celery_worker_factory, private_redis, celery_broker_switch, midtrans_sim, settings
):
    """Redis (broker and cache) down: checkout and the paid webhook still answer 2xx promptly and the
    outbox rows wait; Redis back: the sweep delivers every message exactly once."""
    from payments.tests.checkout_support import checkout_body, launch_package_ensure

    launch_package_ensure()
    with SmtpStub() as smtp, WhatsAppStub("meta") as whatsapp:
        # given: a worker and this (web) process both on a private Redis, which then dies
        worker = celery_worker_factory(**_channels_env(smtp, whatsapp), REDIS_URL=private_redis.url)
        celery_broker_switch(private_redis.url)
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": private_redis.url,
                "OPTIONS": {"socket_connect_timeout": 1.0, "socket_timeout": 1.0},
            }
        }
        private_redis.kill()
        midtrans_sim.pause_deliveries()

        # when: a customer checks out and pays
        body = checkout_body(email="budi.outage@example.com", phone="+6281234567890")
        started = time.monotonic()
        response = requests.post(f"{midtrans_sim.live_url}/api/checkout/", json=body, timeout=30)
        checkout_seconds = time.monotonic() - started
        assert response.status_code == 201, response.text
        order_id = response.json()["order_id"]
        midtrans_sim.pay(response.json()["payment"]["token"])
        started = time.monotonic()
        delivered = midtrans_sim.deliver()
        webhook_seconds = time.monotonic() - started
        close_old_connections()

        # then: both answered 2xx without waiting on the dead broker (a liveness bound, not a benchmark)
        assert [n.last_http_status for n in delivered] and all(n.last_http_status == 200 for n in delivered)
        assert checkout_seconds < 5 and webhook_seconds < 5, (checkout_seconds, webhook_seconds)
        rows = Notification.objects.filter(reference=order_id)
        assert sorted(rows.values_list("template", "channel")) == [
            ("payment_instructions", "email"),
            ("payment_instructions", "whatsapp"),
            ("payment_received", "email"),
            ("payment_received", "whatsapp"),
        ]
        time.sleep(1.0)
        assert set(rows.values_list("status", flat=True)) == {"pending"}

        # when: Redis is back and beat's sweep runs
        private_redis.start()

        def swept_and_sent():
            notification_sweep()
            return rows.filter(status="sent").count() == 4

        wait_for(swept_and_sent, interval=1.0, timeout=60, message="the backlog delivered", on_fail=worker.log)
        notification_sweep()
        time.sleep(1.0)

        # then: every message exactly once
        assert sorted(rows.values_list("status", "attempts")) == [("sent", 1)] * 4
        assert smtp.delivered_to("budi.outage@example.com") == 2
        assert whatsapp.calls_to("6281234567890") == 2
        assert sorted(r["payload"]["template"]["name"] for r in whatsapp.requests) == [
            "payment_instructions",
            "payment_received",
        ]
