"""The admin's catalog forms refuse what the commands' services refuse, with clear English messages."""

import pytest
from django.urls import reverse

from payments.models import AuditEntry, DiscountCode, Package
from payments.tests.factories import DiscountCodeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("siti", "siti@buatfilm.test", "pw-for-tests")
    client.force_login(user)
    return client


def catalog() -> tuple:
    return (
        sorted(Package.objects.values_list("id", "name", "price", "capacity", "is_active")),
        sorted(DiscountCode.objects.values_list("code", "kind", "value", "max_uses", "package_id")),
        AuditEntry.objects.count(),
    )


def package_data(**overrides) -> dict:
    return {
        "name": "Buat Film Pakai AI",
        "price": "99000",
        "is_active": "on",
        "capacity": "",
        "course_code": "",
    } | overrides


def discount_data(**overrides) -> dict:
    return {
        "code": "LEBARAN",
        "kind": "fixed",
        "value": "20000",
        "package": "ai-movie-course",
        "max_uses": "",
    } | overrides


def errors_of(response) -> str:
    """The error lists as the operator sees them on the page."""
    assert response.status_code == 200, "the form should come back with errors"
    import html
    import re

    return html.unescape(" ".join(re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', response.content.decode())))


def test_fixed_discount_above_the_price_is_refused_like_the_command(operator_client):
    before = catalog()
    response = operator_client.post(reverse("admin:payments_discountcode_add"), discount_data(value="200000"))
    assert "Rp 200000 off would bring the price below Rp 1 for: ai-movie-course (Rp 99000)" in errors_of(response)
    assert catalog() == before


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "percent", "value": "100"}, "Percent must be between 1 and 99"),
        ({"value": "0"}, "greater than or equal to 1"),
        ({"code": "bad code!"}, "must be 1-40 letters, digits"),
    ],
)
def test_bad_discounts_are_refused_with_clear_messages(operator_client, overrides, message):
    before = catalog()
    response = operator_client.post(reverse("admin:payments_discountcode_add"), discount_data(**overrides))
    text = errors_of(response)
    assert message in text and "Constraint" not in text
    assert catalog() == before


def test_a_good_discount_is_saved_through_the_service_and_audited(operator_client):
    response = operator_client.post(reverse("admin:payments_discountcode_add"), discount_data())
    assert response.status_code == 302
    discount = DiscountCode.objects.get(code="LEBARAN")
    assert (discount.kind, discount.value, discount.package_id) == ("fixed", 20000, "ai-movie-course")
    entry = AuditEntry.objects.get(action="discount_created")
    assert entry.actor == "siti"


def test_max_uses_below_the_uses_counted_is_refused(operator_client):
    discount = DiscountCodeFactory(code="HEMAT", max_uses=10)
    DiscountCode.objects.filter(pk=discount.pk).update(times_used=5)
    before = catalog()
    url = reverse("admin:payments_discountcode_change", args=[discount.pk])
    data = discount_data(kind="percent", value="10", max_uses="3")
    response = operator_client.post(url, data)
    assert "already used 5 times" in errors_of(response)
    assert catalog() == before


def test_package_price_zero_gets_a_clear_message_not_a_constraint_name(operator_client):
    before = catalog()
    url = reverse("admin:payments_package_change", args=["ai-movie-course"])
    text = errors_of(operator_client.post(url, package_data(price="0")))
    assert "The price must be at least Rp 1" in text and "package_price_positive" not in text
    assert catalog() == before


def test_package_edit_goes_through_package_upsert_and_is_audited(operator_client):
    url = reverse("admin:payments_package_change", args=["ai-movie-course"])
    response = operator_client.post(url, package_data(price="149000", capacity="100"))
    assert response.status_code == 302
    package = Package.objects.get(pk="ai-movie-course")
    assert (package.price, package.capacity) == (149000, 100)
    entry = AuditEntry.objects.get(action="package_updated")
    assert entry.actor == "siti" and entry.new_value == {"price": 149000, "capacity": 100}


def test_new_package_from_the_admin(operator_client):
    response = operator_client.post(reverse("admin:payments_package_add"), package_data(id="kelas-lanjut"))
    assert response.status_code == 302
    assert Package.objects.get(pk="kelas-lanjut").course_code == "kelas-lanjut"
