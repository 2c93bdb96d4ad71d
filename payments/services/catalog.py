"""Catalog writes: packages (and, with checkout, discount codes)."""

from dataclasses import dataclass

from django.db import transaction

from payments.models import Package
from payments.services.audit import audit_record


class CatalogError(ValueError):
    """Bad catalog input; the message is shown to the operator as is."""


@dataclass(frozen=True)
class UpsertResult:
    package: Package
    created: bool
    changes: dict  # field -> (old, new)


def package_upsert(
    *,
    package_id: str,
    name: str | None = None,
    price: int | None = None,
    capacity: int | None = None,
    clear_capacity: bool = False,
    course_code: str | None = None,
    is_active: bool | None = None,
    actor: str = "system",
) -> UpsertResult:
    if price is not None and price <= 0:
        raise CatalogError(f"price must be a positive whole number of rupiah, got {price}.")
    if capacity is not None and capacity < 0:
        raise CatalogError(f"capacity must be zero or more, got {capacity}.")
    if name is not None and not name.strip():
        raise CatalogError("name must not be empty.")

    wanted = {
        "name": name.strip() if name is not None else None,
        "price": price,
        "capacity": None if clear_capacity else capacity,
        "course_code": course_code,
        "is_active": is_active,
    }
    with transaction.atomic():
        package = Package.objects.select_for_update().filter(id=package_id).first()
        created = package is None
        if created:
            if wanted["name"] is None or price is None:
                raise CatalogError(f"package {package_id!r} does not exist yet: --name and --price are required.")
            package = Package(id=package_id)
        changes = {}
        for field, value in wanted.items():
            if value is None and not (field == "capacity" and clear_capacity):
                continue
            old = getattr(package, field)
            if old != value:
                changes[field] = (None if created else old, value)
                setattr(package, field, value)
        if changes:
            if not package.course_code:
                package.course_code = package.id
                changes["course_code"] = (None, package.id)
            package.full_clean(validate_unique=False)
            package.save()
            audit_record(
                actor=actor,
                action="package_created" if created else "package_updated",
                obj=package,
                old_value={k: v[0] for k, v in changes.items()},
                new_value={k: v[1] for k, v in changes.items()},
            )
    return UpsertResult(package=package, created=created, changes=changes)
