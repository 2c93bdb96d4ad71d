"""Operator tools: the admin's Requeue/Resend actions and `manage.py requeue_notifications`."""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from notifications.models import Notification
from notifications.tests.factories import NotificationFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:notifications_notification_changelist"


@pytest.fixture(autouse=True)
def kicks(monkeypatch):
    calls = []
    monkeypatch.setattr(
        "notifications.services.notification_kick",
        lambda *, notification_id, reference="", countdown=None, force=False: calls.append(notification_id) or True,
    )
    return calls


def _snapshot():
    return list(Notification.objects.order_by("pk").values())


# --- admin ---------------------------------------------------------------------------------------


def test_admin_requeue_moves_dead_letters_to_pending_and_records_who(
    admin_client, admin_user, kicks, django_capture_on_commit_callbacks
):
    dead = NotificationFactory(status="dead", attempts=9, last_error="SMTP 550")
    sent = NotificationFactory(status="sent", sent_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse(CHANGELIST), {"action": "requeue", "_selected_action": [dead.pk, sent.pk]}, follow=True
        )
    assert response.status_code == 200
    dead.refresh_from_db()
    sent.refresh_from_db()
    assert (dead.status, dead.attempts) == ("pending", 0) and sent.status == "sent"
    texts = [str(m) for m in response.context["messages"]]
    assert f"Requeued: {dead.pk}." in texts and any("only dead letters can be requeued" in t for t in texts)
    entry = LogEntry.objects.get(object_id=str(dead.pk))
    assert entry.user == admin_user and entry.action_flag == CHANGE and "Requeued" in entry.get_change_message()
    assert kicks == [dead.pk]


def test_admin_resend_creates_a_copy_and_records_who(admin_client, admin_user):
    sent = NotificationFactory(status="sent", sent_at=timezone.now())
    admin_client.post(reverse(CHANGELIST), {"action": "resend", "_selected_action": [sent.pk]})
    copy = Notification.objects.get(resent_from=sent)
    assert copy.status == "pending" and copy.body_text == sent.body_text
    assert LogEntry.objects.get(object_id=str(copy.pk)).user == admin_user


def test_admin_actions_need_the_change_permission(client):
    # given: a staff member who may only view notifications
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_notification"))
    client.force_login(viewer)
    dead = NotificationFactory(status="dead")
    before = _snapshot()
    # when
    page = client.get(reverse(CHANGELIST))
    client.post(reverse(CHANGELIST), {"action": "requeue", "_selected_action": [dead.pk]})
    # then
    assert page.status_code == 200 and b'value="requeue"' not in page.content
    assert _snapshot() == before and not LogEntry.objects.exists()


# --- management command ---------------------------------------------------------------------------


def _call(*args):
    out = StringIO()
    call_command("requeue_notifications", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_command_requeues_every_dead_letter():
    dead = [NotificationFactory(status="dead", attempts=3) for _ in range(2)]
    NotificationFactory(status="sent", sent_at=timezone.now())
    assert _call("--dead") == f"Requeued 2 notification(s): {dead[0].pk}, {dead[1].pk}.\n"
    assert set(Notification.objects.values_list("status", flat=True)) == {"pending", "sent"}


def test_command_requeues_dead_letters_since_a_moment():
    old = NotificationFactory(status="dead")
    Notification.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=2))
    recent = NotificationFactory(status="dead")
    since = (timezone.localdate() - timedelta(days=1)).isoformat()
    assert _call("--dead", "--since", since) == f"Requeued 1 notification(s): {recent.pk}.\n"
    old.refresh_from_db()
    assert old.status == "dead"


def test_command_requeues_by_id():
    one, two = NotificationFactory(status="dead"), NotificationFactory(status="dead")
    assert _call("--id", str(two.pk)) == f"Requeued 1 notification(s): {two.pk}.\n"
    one.refresh_from_db()
    assert one.status == "dead"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Say what to requeue"),
        (["--id", "999999"], "No notification with id 999999"),
        (["--id", "{sent}"], "is not dead"),
        (["--dead", "--since", "yesterday"], "not an ISO date"),
    ],
)
def test_command_refuses_bad_input_and_changes_nothing(args, message):
    NotificationFactory(status="dead")
    sent = NotificationFactory(status="sent", sent_at=timezone.now())
    before = _snapshot()
    with pytest.raises(CommandError, match=message):
        _call(*[a.format(sent=sent.pk) for a in args])
    assert _snapshot() == before
