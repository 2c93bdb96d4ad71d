"""Grant and revoke course access. Called only by the payments services, inside their
transaction, so an entitlement changes together with the order that pays for it.

At most one entitlement exists per order (a unique `order_id`), and both functions are
idempotent: a duplicated or replayed payment event cannot grant twice or fail.
"""

import logging
from urllib.parse import quote

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.utils import timezone

from common.db import row_insert_or_skip
from entitlements.models import Entitlement

logger = logging.getLogger(__name__)

# The salt scopes the signed token to this use: a token signed for anything else in
# the project (sessions, password resets) never validates as an access token.
ACCESS_LINK_SALT = "entitlements.access-link"


def _reason_trim(reason: str) -> str:
    return reason[: Entitlement._meta.get_field("reason").max_length]


def _in_transaction(func):
    """Run `func` in the caller's transaction, or in its own when there is none.

    The payments services always call inside their atomic block (one transaction with
    the order change); a savepoint there would only cost round trips.
    """

    def wrapper(**kwargs):
        if transaction.get_connection().in_atomic_block:
            return func(**kwargs)
        with transaction.atomic():
            return func(**kwargs)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


@_in_transaction
def entitlement_grant(*, email: str, course_code: str, order_id: str, reason: str) -> Entitlement:
    """Give `email` access to `course_code`, paid by `order_id`. Idempotent per order.

    An active entitlement for the order is returned unchanged. A revoked one (e.g. after a
    bank reversal, then a late settlement of the same order) is made active again.
    """
    email = email.strip().lower()
    now = timezone.now()
    entitlement = Entitlement(
        email=email,
        course_code=course_code,
        order_id=order_id,
        status=Entitlement.Status.ACTIVE,
        granted_at=now,
        reason=_reason_trim(reason),
    )
    # One entitlement per order (unique): a concurrent grant of the same order waits for the
    # other to commit, then skips, and the row is read below. Nothing raises, so the caller's
    # transaction stays intact.
    if row_insert_or_skip(entitlement):
        logger.info(
            "entitlement_granted",
            extra={"order_id": order_id, "course": course_code, "entitlement_id": entitlement.pk},
        )
        return entitlement

    entitlement = Entitlement.objects.select_for_update().get(order_id=order_id)
    if entitlement.status == Entitlement.Status.REVOKED:
        entitlement.status = Entitlement.Status.ACTIVE
        entitlement.revoked_at = None
        entitlement.granted_at = now
        entitlement.reason = _reason_trim(reason)
        entitlement.save(update_fields=["status", "revoked_at", "granted_at", "reason", "updated_at"])
        logger.info(
            "entitlement_regranted",
            extra={"order_id": order_id, "course": course_code, "entitlement_id": entitlement.pk},
        )
    return entitlement


@_in_transaction
def entitlement_grant_many(*, grants: list[dict]) -> None:
    """entitlement_grant() for many orders at once (a bulk import), with its guarantees: one
    entitlement per order, never twice. Each item has the keyword arguments of
    entitlement_grant. Orders without an entitlement get theirs in one INSERT (a concurrent
    grant of the same order wins and this one is skipped); the others go through
    entitlement_grant(), which leaves an active one alone and re-activates a revoked one."""
    now = timezone.now()
    ids = [g["order_id"] for g in grants]
    existing = set(Entitlement.objects.filter(order_id__in=ids).values_list("order_id", flat=True))
    rows = [
        Entitlement(
            email=g["email"].strip().lower(),
            course_code=g["course_code"],
            order_id=g["order_id"],
            status=Entitlement.Status.ACTIVE,
            granted_at=now,
            reason=_reason_trim(g["reason"]),
        )
        for g in grants
        if g["order_id"] not in existing
    ]
    Entitlement.objects.bulk_create(rows, ignore_conflicts=True)
    for row in rows:
        logger.info("entitlement_granted", extra={"order_id": row.order_id, "course": row.course_code})
    for grant in grants:
        if grant["order_id"] in existing:
            entitlement_grant(**grant)


@_in_transaction
def entitlement_revoke(*, order_id: str, reason: str) -> Entitlement | None:
    """Withdraw the access `order_id` paid for. Idempotent; None when the order granted nothing."""
    entitlement = Entitlement.objects.select_for_update().filter(order_id=order_id).first()
    if entitlement is None or entitlement.status == Entitlement.Status.REVOKED:
        return entitlement
    entitlement.status = Entitlement.Status.REVOKED
    entitlement.revoked_at = timezone.now()
    entitlement.reason = _reason_trim(reason)
    entitlement.save(update_fields=["status", "revoked_at", "reason", "updated_at"])
    logger.info(
        "entitlement_revoked",
        extra={"order_id": order_id, "course": entitlement.course_code, "entitlement_id": entitlement.pk},
    )
    return entitlement


def access_token_make(*, email: str) -> str:
    return signing.dumps(email.strip().lower(), salt=ACCESS_LINK_SALT, compress=True)


def access_link_build(*, email: str, course_code: str) -> str:
    """The course link sent in the "paid" message: COURSE_ACCESS_URL with {course} and {token}.

    The token is the customer's email signed with SECRET_KEY (django.core.signing); the
    course platform can verify it with the same key, or ask the check API.
    """
    token = access_token_make(email=email)
    return settings.COURSE_ACCESS_URL.format(course=quote(course_code, safe=""), token=quote(token, safe=""))


@_in_transaction
def entitlement_email_change(*, order_id: str, email: str) -> tuple[Entitlement, str] | None:
    """Give the access `order_id` paid for to `email` instead (an operator corrected a mistyped
    address). Returns (entitlement, old email), or None when the order granted nothing."""
    email = email.strip().lower()
    entitlement = Entitlement.objects.select_for_update().filter(order_id=order_id).first()
    if entitlement is None:
        return None
    old = entitlement.email
    if old != email:
        entitlement.email = email
        entitlement.save(update_fields=["email", "updated_at"])
        logger.info("entitlement_email_changed", extra={"order_id": order_id, "entitlement_id": entitlement.pk})
    return entitlement, old
