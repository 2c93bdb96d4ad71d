"""entitlement_grant_many: the bulk form of entitlement_grant, with the same guarantees."""

import pytest

from entitlements.models import Entitlement
from entitlements.services import entitlement_grant, entitlement_grant_many, entitlement_revoke

pytestmark = pytest.mark.django_db


def _grant(order_id: str, email: str = "Budi@Example.com ") -> dict:
    return {"email": email, "course_code": "ai-movie-course", "order_id": order_id, "reason": "import"}


def test_grant_many_grants_each_order_once():
    entitlement_grant_many(grants=[_grant("BF-1"), _grant("BF-2")])
    entitlement_grant_many(grants=[_grant("BF-1"), _grant("BF-2"), _grant("BF-3")])

    assert sorted(Entitlement.objects.values_list("order_id", "email", "status")) == [
        ("BF-1", "budi@example.com", "active"),
        ("BF-2", "budi@example.com", "active"),
        ("BF-3", "budi@example.com", "active"),
    ]


def test_grant_many_reactivates_a_revoked_entitlement_like_grant_does():
    entitlement_grant(**_grant("BF-1"))
    entitlement_revoke(order_id="BF-1", reason="reversal")

    entitlement_grant_many(grants=[_grant("BF-1"), _grant("BF-2")])

    assert sorted(Entitlement.objects.values_list("order_id", "status", "revoked_at")) == [
        ("BF-1", "active", None),
        ("BF-2", "active", None),
    ]
