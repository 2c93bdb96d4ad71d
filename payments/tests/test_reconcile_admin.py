"""The admin's "Sync from Midtrans": the only way an operator changes a payment state."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from payments.models import AuditEntry, Order, PaymentAttempt
from payments.tests.payment_support import payment_state, refreshed, sim_attempt_create

pytestmark = pytest.mark.django_db(transaction=True)

OS = Order.Status
A = PaymentAttempt.Status


@pytest.fixture
def sim(midtrans_sim, settings):
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = True
    midtrans_sim.pause_deliveries()
    return midtrans_sim


@pytest.fixture
def operator(client, django_user_model):
    user = django_user_model.objects.create_user("siti", "siti@example.com", "pw-for-tests", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_order", "sync_order"]))
    client.force_login(user)
    return client


@pytest.fixture
def viewer(client, django_user_model):
    """Staff who may look at orders but not sync them."""
    user = django_user_model.objects.create_user("andi", "andi@example.com", "pw-for-tests", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_order"))
    client.force_login(user)
    return client


def sync(client, *order_ids):
    return client.post(
        reverse("admin:payments_order_changelist"),
        {"action": "sync_from_midtrans", "_selected_action": list(order_ids)},
        follow=True,
    )


def test_operator_sync_applies_midtrans_state_audited_with_the_username(sim, operator):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)

    response = sync(operator, attempt.order_id)

    assert response.status_code == 200
    assert refreshed(attempt) == (OS.PAID, A.PAID)
    change = AuditEntry.objects.get(action="order_status_changed")
    assert (change.actor, change.new_value["status"]) == ("siti", "PAID")
    request = AuditEntry.objects.get(action="order_synced_from_midtrans")
    assert request.actor == "siti" and request.object_id == attempt.order_id
    messages = [str(m) for m in response.context["messages"]]
    assert any("PENDING_PAYMENT -> PAID" in m for m in messages)


def test_sync_of_an_order_already_in_line_changes_nothing(sim, operator):
    attempt = sim_attempt_create()
    sim.choose(attempt.midtrans_order_id)
    sync(operator, attempt.order_id)
    before = payment_state()

    response = sync(operator, attempt.order_id)

    assert payment_state() == before
    assert any("already in line" in str(m) for m in response.context["messages"])


def test_sync_action_is_refused_to_a_user_without_view_permission(sim, client, django_user_model):
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    user = django_user_model.objects.create_user("tamu", "t@example.com", "pw", is_staff=True)
    client.force_login(user)
    before = payment_state()

    response = sync(client, attempt.order_id)

    assert response.status_code == 403
    assert payment_state() == before


def test_sync_action_is_refused_clearly_to_a_view_only_user_and_changes_nothing(sim, viewer):
    # given: a payment settled at Midtrans that a sync would apply, and a staff user who may only view
    attempt = sim_attempt_create()
    sim.pay(attempt.midtrans_order_id)
    midtrans_calls = len(sim.api_calls())
    before = payment_state(), AuditEntry.objects.count()

    # when
    response = sync(viewer, attempt.order_id)

    # then: a clear refusal naming the permission; Midtrans not asked, nothing changed or audited
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert any("payments.sync_order" in m and "Nothing was synced" in m for m in messages)
    assert len(sim.api_calls()) == midtrans_calls
    assert (payment_state(), AuditEntry.objects.count()) == before
    assert refreshed(attempt) == (OS.PENDING_PAYMENT, A.OPEN)
    # and the action is not even offered to them
    page = viewer.get(reverse("admin:payments_order_changelist"))
    assert page.status_code == 200 and b"sync_from_midtrans" not in page.content


def test_order_admin_stays_read_only_for_the_operator(sim, operator):
    attempt = sim_attempt_create()
    url = reverse("admin:payments_order_change", args=[attempt.order_id])
    before = payment_state()

    response = operator.post(url, {"status": "PAID"})

    assert response.status_code == 403
    assert payment_state() == before
    page = operator.get(url)
    assert page.status_code == 200 and b'name="status"' not in page.content
