"""Insert-or-skip in one round trip, for the rows every notification writes.

Hand-written because it buys more than the 15 % of end-to-end capacity that justifies
leaving the ORM (bench/webhooks.py; the figures are in the commit that kept it): the ORM's
get_or_create takes four round trips (SELECT, SAVEPOINT, INSERT, RELEASE) where
INSERT ... ON CONFLICT DO NOTHING RETURNING takes one, and bulk_create(ignore_conflicts=True)
returns no primary key. Everything else uses the ORM.
"""

from typing import TypeVar

from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.db.models.fields import AutoFieldMixin

M = TypeVar("M", bound=Model)


def _insert(instances: list[M], *, suffix: str) -> tuple[str, list, BaseDatabaseWrapper]:
    """One multi-row INSERT of `instances` (one model with an automatic primary key): (sql,
    params, connection). Identifiers come from the model's own metadata; every value is a
    parameter. PostgreSQL and SQLite (3.35+) both speak ON CONFLICT and RETURNING."""
    model = type(instances[0])
    connection = connections[router.db_for_write(model)]
    meta = model._meta
    if not isinstance(meta.pk, AutoFieldMixin):
        raise TypeError(f"{meta.label}: this insert needs a model with an automatic primary key")
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    params = [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for obj in instances for f in fields]
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES {', '.join([row] * len(instances))}{suffix}"  # noqa: S608
    return sql, params, connection


def _stored(instance: Model, pk, connection: BaseDatabaseWrapper) -> None:
    # What Model.save() leaves behind: the pk, and the instance marked as stored in that database.
    instance.pk = pk
    instance._state.adding, instance._state.db = False, connection.alias


def row_insert_or_skip(instance: Model) -> bool:
    """INSERT `instance` with ON CONFLICT DO NOTHING RETURNING its pk, in one round trip.

    True (and `instance.pk` set, as after a save) when this call stored the row; False when
    a row with the same unique key exists already, in which case nothing was written and the
    caller's transaction is intact: no IntegrityError, no savepoint needed. A concurrent
    insert of the same key waits for the other transaction and then skips.
    """
    qn = connections[router.db_for_write(type(instance))].ops.quote_name
    pk = qn(str(type(instance)._meta.pk.column))
    sql, params, connection = _insert([instance], suffix=f" ON CONFLICT DO NOTHING RETURNING {pk}")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    _stored(instance, row[0], connection)
    return True


def rows_insert_or_skip(instances: list[M], *, key: str) -> list[M]:
    """row_insert_or_skip() for several rows in one statement, skipping those whose unique
    field `key` is taken (ON CONFLICT (key) DO NOTHING). Returns the rows this call stored,
    in the order given, their pks set. The rows are inserted in `key` order, so transactions
    inserting overlapping keys take the unique index's locks in the same order and cannot
    deadlock."""
    if not instances:
        return []
    meta = type(instances[0])._meta
    field = meta.get_field(key)
    assert isinstance(field, Field)
    ordered = sorted(instances, key=lambda obj: getattr(obj, field.attname))
    qn = connections[router.db_for_write(type(instances[0]))].ops.quote_name
    column, pk = qn(str(field.column)), qn(str(meta.pk.column))
    suffix = f" ON CONFLICT ({column}) DO NOTHING RETURNING {pk}, {column}"
    sql, params, connection = _insert(ordered, suffix=suffix)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        stored = {value: pk for pk, value in cursor.fetchall()}
    created = [obj for obj in instances if getattr(obj, field.attname) in stored]
    for obj in created:
        _stored(obj, stored[getattr(obj, field.attname)], connection)
    return created
