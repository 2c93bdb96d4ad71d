import pytest
from django.test import Client
from django.utils.dateparse import parse_datetime

from entitlements.models import Entitlement
from entitlements.services import entitlement_grant, entitlement_revoke

pytestmark = pytest.mark.django_db

URL = "/api/entitlements/check/"
TOKEN = "test-entitlements-token"  # buatfilm.testing sets ENTITLEMENTS_API_TOKEN to this


def _get(params, token=TOKEN, header=None):
    headers = {"HTTP_AUTHORIZATION": header if header is not None else f"Bearer {token}"}
    return Client().get(URL, params, **headers)


def test_active_entitlement_is_reported_with_order_and_time():
    # given
    entitlement = entitlement_grant(
        email="budi@example.com", course_code="ai-movie-course", order_id="BF-1", reason="x"
    )

    # when
    response = _get({"email": "Budi@EXAMPLE.com", "course": "ai-movie-course"})

    # then
    assert response.status_code == 200
    body = response.json()
    assert body["email"] == "budi@example.com" and body["course"] == "ai-movie-course"
    assert body["active"] is True and body["order_id"] == "BF-1"
    assert parse_datetime(body["granted_at"]) == entitlement.granted_at


def test_unknown_and_revoked_entitlements_are_inactive():
    entitlement_grant(email="budi@example.com", course_code="c", order_id="BF-2", reason="x")
    entitlement_revoke(order_id="BF-2", reason="refund")

    revoked = _get({"email": "budi@example.com", "course": "c"}).json()
    unknown = _get({"email": "siapa@example.com", "course": "c"}).json()

    assert revoked == {
        "email": "budi@example.com",
        "course": "c",
        "active": False,
        "granted_at": None,
        "order_id": None,
    }
    assert unknown["active"] is False and unknown["order_id"] is None


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer wrong-token", "Basic dGVzdDp0ZXN0", f"Token {TOKEN}", f"Bearer {TOKEN}x"],
)
def test_missing_or_wrong_token_is_refused(header):
    entitlement_grant(email="budi@example.com", course_code="c", order_id="BF-3", reason="x")

    response = _get({"email": "budi@example.com", "course": "c"}, header=header)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert "active" not in response.json()


@pytest.mark.parametrize(
    "header",
    # "Bearer  " (two spaces) presents an empty token that the header parsing lets through:
    # it equals the blank setting, so only the "no token configured" guard can refuse it.
    ["Bearer ", "Bearer  ", "bearer  ", "Bearer \t"],
)
def test_no_token_configured_refuses_everyone(settings, header):
    # given: no token configured, and an entitlement the caller would like to read
    settings.ENTITLEMENTS_API_TOKEN = ""
    entitlement_grant(email="budi@example.com", course_code="c", order_id="BF-4", reason="x")
    before = list(Entitlement.objects.values())

    # when: the caller presents an empty token, which matches the blank setting
    response = _get({"email": "budi@example.com", "course": "c"}, header=header)

    # then: the API is closed, not open; nothing is revealed or changed
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert "active" not in response.json()
    assert list(Entitlement.objects.values()) == before


@pytest.mark.parametrize(
    "params,field",
    [
        ({"course": "c"}, "email"),
        ({"email": "budi@example.com"}, "course"),
        ({"email": "nope", "course": "c"}, "email"),
    ],
)
def test_bad_query_is_a_clear_400_and_changes_nothing(params, field):
    entitlement_grant(email="budi@example.com", course_code="c", order_id="BF-4", reason="x")
    before = list(Entitlement.objects.values())

    response = _get(params)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert field in response.json()["error"]["fields"]
    assert list(Entitlement.objects.values()) == before
