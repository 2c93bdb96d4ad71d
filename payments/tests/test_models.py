import pytest
from django.db import IntegrityError, transaction

from payments.models import Order, Package
from payments.tests.factories import OrderFactory, PackageFactory

pytestmark = pytest.mark.django_db


def test_launch_package_is_created_by_migration():
    package = Package.objects.get(id="ai-movie-course")
    assert (package.name, package.price, package.currency, package.course_code) == (
        "Buat Film Pakai AI",
        99000,
        "IDR",
        "ai-movie-course",
    )


def test_order_id_has_public_format():
    order = OrderFactory()
    assert order.id.startswith("BF-") and len(order.id) == len("BF-20261122-7K3QX9AB")


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": 0, "list_price": 0},
        {"status": "BOGUS"},
        {"customer_email": "Budi@Example.com"},
        {"amount": 5000},  # not list_price - discount
        {"status": "PAID"},  # paid without paid_at
    ],
)
def test_order_invariants_are_database_constraints(changes):
    order = OrderFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.filter(pk=order.pk).update(**changes)


def test_only_one_open_order_per_email_and_package():
    package = PackageFactory()
    OrderFactory(package=package, customer_email="a@example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        OrderFactory(package=package, customer_email="a@example.com")
    assert Order.objects.filter(customer_email="a@example.com").count() == 1
