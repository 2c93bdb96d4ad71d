"""common.db: insert-or-skip in one statement gives what the ORM's get_or_create gives."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from common.db import row_insert_or_skip, rows_insert_or_skip
from notifications.models import Notification
from payments.models import Package, PaymentEvent

pytestmark = pytest.mark.django_db


def _event(**kw) -> PaymentEvent:
    fields = {
        "midtrans_order_id": "BF-20261122-7K3QX9AB-1",
        "source": "webhook",
        "dedup_key": "webhook:abc",
        "transaction_status": "settlement",
        "status_code": "200",
        "gross_amount": "99000.00",
        "payload": {"order_id": "BF-20261122-7K3QX9AB-1", "nested": {"a": [1, 2]}},
    } | kw
    return PaymentEvent(**fields)


def _notification(key: str) -> Notification:
    return Notification(
        channel="email",
        template="payment_received",
        recipient="a@example.com",
        subject="s",
        body_text="b",
        dedupe_key=key,
    )


def test_row_insert_or_skip_stores_once_and_sets_the_pk():
    # given / when
    first, again = _event(), _event()
    with CaptureQueriesContext(connection) as queries:
        stored = row_insert_or_skip(first)
    skipped = row_insert_or_skip(again)

    # then: one statement, the pk set as after a save; the second is skipped, not raised
    assert stored is True and len(queries.captured_queries) == 1
    assert PaymentEvent.objects.get(pk=first.pk).payload == first.payload
    assert skipped is False and again.pk is None
    assert PaymentEvent.objects.count() == 1


def test_rows_insert_or_skip_stores_new_keys_and_skips_taken_ones_in_one_statement():
    # given a key stored already
    rows_insert_or_skip([_notification("taken")], key="dedupe_key")
    taken, first_new, second_new = _notification("taken"), _notification("z"), _notification("a")

    # when
    with CaptureQueriesContext(connection) as queries:
        created = rows_insert_or_skip([taken, first_new, second_new], key="dedupe_key")

    # then: one statement; the new rows come back in the order given, with their pks
    assert len(queries.captured_queries) == 1
    assert created == [first_new, second_new] and taken.pk is None
    assert sorted(Notification.objects.values_list("dedupe_key", flat=True)) == ["a", "taken", "z"]


def test_inserts_refuse_a_model_whose_primary_key_is_not_automatic():
    with pytest.raises(TypeError, match="automatic primary key"):
        row_insert_or_skip(Package(id="x", name="X", price=1))
