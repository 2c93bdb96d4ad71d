"""notifications.broker: a kick published with one LPUSH is the very message kombu would write."""

import base64
import copy
import json
import uuid

import pytest
import redis
from django.conf import settings

from buatfilm.celery import app as celery_app
from notifications import broker
from notifications.tasks import notification_deliver_many_task, notification_deliver_task


def _queued(key: str) -> list[dict]:
    """The raw messages in a Redis list, oldest first (kombu LPUSHes, the worker BRPOPs)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return [json.loads(raw) for raw in reversed(client.lrange(key, 0, -1))]
    finally:
        client.close()


def _ids_masked(message: dict) -> dict:
    """The message with its per-publish values (task id, delivery tag, eta) checked and masked."""
    masked = copy.deepcopy(message)
    headers, properties = masked["headers"], masked["properties"]
    task_id = headers["id"]
    assert uuid.UUID(task_id) and headers["root_id"] == task_id == properties["correlation_id"]
    assert uuid.UUID(properties["delivery_tag"])
    headers["id"] = headers["root_id"] = properties["correlation_id"] = properties["delivery_tag"] = "<id>"
    if headers.get("eta") is not None:
        headers["eta"] = "<eta>"
    return masked


@pytest.mark.parametrize(
    ("task", "args", "countdown"),
    [(notification_deliver_many_task, [[3, 5, 8]], None), (notification_deliver_task, [42], 30)],
    ids=["batch-kick", "retry-kick-with-countdown"],
)
def test_published_message_equals_the_one_kombu_writes(broker_flushed, monkeypatch, task, args, countdown):
    # given the same kick published through Celery's own producer and through broker.task_publish,
    # the latter on its own path (a fall back to kombu would make the comparison idle)
    task.apply_async(args=args, countdown=countdown)
    monkeypatch.setattr(broker.RedisListProducer, "_kombu_publish", _fallback_refused)
    broker.task_publish(task, args=args, countdown=countdown)

    # then the queue holds two messages that differ only in their ids (and eta instants)
    through_kombu, direct = _queued("notifications")
    assert _ids_masked(direct) == _ids_masked(through_kombu)
    assert json.loads(base64.b64decode(direct["body"]))[0] == args
    assert (direct["headers"]["eta"] is None) == (countdown is None)


def _fallback_refused(self, body, **kwargs):
    raise AssertionError("fell back to kombu")


def test_a_message_the_plain_path_cannot_write_goes_through_kombu(broker_flushed, monkeypatch):
    # given a kick with a priority (kombu keeps prioritised messages in other lists)
    producer = broker.producer_for(celery_app)
    fallbacks = []
    kombu_publish = broker.RedisListProducer._kombu_publish
    monkeypatch.setattr(
        broker.RedisListProducer,
        "_kombu_publish",
        lambda self, body, **kwargs: fallbacks.append(kwargs) or kombu_publish(self, body, **kwargs),
    )
    notification_deliver_many_task.apply_async(args=[[1]], priority=5)
    notification_deliver_many_task.apply_async(args=[[1]], priority=5, producer=producer)
    assert [kwargs["priority"] for kwargs in fallbacks] == [5]

    # then both landed where kombu puts them, as the same message, and nothing in the plain list
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = {key.decode() for key in client.keys("notifications*")} - {"notifications"}
    client.close()
    assert len(keys) == 1 and _queued("notifications") == []
    through_kombu, via_fallback = _queued(keys.pop())
    assert _ids_masked(via_fallback) == _ids_masked(through_kombu)


def test_eager_mode_and_other_brokers_publish_through_kombu(settings):
    assert broker.producer_for(celery_app) is not None
    celery_app.conf.task_always_eager = True
    try:
        assert broker.producer_for(celery_app) is None
    finally:
        celery_app.conf.task_always_eager = False


def test_other_broker_urls_get_no_plain_producer(celery_broker_switch):
    celery_broker_switch("memory://")
    assert broker.producer_for(celery_app) is None
    celery_broker_switch("rediss://127.0.0.1:6380/0")
    assert broker.producer_for(celery_app) is None


def test_each_broker_url_gets_its_own_client(celery_broker_switch):
    first = broker.producer_for(celery_app)
    other_db = (first.client.connection_pool.connection_kwargs["db"] + 1) % 16
    celery_broker_switch(f"redis://127.0.0.1:6379/{other_db}")
    other = broker.producer_for(celery_app)
    assert other is not first
    assert other.client.connection_pool.connection_kwargs["db"] == other_db
    assert broker.producer_for(celery_app) is other
