"""Stripe-style Idempotency-Key.

The first request with a key claims it (a committed `in_progress` row with a lease).
Its response (status and body) is stored with a fingerprint of the request body and
replayed for the same key and body. A different body under the same key is refused,
and so is a second request while the first still holds the lease.

Not stored (the row stays claimable, and remembers the order it made):
- 503s: a retry with the same key resumes the same order;
- input errors (400): nothing started, the key is simply released.
A request that crashed leaves its lease to run out, after which a retry takes over.
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from payments.models import IdempotencyRecord

logger = logging.getLogger(__name__)

MAX_KEY_LENGTH = 255
# Keys are kept at least this long whatever IDEMPOTENCY_RETENTION_HOURS says (the contract's minimum).
MIN_RETENTION_HOURS = 24
State = IdempotencyRecord.State


class IdempotencyKeyReused(Exception):
    """The key was first used with a different request body."""


class IdempotencyKeyInUse(Exception):
    """The first request with this key is still running."""


@dataclass(frozen=True)
class IdempotencyClaim:
    record_id: int
    # The order an earlier, unfinished request with this key created (resume it), if any.
    order_id: str | None


@dataclass(frozen=True)
class IdempotencyReplay:
    status: int
    body: dict


def idempotency_lease_seconds() -> float:
    """Longer than any request can take: the Snap call's timeouts plus a margin for the database."""
    return float(settings.MIDTRANS_CONNECT_TIMEOUT) + float(settings.MIDTRANS_READ_TIMEOUT) + 15.0


def idempotency_fingerprint(*, data) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_begin(*, scope: str, key: str, fingerprint: str) -> IdempotencyClaim | IdempotencyReplay:
    """Claim `key` for this request, or say what to answer instead.

    Raises IdempotencyKeyReused (different body) or IdempotencyKeyInUse (still running).
    """
    now = timezone.now()
    lease_until = now + timedelta(seconds=idempotency_lease_seconds())
    # Committed at once in autocommit, so a concurrent request with the key sees the claim.
    record, created = IdempotencyRecord.objects.get_or_create(
        scope=scope,
        key=key,
        defaults={"fingerprint": fingerprint, "state": State.IN_PROGRESS, "locked_until": lease_until},
    )
    if created:
        return IdempotencyClaim(record_id=record.pk, order_id=None)

    # The key exists: compare, replay or wait.
    if record.fingerprint != fingerprint:
        raise IdempotencyKeyReused
    if record.state == State.COMPLETED:
        return _replay(record)
    # One conditional UPDATE, so of two retries racing for a free key only one wins it.
    taken = (
        IdempotencyRecord.objects.filter(pk=record.pk, state=State.IN_PROGRESS)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now))
        .update(locked_until=lease_until, updated_at=now)
    )
    if taken:
        logger.info("idempotency_key_resumed", extra={"scope": scope, "order_id": record.order_id})
        return IdempotencyClaim(record_id=record.pk, order_id=record.order_id)
    record.refresh_from_db()
    if record.state == State.COMPLETED:
        return _replay(record)
    raise IdempotencyKeyInUse


def _replay(record: IdempotencyRecord) -> IdempotencyReplay:
    # A completed record always has its response (database constraint idempotency_completed_has_response).
    return IdempotencyReplay(status=int(record.response_status or 0), body=record.response_body or {})


def idempotency_complete(*, claim: IdempotencyClaim, status: int, body: dict, order_id: str | None) -> None:
    """Store the response to replay (only while the claim is still in progress)."""
    IdempotencyRecord.objects.filter(pk=claim.record_id, state=State.IN_PROGRESS).update(
        state=State.COMPLETED,
        response_status=status,
        response_body=body,
        order_id=order_id or claim.order_id,
        locked_until=None,
        updated_at=timezone.now(),
    )


def idempotency_release(*, claim: IdempotencyClaim, order_id: str | None) -> None:
    """Nothing stored; the next request with this key may run, on `order_id` if one was made."""
    if order_id is None and claim.order_id is None:
        IdempotencyRecord.objects.filter(pk=claim.record_id, state=State.IN_PROGRESS).delete()
        return
    IdempotencyRecord.objects.filter(pk=claim.record_id, state=State.IN_PROGRESS).update(
        order_id=order_id or claim.order_id, locked_until=None, updated_at=timezone.now()
    )


def idempotency_purge(*, older_than_hours: int | None = None) -> int:
    """Delete records older than the retention period (IDEMPOTENCY_RETENTION_HOURS). Returns how many."""
    if older_than_hours is None:
        older_than_hours = settings.IDEMPOTENCY_RETENTION_HOURS
    hours = max(MIN_RETENTION_HOURS, older_than_hours)
    cutoff = timezone.now() - timedelta(hours=hours)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    logger.info("idempotency_purged", extra={"deleted": deleted, "retention_hours": hours})
    return deleted
