"""The audit trail: who changed what, from what to what, in which request."""

from django.db import models

from buatfilm.logging import current_request_id
from payments.models import AuditEntry


def audit_record(
    *,
    actor: str,
    action: str,
    obj: models.Model,
    old_value=None,
    new_value=None,
    correlation_id: str | None = None,
) -> AuditEntry:
    return AuditEntry.objects.create(
        actor=actor,
        action=action,
        object_type=obj._meta.model_name,
        object_id=str(obj.pk),
        old_value=old_value,
        new_value=new_value,
        correlation_id=correlation_id or current_request_id(),
    )
