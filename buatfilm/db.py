"""Database statements the ORM cannot say in one round trip."""

import functools

from django.db import DatabaseError, connections, router
from django.db.models import Model
from django.db.models.fields import AutoFieldMixin


def _insert(instances: list[Model], *, suffix: str = "", given_pk: bool = False) -> tuple[str, list, object]:
    """One multi-row INSERT of `instances` (one model): (sql, params, connection). The primary
    key is left to the database, or with `given_pk` taken from the instances (a key the model
    makes itself, such as a default). Identifiers come from the model's own metadata; every
    value is a parameter. PostgreSQL and SQLite (3.35+) both speak ON CONFLICT and RETURNING."""
    model = type(instances[0])
    connection = connections[router.db_for_write(model)]
    meta = model._meta
    if given_pk == isinstance(meta.pk, AutoFieldMixin):
        need = "a primary key of its own" if given_pk else "an automatic primary key"
        raise TypeError(f"{meta.label}: this insert needs a model with {need}")
    fields = [f for f in meta.concrete_fields if given_pk or not f.primary_key]
    params = [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for obj in instances for f in fields]
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES {', '.join([row] * len(instances))}{suffix}"  # noqa: S608
    return sql, params, connection


def _stored(instance: Model, pk, connection) -> None:
    instance.pk = pk
    instance._state.adding, instance._state.db = False, connection.alias


def row_insert_or_skip(instance: Model) -> bool:
    """INSERT `instance` with ON CONFLICT DO NOTHING RETURNING its pk, in one round trip.

    True (and `instance.pk` set, as after a save) when this call stored the row; False when
    a row with the same unique key exists already, in which case nothing was written and the
    caller's transaction is intact: no IntegrityError, no savepoint needed. A concurrent
    insert of the same key waits for the other transaction and then skips.

    Django's bulk_create(ignore_conflicts=True) sends the same INSERT but returns no pk, so
    the row would have to be read back, and outside a transaction it wraps the INSERT in
    BEGIN/COMMIT: four round trips where one does.
    """
    return _insert_returning_pk(instance, on_conflict=" ON CONFLICT DO NOTHING")


def _insert_returning_pk(instance: Model, *, on_conflict: str = "") -> bool:
    """INSERT `instance` (automatic pk) and set the pk the database gave it; False when
    `on_conflict` skipped the row."""
    model = type(instance)
    pk = connections[router.db_for_write(model)].ops.quote_name(model._meta.pk.column)
    sql, params, connection = _insert([instance], suffix=f"{on_conflict} RETURNING {pk}")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    _stored(instance, row[0], connection)
    return True


def rows_insert_or_skip(instances: list[Model], *, key: str) -> list[Model]:
    """row_insert_or_skip() for several rows in one statement, skipping those whose unique
    field `key` is taken (ON CONFLICT (key) DO NOTHING). Returns the rows this call stored,
    in the order given, their pks set. The rows are inserted in `key` order, so transactions
    inserting overlapping keys take the unique index's locks in the same order and cannot
    deadlock."""
    if not instances:
        return []
    meta = type(instances[0])._meta
    field = meta.get_field(key)
    ordered = sorted(instances, key=lambda obj: getattr(obj, field.attname))
    qn = connections[router.db_for_write(type(instances[0]))].ops.quote_name
    suffix = f" ON CONFLICT ({qn(field.column)}) DO NOTHING RETURNING {qn(meta.pk.column)}, {qn(field.column)}"
    sql, params, connection = _insert(ordered, suffix=suffix)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        stored = {value: pk for pk, value in cursor.fetchall()}
    created = [obj for obj in instances if getattr(obj, field.attname) in stored]
    for obj in created:
        _stored(obj, stored[getattr(obj, field.attname)], connection)
    return created


def row_insert(instance: Model) -> None:
    """save(force_insert=True) as one plain INSERT: a unique or check constraint refuses it
    with the same IntegrityError. An automatic primary key is read back (RETURNING) and set;
    a key of the model's own (e.g. from a default) is inserted as it is. No signals are sent
    and a model's own save() is skipped, as for row_save(). The ORM spends two to three times
    the CPU composing the same statement."""
    if isinstance(type(instance)._meta.pk, AutoFieldMixin):
        _insert_returning_pk(instance)
        return
    sql, params, connection = _insert([instance], given_pk=True)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    _stored(instance, instance.pk, connection)


def rows_insert(instances: list[Model]) -> None:
    """INSERT rows of one model with a single multi-row statement; nothing is read back.

    For write-only rows (an audit trail) whose primary keys nobody needs: bulk_create would
    also ask for the keys back and sort the rows into batches, which costs more CPU than the
    INSERT itself when a transaction writes two or three of them.
    """
    if not instances:
        return
    sql, params, connection = _insert(instances)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    for obj in instances:
        _stored(obj, obj.pk, connection)  # the pk stays as it was (None for an automatic one)


