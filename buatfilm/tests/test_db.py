"""buatfilm.db: the hand-written statements on the hot paths give what the ORM gives."""

import threading

import pytest
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.utils import timezone

from buatfilm.db import (
    row_insert,
    row_insert_or_skip,
    row_reader,
    row_save,
    row_update_if,
    rows_insert,
    rows_insert_or_skip,
    rows_select,
)
from payments.models import AuditEntry, Order, PaymentAttempt, PaymentEvent
from payments.tests.factories import OrderFactory, PackageFactory, PaymentAttemptFactory

pytestmark = pytest.mark.django_db


def _event(**overrides) -> PaymentEvent:
    fields = {
        "midtrans_order_id": "BF-TEST-1",
        "source": "webhook",
        "dedup_key": "webhook:abc",
        "transaction_status": "settlement",
        "payload": {"order_id": "BF-TEST-1", "gross_amount": "99000.00", "va_numbers": [{"bank": "bca"}]},
    }
    return PaymentEvent(**(fields | overrides))


def test_row_insert_or_skip_stores_once_and_sets_the_pk():
    # when the same unique key is inserted twice
    first, second = _event(), _event()
    stored_first, stored_second = row_insert_or_skip(first), row_insert_or_skip(second)

    # then one row, the first call's, with its pk set as save() would
    assert (stored_first, stored_second) == (True, False)
    assert second.pk is None
    assert PaymentEvent.objects.get().pk == first.pk
    assert PaymentEvent.objects.get().payload == first.payload


def test_rows_insert_writes_every_row_in_one_statement(django_assert_num_queries):
    order = OrderFactory()
    entries = [
        AuditEntry(actor="test", action=f"a{i}", object_type="order", object_id=order.pk, new_value={"i": i})
        for i in range(3)
    ]
    with django_assert_num_queries(1):
        rows_insert(entries)
    assert sorted(AuditEntry.objects.values_list("action", "new_value")) == [
        ("a0", {"i": 0}),
        ("a1", {"i": 1}),
        ("a2", {"i": 2}),
    ]


def test_rows_select_builds_the_instances_the_orm_builds():
    order = OrderFactory()
    attempts = [PaymentAttemptFactory(order=order, number=n, midtrans_order_id=f"{order.pk}-{n}") for n in (2, 1)]
    event = _event()
    event.save()

    [read_order] = rows_select(Order, where={"pk": order.pk}, lock=False)
    read_attempts = rows_select(PaymentAttempt, where={"order": order.pk}, order_by="number")
    [read_event] = rows_select(PaymentEvent, where={"pk": event.pk})

    orm_order = Order.objects.get(pk=order.pk)
    assert {f.attname: getattr(read_order, f.attname) for f in Order._meta.concrete_fields} == {
        f.attname: getattr(orm_order, f.attname) for f in Order._meta.concrete_fields
    }
    assert [a.number for a in read_attempts] == [1, 2]
    assert {a.pk for a in read_attempts} == {a.pk for a in attempts}
    assert read_event.payload == event.payload  # JSON converted, not a string
    assert read_event._state.adding is False
    assert rows_select(Order, where={"pk": "BF-NOPE"}) == []


@pytest.mark.django_db(transaction=True)
def test_rows_select_locks_when_asked():
    # given an order another connection can see
    order = OrderFactory()
    outcome = {}

    def other_connection_tries_to_lock():
        try:
            with transaction.atomic():
                Order.objects.select_for_update(nowait=True).get(pk=order.pk)
            outcome["other"] = "locked it"
        except DatabaseError:
            outcome["other"] = "refused"
        finally:
            connections.close_all()

    # when this connection reads it with lock=True and holds the transaction open
    with transaction.atomic():
        [locked] = rows_select(Order, where={"pk": order.pk}, lock=True)
        other = threading.Thread(target=other_connection_tries_to_lock)
        other.start()
        other.join(timeout=10)

    # then the other connection could not take the row meanwhile
    assert locked.pk == order.pk
    assert outcome == {"other": "refused"}


def test_row_save_updates_only_the_fields_named_and_sets_auto_now():
    order = OrderFactory(customer_name="Budi")
    before = Order.objects.get(pk=order.pk).updated_at
    order.status = "PAID"
    order.paid_at = timezone.now()
    order.customer_name = "Not saved"

    row_save(order, fields=["status", "paid_at", "updated_at"])

    stored = Order.objects.get(pk=order.pk)
    assert (stored.status, stored.customer_name) == ("PAID", "Budi")
    assert stored.paid_at == order.paid_at
    assert stored.updated_at > before


