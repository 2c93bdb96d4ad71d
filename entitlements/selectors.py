"""Reads about course access."""

from django.core import signing

from entitlements.models import Entitlement
from entitlements.services import ACCESS_LINK_SALT


def entitlement_for(*, email: str, course_code: str) -> Entitlement | None:
    """The entitlement that decides whether `email` may watch `course_code`.

    Emails compare case-insensitively (they are stored lower-case). An active one wins
    over a revoked one; among equals the newest grant.
    """
    rows = Entitlement.objects.filter(email=email.strip().lower(), course_code=course_code)
    return (
        rows.filter(status=Entitlement.Status.ACTIVE).order_by("-granted_at").first()
        or rows.order_by("-granted_at").first()
    )


def access_token_email(*, token: str, max_age: int | None = None) -> str | None:
    """The email inside a course access token, or None when it was not signed by us."""
    try:
        return signing.loads(token, salt=ACCESS_LINK_SALT, max_age=max_age)
    except signing.BadSignature:
        return None
