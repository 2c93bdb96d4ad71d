"""Idempotency-Key on checkout, Stripe-style: replay, different body, in progress, what is not
stored, and the purge task."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from payments.models import IdempotencyRecord, Order, OrderStatus
from payments.services.idempotency import (
    IdempotencyReplay,
    idempotency_begin,
    idempotency_complete,
    idempotency_fingerprint,
)
from payments.tasks import idempotency_purge_task
from payments.tests.checkout_support import checkout_body, db_state, launch_package_ensure, snap_calls
from payments.tests.factories import OrderFactory, PackageFactory


@pytest.fixture
def api(midtrans_sim):
    launch_package_ensure()
    client = APIClient()
    client.sim = midtrans_sim
    return client


def checkout(api, body, key):
    return api.post("/api/checkout/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


@pytest.mark.django_db(transaction=True)
def test_same_key_and_body_replays_the_first_response(api):
    # given
    body = checkout_body()
    first = checkout(api, body, "key-1")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first

    # when
    second = checkout(api, dict(reversed(list(body.items()))), "key-1")  # same body, other key order

    # then
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert Order.objects.count() == 1
    assert snap_calls() == 1
    record = IdempotencyRecord.objects.get(key="key-1")
    assert (record.state, record.response_status, record.order_id) == ("completed", 201, first.json()["order_id"])


@pytest.mark.django_db(transaction=True)
def test_replay_returns_the_stored_response_even_after_the_order_moved_on(api):
    body = checkout_body()
    first = checkout(api, body, "key-moved").json()
    Order.objects.filter(pk=first["order_id"]).update(status=OrderStatus.EXPIRED)

    replay = checkout(api, body, "key-moved")

    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first


@pytest.mark.django_db(transaction=True)
def test_same_key_with_a_different_body_is_refused(api):
    body = checkout_body()
    checkout(api, body, "key-2")
    before = db_state()

    response = checkout(api, {**body, "name": "Orang Lain"}, "key-2")

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert db_state() == before


@pytest.mark.django_db(transaction=True)
def test_stored_conflict_is_replayed_too(api):
    # given a sold-out answer stored under a key
    PackageFactory(id="kelas-nol", capacity=0)
    body = checkout_body(package_id="kelas-nol")
    first = checkout(api, body, "key-soldout")
    assert first.status_code == 409 and first.json()["error"]["code"] == "sold_out"

    # when seats are added and the same request is retried with the same key
    from payments.models import Package

    Package.objects.filter(pk="kelas-nol").update(capacity=5)
    again = checkout(api, body, "key-soldout")

    # then the stored answer stands (a new key would buy)
    assert again.status_code == 409 and again["Idempotent-Replayed"] == "true"
    assert checkout(api, body, "key-soldout-2").status_code == 201


@pytest.mark.django_db
def test_key_still_in_progress_is_409():
    # given another request holding the key right now
    launch_package_ensure()
    body = checkout_body()
    IdempotencyRecord.objects.create(
        scope="checkout",
        key="key-busy",
        fingerprint=idempotency_fingerprint(data=body),
        locked_until=timezone.now() + timedelta(seconds=30),
    )
    before = db_state()

    # when
    response = APIClient().post("/api/checkout/", body, format="json", HTTP_IDEMPOTENCY_KEY="key-busy")

    # then
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_in_use"
    assert response["Retry-After"] == "1"
    assert db_state() == before


@pytest.mark.django_db(transaction=True)
def test_key_left_by_a_crashed_request_is_taken_over_after_its_lease(api):
    body = checkout_body()
    IdempotencyRecord.objects.create(
        scope="checkout",
        key="key-crashed",
        fingerprint=idempotency_fingerprint(data=body),
        locked_until=timezone.now() - timedelta(seconds=1),
    )

    response = checkout(api, body, "key-crashed")

    assert response.status_code == 201
    assert IdempotencyRecord.objects.get(key="key-crashed").state == "completed"


@pytest.mark.django_db
def test_input_errors_are_not_stored_so_the_key_can_be_used_after_fixing_them():
    launch_package_ensure()
    before = db_state()
    response = APIClient().post(
        "/api/checkout/", checkout_body(email="salah"), format="json", HTTP_IDEMPOTENCY_KEY="key-typo"
    )
    assert response.status_code == 400
    assert db_state() == before
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_key_used_for_a_bad_request_then_works_for_the_fixed_one(api):
    body = checkout_body()
    assert checkout(api, {**body, "phone": "123"}, "key-fixed").status_code == 400
    response = checkout(api, body, "key-fixed")
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "   ", "k" * 256])
def test_invalid_key_is_a_field_error(key):
    launch_package_ensure()
    before = db_state()
    response = APIClient().post("/api/checkout/", checkout_body(), format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert set(response.json()["error"]["fields"]) == {"Idempotency-Key"}
    assert db_state() == before


@pytest.mark.django_db(transaction=True)
def test_key_of_255_characters_is_accepted(api):
    assert checkout(api, checkout_body(), "k" * 255).status_code == 201


def test_fingerprint_ignores_key_order_but_not_values():
    assert idempotency_fingerprint(data={"a": 1, "b": "x"}) == idempotency_fingerprint(data={"b": "x", "a": 1})
    assert idempotency_fingerprint(data={"a": 1}) != idempotency_fingerprint(data={"a": 2})


@pytest.mark.django_db
def test_claim_is_completed_once_with_the_response_the_order_and_no_lease():
    # given a claimed key
    claim = idempotency_begin(scope="checkout", key="k-complete", fingerprint="f" * 64)
    order = OrderFactory()
    body = {"order_id": order.id, "payment": {"token": "t"}, "reused": False}

    # when the response is stored, and a second completion comes late
    idempotency_complete(claim=claim, status=201, body=body, order_id=order.id)
    idempotency_complete(claim=claim, status=409, body={"error": {}}, order_id=None)

    # then the first one stands
    record = IdempotencyRecord.objects.get(key="k-complete")
    assert (record.state, record.response_status, record.response_body) == ("completed", 201, body)
    assert (record.order_id, record.locked_until, record.fingerprint) == (order.id, None, "f" * 64)
    assert record.updated_at >= record.created_at
    assert idempotency_begin(scope="checkout", key="k-complete", fingerprint="f" * 64) == IdempotencyReplay(
        status=201, body=body
    )


@pytest.mark.django_db
def test_purge_task_deletes_records_past_retention_only(settings):
    # given
    settings.IDEMPOTENCY_RETENTION_HOURS = 48
    now = timezone.now()
    ages = {"old": 49, "older": 24 * 7, "recent": 47, "fresh": 0}
    for key, hours in ages.items():
        record = IdempotencyRecord.objects.create(scope="checkout", key=key, fingerprint="f")
        IdempotencyRecord.objects.filter(pk=record.pk).update(created_at=now - timedelta(hours=hours))

    # when (twice: tasks are safe to run again)
    deleted = idempotency_purge_task()
    deleted_again = idempotency_purge_task()

    # then
    assert (deleted, deleted_again) == (2, 0)
    assert sorted(IdempotencyRecord.objects.values_list("key", flat=True)) == ["fresh", "recent"]


@pytest.mark.django_db
def test_purge_keeps_records_at_least_24_hours_whatever_the_setting(settings):
    settings.IDEMPOTENCY_RETENTION_HOURS = 1
    record = IdempotencyRecord.objects.create(scope="checkout", key="k", fingerprint="f")
    IdempotencyRecord.objects.filter(pk=record.pk).update(created_at=timezone.now() - timedelta(hours=23))
    assert idempotency_purge_task() == 0
    assert IdempotencyRecord.objects.filter(key="k").exists()


def test_purge_is_scheduled_by_beat(settings):
    entries = [e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "payments.idempotency_purge"]
    assert len(entries) == 1
    assert entries[0]["schedule"] <= 3600
