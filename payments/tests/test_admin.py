"""Payment records are read-only in the admin, for everyone, superusers included."""

import pytest
from django.urls import reverse

from entitlements.models import Entitlement
from entitlements.tests.factories import EntitlementFactory
from notifications.models import Notification
from notifications.tests.factories import NotificationFactory
from payments.models import AuditEntry, Order, Package, PaymentAttempt, PaymentEvent
from payments.tests.factories import OrderFactory, PaymentAttemptFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("operator", "op@example.com", "pw-for-tests")
    client.force_login(user)
    return client


@pytest.fixture
def paid_order():
    attempt = PaymentAttemptFactory(status=PaymentAttempt.Status.OPEN)
    event = PaymentEvent.objects.create(
        attempt=attempt,
        midtrans_order_id=attempt.midtrans_order_id,
        source=PaymentEvent.Source.WEBHOOK,
        dedup_key="test-event-1",
        transaction_status="settlement",
        status_code="200",
        gross_amount="99000.00",
        payload={"transaction_status": "settlement"},
    )
    EntitlementFactory(order_id=attempt.order.id, email=attempt.order.customer_email)
    NotificationFactory(reference=attempt.order.id)
    AuditEntry.objects.create(actor="webhook", action="order_paid", object_type="order", object_id=attempt.order.id)
    return attempt.order, attempt, event


READ_ONLY_MODELS = [
    ("payments", "order"),
    ("payments", "paymentattempt"),
    ("payments", "paymentevent"),
    ("payments", "auditentry"),
    ("entitlements", "entitlement"),
    ("notifications", "notification"),
    ("notifications", "notificationattempt"),
]


@pytest.mark.parametrize(("app", "model"), READ_ONLY_MODELS)
def test_payment_records_cannot_be_added(operator_client, app, model):
    response = operator_client.get(reverse(f"admin:{app}_{model}_add"))
    assert response.status_code == 403


def _pk_of(app, model, paid_order):
    order, attempt, event = paid_order
    return {
        "order": order.pk,
        "paymentattempt": attempt.pk,
        "paymentevent": event.pk,
        "auditentry": AuditEntry.objects.get().pk,
        "entitlement": Entitlement.objects.get().pk,
        "notification": Notification.objects.get().pk,
    }.get(model)


def test_order_change_page_shows_everything_and_edits_nothing(operator_client, paid_order):
    order, attempt, event = paid_order
    url = reverse("admin:payments_order_change", args=[order.pk])

    # when an operator opens the order
    page = operator_client.get(url)

    # then attempts, events, entitlement, notifications and the audit trail are on it, with no form to save
    assert page.status_code == 200
    html = page.content.decode()
    for expected in [attempt.midtrans_order_id, "settlement", order.customer_email, "payment_received", "order_paid"]:
        assert expected in html
    assert 'name="_save"' not in html
    assert 'name="status"' not in html

    # and a crafted POST changes nothing
    response = operator_client.post(url, {"status": "PAID", "amount": 1, "customer_email": "x@example.com"})
    assert response.status_code == 403
    order.refresh_from_db()
    assert (order.status, order.amount) == (Order.Status.CREATED, 99000)


@pytest.mark.parametrize(("app", "model"), [m for m in READ_ONLY_MODELS if m[1] != "notificationattempt"])
def test_payment_records_cannot_be_changed_or_deleted(operator_client, paid_order, app, model):
    pk = _pk_of(app, model, paid_order)
    change = operator_client.post(reverse(f"admin:{app}_{model}_change", args=[pk]), {"status": "x"})
    delete = operator_client.post(reverse(f"admin:{app}_{model}_delete", args=[pk]), {"post": "yes"})
    assert change.status_code == 403
    assert delete.status_code == 403
    # the bulk delete action is not offered either
    changelist = operator_client.get(reverse(f"admin:{app}_{model}_changelist"))
    assert changelist.status_code == 200
    assert "delete_selected" not in changelist.content.decode()
    assert Order.objects.count() == 1
    assert PaymentEvent.objects.count() == 1


@pytest.mark.parametrize("field", ["id", "customer_email", "customer_phone"])
def test_orders_are_searchable_by_id_email_and_phone(operator_client, field):
    wanted = OrderFactory(customer_email="cari@example.com", customer_phone="+6281299990000")
    OrderFactory(customer_email="lain@example.com", customer_phone="+6281211112222")
    term = getattr(wanted, field)
    page = operator_client.get(reverse("admin:payments_order_changelist"), {"q": term})
    html = page.content.decode()
    assert wanted.id in html
    assert "lain@example.com" not in html


def test_orders_filter_by_status_and_package(operator_client):
    paid = OrderFactory(status=Order.Status.EXPIRED)
    open_order = OrderFactory()
    page = operator_client.get(reverse("admin:payments_order_changelist"), {"status__exact": "EXPIRED"})
    html = page.content.decode()
    assert paid.id in html and open_order.id not in html
    page = operator_client.get(
        reverse("admin:payments_order_changelist"), {"package__id__exact": open_order.package_id}
    )
    html = page.content.decode()
    assert open_order.id in html and paid.id not in html


def test_packages_stay_editable(operator_client):
    url = reverse("admin:payments_package_change", args=["ai-movie-course"])
    data = {
        "name": "Buat Film Pakai AI",
        "price": 149000,
        "is_active": "on",
        "capacity": "",
        "course_code": "ai-movie-course",
    }
    response = operator_client.post(url, data)
    assert response.status_code == 302
    assert Package.objects.get(id="ai-movie-course").price == 149000