def _where_check(where: dict) -> None:
    # `col = NULL` matches nothing, where the ORM would say IS NULL: refuse it rather than miss.
    if any(value is None for value in where.values()):
        raise ValueError("a condition on None: these statements compare with =, never IS NULL")


def row_update_if(model: type[Model], *, pk, where: dict, values: dict) -> bool:
    """UPDATE the row `pk` of `model` to `values` if its columns still equal `where`; True when
    it did. One conditional statement in place of a locking read and a save.

    Under READ COMMITTED a concurrent writer of the row is waited for and the row as it left
    it is judged; the row stays locked until the transaction ends. QuerySet.update() spends
    three to five times the CPU composing the same statement.
    """
    connection = connections[router.db_for_write(model)]
    meta, qn = model._meta, connection.ops.quote_name
    assigned = [meta.get_field(name) for name in values]
    compared = [meta.get_field(name) for name in where]
    _where_check(where)
    # Identifiers from the model's own metadata; every value is a parameter.
    assignments = ", ".join(f"{qn(f.column)} = %s" for f in assigned)
    conditions = "".join(f" AND {qn(f.column)} = %s" for f in compared)
    sql = f"UPDATE {qn(meta.db_table)} SET {assignments} WHERE {qn(meta.pk.column)} = %s{conditions}"  # noqa: S608
    params = [f.get_db_prep_save(values[f.name], connection) for f in assigned]
    params += [meta.pk.get_db_prep_value(pk, connection)]
    params += [f.get_db_prep_value(where[f.name], connection) for f in compared]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


class RowReader:
    """Model instances from a hand-written SELECT of all of a model's concrete columns.

    The values go through the converters the ORM's compiler would apply (JSONField's
    json.loads; SQLite's booleans and datetimes), so the instance equals the one a QuerySet
    builds. Get one per model and database with row_reader().
    """

    def __init__(self, model: type[Model], alias: str):
        self.model, self.alias = model, alias
        connection = connections[alias]
        meta = model._meta
        self.fields = list(meta.concrete_fields)
        self.attnames = [f.attname for f in self.fields]
        self.converters = []
        for index, field in enumerate(self.fields):
            col = field.get_col(meta.db_table)
            functions = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
            if functions:
                self.converters.append((index, functions, col))

    def columns(self, *, table_alias: str = "") -> str:
        """The column list to SELECT, in the order instance() expects."""
        qn = connections[self.alias].ops.quote_name
        prefix = f"{table_alias}." if table_alias else ""
        return ", ".join(f"{prefix}{qn(f.column)}" for f in self.fields)

    def instance(self, row) -> Model:
        connection = connections[self.alias]
        values = list(row[: len(self.fields)])
        for index, functions, col in self.converters:
            for convert in functions:
                values[index] = convert(values[index], col, connection)
        return self.model.from_db(self.alias, self.attnames, values)


@functools.cache
def row_reader(model: type[Model], alias: str) -> RowReader:
    return RowReader(model, alias)


def rows_select(model: type[Model], *, where: dict, order_by: str = "", lock: bool = False) -> list[Model]:
    """The rows of `model` whose fields equal `where`, as model instances, in one plain SELECT.

    `order_by`: a field name; `lock`: FOR UPDATE (where the database has it; SQLite locks the
    whole file on write instead). For the few reads every webhook makes: the ORM spends about
    0.3-0.5 ms CPU composing each of them, this a tenth of that; the instances are the same.
    """
    alias = model.objects.db
    connection = connections[alias]
    meta, qn = model._meta, connection.ops.quote_name
    reader = row_reader(model, alias)
    if not where:
        raise ValueError("rows_select needs a condition")
    _where_check(where)
    compared = [meta.get_field(name) if name != "pk" else meta.pk for name in where]
    # Identifiers from the model's own metadata; every value is a parameter.
    conditions = " AND ".join(f"{qn(f.column)} = %s" for f in compared)
    sql = f"SELECT {reader.columns()} FROM {qn(meta.db_table)} WHERE {conditions}"  # noqa: S608
    if order_by:
        sql += f" ORDER BY {qn(meta.get_field(order_by).column)}"
    if lock and connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    params = [f.get_db_prep_value(value, connection) for f, value in zip(compared, where.values(), strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [reader.instance(row) for row in cursor.fetchall()]


def row_save(instance: Model, *, fields: list[str]) -> None:
    """Model.save(update_fields=fields) as one plain UPDATE (auto_now fields in `fields` are set
    as save() sets them). Raises DatabaseError, as save() does, when the row is gone.

    For rows the caller has locked; no pre_save/post_save signals are sent (nothing in this
    project listens to them), and a model's own save() is skipped: not for models that
    override it (Package fills in its course code there)."""
    model = type(instance)
    meta = model._meta
    values = {}
    for name in fields:
        field = meta.get_field(name)
        values[field.name] = field.pre_save(instance, add=False)
    if not row_update_if(model, pk=instance.pk, where={}, values=values):
        raise DatabaseError(f"{meta.label} {instance.pk}: the row to update is gone")
