"""Database statements the ORM cannot say in one round trip."""

from django.db import connections
from django.db.models import Model


def row_insert_or_skip(instance: Model) -> bool:
    """INSERT `instance` with ON CONFLICT DO NOTHING RETURNING its pk, in one round trip.

    True (and `instance.pk` set, as after a save) when this call stored the row; False when
    a row with the same unique key exists already, in which case nothing was written and the
    caller's transaction is intact: no IntegrityError, no savepoint needed. A concurrent
    insert of the same key waits for the other transaction and then skips.

    Django's bulk_create(ignore_conflicts=True) sends the same INSERT but returns no pk, so
    the row would have to be read back, and outside a transaction it wraps the INSERT in
    BEGIN/COMMIT: four round trips where one does. PostgreSQL and SQLite (3.35+) both speak
    this statement.
    """
    model = type(instance)
    connection = connections[model.objects.db]
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    values = [f.get_db_prep_save(f.pre_save(instance, add=True), connection) for f in fields]
    qn = connection.ops.quote_name
    # Identifiers from the model's own metadata; every value is a parameter.
    columns = ", ".join(qn(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    table, pk = qn(meta.db_table), qn(meta.pk.column)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) ON CONFLICT DO NOTHING RETURNING {pk}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    if row is None:
        return False
    instance.pk = row[0]
    instance._state.adding, instance._state.db = False, connection.alias
    return True


def rows_insert(instances: list[Model]) -> None:
    """INSERT rows of one model with a single multi-row statement; nothing is read back.

    For write-only rows (an audit trail) whose primary keys nobody needs: bulk_create would
    also ask for the keys back and sort the rows into batches, which costs more CPU than the
    INSERT itself when a transaction writes two or three of them.
    """
    if not instances:
        return
    model = type(instances[0])
    connection = connections[model.objects.db]
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    values = [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for obj in instances for f in fields]
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES {', '.join([row] * len(instances))}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
    for obj in instances:
        obj._state.adding, obj._state.db = False, connection.alias
