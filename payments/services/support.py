"""The operators' support tools: close a review case, correct a customer's contact, resend access.

Each is called by a button on the admin's order page (which checks the permission) and
locks the order row, so two operators clicking at once act one after the other. Every
change is audited with the operator's username and the old and new values. Payment state
is never changed here: that is Midtrans' word (payments.services.events) or a refund
(payments.services.refunds).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from entitlements.models import Entitlement
from entitlements.services import entitlement_email_change
from payments import notices
from payments.models import AuditEntry, Order
from payments.services.audit import audit_record
from payments.services.checkout import phone_normalize
from payments.states import PAID_ORDER_STATUSES, order_lock

logger = logging.getLogger(__name__)

NOTE_MAX_LENGTH = 1000


class SupportRefused(Exception):
    """The action cannot be done as asked; the message says why. Nothing was changed."""


def _order_locked(order_id: str) -> Order:
    try:
        order = order_lock(order_id=order_id)
    except Order.DoesNotExist:
        raise SupportRefused(f"No order {order_id!r}.") from None
    return order


def review_resolve(*, order_id: str, operator: str, note: str) -> Order:
    """Close the order's review case with the operator's note; it leaves the review queue.

    The reasons it was flagged go into the audit entry with the note; a later flag opens a new case.
    """
    note = (note or "").strip()
    if not note:
        raise SupportRefused("Say how the case was resolved: a note is required.")
    if len(note) > NOTE_MAX_LENGTH:
        raise SupportRefused(f"The note is longer than {NOTE_MAX_LENGTH} characters.")
    with transaction.atomic():
        order = _order_locked(order_id)
        if not order.needs_review:
            raise SupportRefused(f"Order {order.pk} has no open review case.")
        reason = order.review_reason
        order.needs_review = False
        order.review_reason = ""
        order.review_resolved_at = timezone.now()
        order.review_resolved_by = operator
        order.review_resolution_note = note
        order.save(
            update_fields=[
                "needs_review",
                "review_reason",
                "review_resolved_at",
                "review_resolved_by",
                "review_resolution_note",
                "updated_at",
            ]
        )
        audit_record(
            actor=operator,
            action="review_resolved",
            obj=order,
            old_value={"needs_review": True, "review_reason": reason},
            new_value={"needs_review": False, "note": note},
        )
    logger.info("order_review_resolved", extra={"order_id": order.pk, "actor": operator})
    return order


def _email_clean(raw: str) -> str:
    email = (raw or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise SupportRefused(f"{raw!r} is not a valid email address.") from None
    if len(email) > Order._meta.get_field("customer_email").max_length:
        raise SupportRefused("The email address is too long.")
    return email


def _phone_clean(raw: str) -> str:
    try:
        return phone_normalize(raw=raw)
    except ValueError:
        raise SupportRefused(
            f"{raw!r} is not a valid mobile number; write it like 081234567890 or +6281234567890."
        ) from None


def contact_correct(*, order_id: str, operator: str, email: str = "", phone: str = "") -> Order:
    """Correct the customer's email and/or phone on the order (audited with old and new values).

    The course access follows the new email at once: the entitlement is moved with it, so the
    course platform's check answers for the new address (and no longer for the mistyped one).
    """
    if not (email or "").strip() and not (phone or "").strip():
        raise SupportRefused("Give a new email or a new phone number.")
    new_email = _email_clean(email) if (email or "").strip() else None
    new_phone = _phone_clean(phone) if (phone or "").strip() else None
    try:
        with transaction.atomic():
            order = _order_locked(order_id)
            old = {"customer_email": order.customer_email, "customer_phone": order.customer_phone}
            new = {
                "customer_email": new_email or order.customer_email,
                "customer_phone": new_phone or order.customer_phone,
            }
            if new == old:
                raise SupportRefused("That is what the order already says; nothing to change.")
            order.customer_email, order.customer_phone = new["customer_email"], new["customer_phone"]
            order.save(update_fields=["customer_email", "customer_phone", "updated_at"])
            changed = [name for name in new if new[name] != old[name]]
            audit_record(
                actor=operator,
                action="contact_corrected",
                obj=order,
                old_value={name: old[name] for name in changed},
                new_value={name: new[name] for name in changed},
            )
            if "customer_email" in changed:
                moved = entitlement_email_change(order_id=order.pk, email=order.customer_email)
                if moved is not None:
                    entitlement, was = moved
                    audit_record(
                        actor=operator,
                        action="entitlement_email_changed",
                        obj=entitlement,
                        old_value={"email": was},
                        new_value={"email": entitlement.email, "order_id": order.pk},
                    )
    except IntegrityError:
        # The one open order per email and package: the new address already has one.
        raise SupportRefused(
            "The new email already has an open order for this package; resolve that order first."
        ) from None
    logger.info("order_contact_corrected", extra={"order_id": order.pk, "actor": operator, "fields": ",".join(changed)})
    return order


def access_resend(*, order_id: str, operator: str) -> Order:
    """Send the "payment received" message with the access link again, built from the order as
    it is now (current email and phone, a fresh link): sent messages are purged after
    NOTIFICATION_RETENTION_DAYS, so the old row may be gone. Once per call, and at most once
    per RESEND_ACCESS_MIN_SECONDS per order (a double click sends one)."""
    with transaction.atomic():
        order = _order_locked(order_id)
        if order.status not in PAID_ORDER_STATUSES:
            raise SupportRefused(
                f"Order {order.pk} is {order.get_status_display().lower()}: it gives no access to resend."
            )
        if not Entitlement.objects.filter(order_id=order.pk, status=Entitlement.Status.ACTIVE).exists():
            raise SupportRefused(f"Order {order.pk} has no active course access to resend.")
        resent = AuditEntry.objects.filter(object_type="order", object_id=order.pk, action="access_resent")
        wait = timedelta(seconds=settings.RESEND_ACCESS_MIN_SECONDS)
        last = resent.order_by("-created_at").values_list("created_at", flat=True).first()
        if last is not None and timezone.now() - last < wait:
            seconds = int((last + wait - timezone.now()).total_seconds()) + 1
            raise SupportRefused(f"Access for {order.pk} was just resent; you can resend it again in {seconds} s.")
        number = resent.count() + 1
        notices.notice_paid(order=order, event=f"paid:resend:{number}")
        audit_record(
            actor=operator,
            action="access_resent",
            obj=order,
            new_value={"number": number, "email": order.customer_email, "phone": order.customer_phone},
        )
    logger.info("order_access_resent", extra={"order_id": order.pk, "actor": operator, "number": number})
    return order
