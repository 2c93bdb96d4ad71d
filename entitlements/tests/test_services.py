from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import transaction

from entitlements.models import Entitlement
from entitlements.selectors import access_token_email, entitlement_for
from entitlements.services import access_link_build, entitlement_grant, entitlement_revoke

pytestmark = pytest.mark.django_db


def test_grant_creates_one_active_entitlement_with_lowercased_email():
    # when
    entitlement = entitlement_grant(
        email=" Budi@Example.COM ", course_code="ai-movie-course", order_id="BF-1", reason="paid"
    )

    # then
    entitlement.refresh_from_db()
    assert (entitlement.email, entitlement.course_code, entitlement.status, entitlement.order_id) == (
        "budi@example.com",
        "ai-movie-course",
        "active",
        "BF-1",
    )
    assert entitlement.revoked_at is None and entitlement.reason == "paid"


def test_grant_twice_for_the_same_order_keeps_one_row_unchanged():
    first = entitlement_grant(email="a@example.com", course_code="c", order_id="BF-2", reason="paid")
    with transaction.atomic():
        second = entitlement_grant(email="a@example.com", course_code="c", order_id="BF-2", reason="duplicate")

    assert second.pk == first.pk
    assert Entitlement.objects.filter(order_id="BF-2").count() == 1
    assert Entitlement.objects.get(order_id="BF-2").reason == "paid"
    assert Entitlement.objects.get(order_id="BF-2").granted_at == first.granted_at


def test_revoke_then_grant_again_reactivates_the_same_row():
    first = entitlement_grant(email="a@example.com", course_code="c", order_id="BF-3", reason="paid")
    revoked = entitlement_revoke(order_id="BF-3", reason="bank reversal")
    assert revoked.status == "revoked" and revoked.revoked_at is not None

    again = entitlement_grant(email="a@example.com", course_code="c", order_id="BF-3", reason="late settlement")

    again.refresh_from_db()
    assert again.pk == first.pk and again.status == "active" and again.revoked_at is None
    assert again.reason == "late settlement"
    assert Entitlement.objects.count() == 1


def test_revoke_is_idempotent_and_keeps_the_first_revocation():
    entitlement_grant(email="a@example.com", course_code="c", order_id="BF-4", reason="paid")
    first = entitlement_revoke(order_id="BF-4", reason="refund")
    second = entitlement_revoke(order_id="BF-4", reason="chargeback")

    second.refresh_from_db()
    assert second.pk == first.pk and second.status == "revoked"
    assert (second.reason, second.revoked_at) == ("refund", first.revoked_at)


def test_revoke_of_an_order_without_entitlement_returns_none_and_creates_nothing():
    assert entitlement_revoke(order_id="BF-NONE", reason="refund") is None
    assert Entitlement.objects.count() == 0


def test_access_link_uses_template_and_a_signed_token_of_the_email(settings):
    settings.COURSE_ACCESS_URL = "https://kelas.example/{course}/masuk?token={token}"

    link = access_link_build(email="Budi@Example.com", course_code="ai-movie-course")

    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "kelas.example", "/ai-movie-course/masuk")
    token = parse_qs(parts.query)["token"][0]
    assert access_token_email(token=token) == "budi@example.com"


def test_access_token_that_was_tampered_with_is_rejected():
    link = access_link_build(email="budi@example.com", course_code="c")
    token = parse_qs(urlsplit(link).query)["token"][0]

    assert access_token_email(token=token[:-2] + ("AA" if not token.endswith("AA") else "BB")) is None


def test_entitlement_for_prefers_active_and_ignores_email_case():
    entitlement_grant(email="a@example.com", course_code="c", order_id="BF-5", reason="paid")
    entitlement_revoke(order_id="BF-5", reason="refund")
    entitlement_grant(email="a@example.com", course_code="c", order_id="BF-6", reason="paid again")

    found = entitlement_for(email="A@EXAMPLE.com", course_code="c")

    assert found.order_id == "BF-6" and found.status == "active"
    assert entitlement_for(email="a@example.com", course_code="other") is None
