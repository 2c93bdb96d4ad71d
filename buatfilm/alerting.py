"""Operator alert channels outside the outbox, for `manage.py alert_test`: an email straight
through the configured email backend to ALERT_EMAILS, and Alertmanager (ALERTMANAGER_URL),
where the Prometheus rules in deploy/prometheus/ send theirs."""

import logging
from dataclasses import dataclass
from datetime import timedelta

import requests
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.utils import timezone

from notifications.rendering import email_render

logger = logging.getLogger(__name__)

TEST_ALERT_NAME = "BuatFilmTestAlert"


@dataclass
class ChannelResult:
    channel: str
    ok: bool
    detail: str


def alert_channels() -> list[str]:
    return [name for name, on in (("email", settings.ALERT_EMAILS), ("alertmanager", settings.ALERTMANAGER_URL)) if on]


def _email_send(*, subject: str, body: str) -> ChannelResult:
    rendered = email_render(
        template="operator_alert",
        context={"order_id": "", "subject": subject, "body": body, "admin_url": f"{settings.PUBLIC_BASE_URL}/admin/"},
    )
    message = EmailMultiAlternatives(subject=rendered.subject, body=rendered.body_text, to=list(settings.ALERT_EMAILS))
    message.attach_alternative(rendered.body_html, "text/html")
    try:
        message.send()
    except Exception as exc:  # any backend failure is this channel's answer
        return ChannelResult("email", False, f"{type(exc).__name__}: {exc}"[:300])
    return ChannelResult("email", True, f"sent to {len(settings.ALERT_EMAILS)} address(es) in ALERT_EMAILS")


def _alertmanager_send(*, subject: str, body: str) -> ChannelResult:
    now = timezone.now()
    alert = {
        "labels": {"alertname": TEST_ALERT_NAME, "severity": "info", "service": "buatfilm"},
        "annotations": {"summary": subject, "description": body},
        "startsAt": now.isoformat(),
        # Resolves by itself, so the test leaves nothing open.
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
    }
    url = settings.ALERTMANAGER_URL.rstrip("/") + "/api/v2/alerts"
    try:
        response = requests.post(url, json=[alert], timeout=5)
    except requests.RequestException as exc:
        return ChannelResult("alertmanager", False, f"{type(exc).__name__}: {exc}"[:300])
    if response.status_code != 200:
        return ChannelResult("alertmanager", False, f"{url} answered HTTP {response.status_code}")
    return ChannelResult("alertmanager", True, f"accepted by {url}")


def alert_test_send() -> list[ChannelResult]:
    """A test alert through every configured channel; one result per channel."""
    subject = "[BuatFilm] Test alert"
    body = (
        f"A test alert sent by `manage.py alert_test` at {timezone.localtime():%Y-%m-%d %H:%M %Z}. "
        "Nothing is wrong; this shows that alerts reach you."
    )
    senders = {"email": _email_send, "alertmanager": _alertmanager_send}
    results = [senders[channel](subject=subject, body=body) for channel in alert_channels()]
    for result in results:
        logger.info("alert_test", extra={"channel": result.channel, "ok": result.ok})
    return results