def test_row_save_of_a_deleted_row_raises():
    order = OrderFactory()
    Order.objects.filter(pk=order.pk).delete()
    order.status = "PAID"
    with pytest.raises(DatabaseError):
        row_save(order, fields=["status"])


def test_row_update_if_changes_the_row_only_when_it_still_matches():
    order = OrderFactory(status="CREATED")
    assert row_update_if(Order, pk=order.pk, where={"status": "PAID"}, values={"status": "EXPIRED"}) is False
    assert Order.objects.get(pk=order.pk).status == "CREATED"
    assert row_update_if(Order, pk=order.pk, where={"status": "CREATED"}, values={"status": "PENDING_PAYMENT"})
    assert Order.objects.get(pk=order.pk).status == "PENDING_PAYMENT"


def test_row_reader_is_built_once_per_model_and_database():
    assert row_reader(Order, "default") is row_reader(Order, "default")


def test_conditions_these_statements_cannot_say_are_refused_before_anything_runs():
    order = OrderFactory(status="CREATED")
    with pytest.raises(ValueError):
        rows_select(Order, where={})
    with pytest.raises(ValueError):
        rows_select(Order, where={"paid_at": None})
    with pytest.raises(ValueError):
        row_update_if(Order, pk=order.pk, where={"paid_at": None}, values={"status": "EXPIRED"})
    assert Order.objects.get(pk=order.pk).status == "CREATED"


def test_inserts_refuse_a_model_whose_primary_key_is_not_automatic():
    order = OrderFactory.build()
    with pytest.raises(TypeError):
        row_insert_or_skip(order)
    with pytest.raises(TypeError):
        rows_insert([order])
    assert not Order.objects.exists()


def test_row_insert_stores_what_save_would_with_either_kind_of_primary_key(django_assert_num_queries):
    # given an order whose key the model makes (a default) and an attempt whose key the database makes
    order = OrderFactory.build(package=PackageFactory())
    attempt = PaymentAttemptFactory.build(order=order, midtrans_order_id=f"{order.pk}-1")

    # when each is inserted with row_insert
    with django_assert_num_queries(2):
        row_insert(order)
        row_insert(attempt)

    # then the rows read back equal the instances, the attempt got its database key, and both
    # instances are marked stored as after save()
    assert attempt.pk is not None
    stored_order, stored_attempt = Order.objects.get(pk=order.pk), PaymentAttempt.objects.get(pk=attempt.pk)
    for field in Order._meta.concrete_fields:
        assert getattr(stored_order, field.attname) == getattr(order, field.attname), field.name
    for field in PaymentAttempt._meta.concrete_fields:
        assert getattr(stored_attempt, field.attname) == getattr(attempt, field.attname), field.name
    assert not order._state.adding and not attempt._state.adding


def test_row_insert_refused_by_a_constraint_raises_integrity_error_and_stores_nothing():
    # given a stored attempt
    existing = PaymentAttemptFactory()
    duplicate = PaymentAttemptFactory.build(order=existing.order, midtrans_order_id=existing.midtrans_order_id)
    same_key = OrderFactory.build(id=existing.order.pk, package=existing.order.package)

    # when the same unique Midtrans order id, or the same order key, is inserted again
    for instance in (duplicate, same_key):
        with pytest.raises(IntegrityError), transaction.atomic():
            row_insert(instance)

    # then the error is save()'s and nothing more was stored
    assert PaymentAttempt.objects.count() == 1 and Order.objects.count() == 1
    assert duplicate.pk is None


def test_rows_insert_or_skip_stores_new_keys_and_skips_taken_ones_in_one_statement(django_assert_num_queries):
    # given one key already stored
    row_insert_or_skip(_event(dedup_key="webhook:taken"))
    taken, first_new, second_new = (_event(dedup_key=key) for key in ("webhook:taken", "webhook:z", "webhook:a"))

    # when three rows are inserted, one with the taken key
    with django_assert_num_queries(1):
        created = rows_insert_or_skip([taken, first_new, second_new], key="dedup_key")

    # then the two new ones are stored, in the order given, their pks set; the taken one is untouched
    assert created == [first_new, second_new]
    assert all(row.pk is not None and not row._state.adding for row in created)
    assert taken.pk is None and taken._state.adding
    assert PaymentEvent.objects.count() == 3
