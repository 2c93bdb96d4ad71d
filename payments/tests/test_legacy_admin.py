"""Imported orders stay traceable in the admin: the legacy id is shown and searchable."""

import pytest
from django.urls import reverse

from payments.tests.factories import OrderFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("operator", "op@example.com", "pw-for-tests")
    client.force_login(user)
    return client


def test_orders_are_searchable_by_legacy_id_and_show_it(operator_client):
    wanted = OrderFactory(legacy_id="ORD-1700000000123", legacy_source="sqlite")
    other = OrderFactory(legacy_id="ORD-1700000000999", legacy_source="sqlite")

    page = operator_client.get(reverse("admin:payments_order_changelist"), {"q": "ORD-1700000000123"})

    html = page.content.decode()
    assert wanted.id in html and "ORD-1700000000123" in html
    assert other.id not in html


def test_imported_order_page_shows_where_it_came_from(operator_client):
    order = OrderFactory(
        legacy_id="ORD-42", legacy_source="payment_orders", legacy_paid_notice="sent", legacy_flags=["phone_unusable"]
    )

    html = operator_client.get(reverse("admin:payments_order_change", args=[order.id])).content.decode()

    assert "ORD-42" in html and "payment_orders" in html and "Sent by the old system" in html
    assert "phone_unusable" in html


def test_orders_filter_by_legacy_source(operator_client):
    imported = OrderFactory(legacy_id="ORD-7", legacy_source="plan")
    native = OrderFactory()

    html = operator_client.get(reverse("admin:payments_order_changelist"), {"legacy_source": "plan"}).content.decode()

    assert imported.id in html and native.id not in html
