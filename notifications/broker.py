"""Publishing task messages into the Celery broker (Redis): the one module that knows how a
message lies there.

Celery still builds every message as always (Task.apply_async -> send_task: ids, time limits,
routing, headers); only kombu's last step, Producer.publish into the queue's Redis list, is
done here, with one LPUSH on a client this process keeps. For every publish kombu creates a
Redis client object, takes a producer from its pool and binds its channel: about half of a
notification kick's CPU (~150 us of ~290 us measured in isolation; more under load), and a kick
follows every checkout and every paid order.

The envelope is kombu's own Redis transport format (kombu/transport/virtual/base.py
prepare_message and basic_publish, kombu/transport/redis.py _put). notifications/tests/
test_broker.py publishes the same task through kombu and through here and compares the two
messages field by field, so a kombu upgrade that changes the format fails there first.

Only the plain case is handled: a redis:// broker, the default exchange, no priority, no
compression, no expiry. Anything else goes through kombu's producer as before.
"""

from __future__ import annotations

import base64
import threading
import uuid

import redis
from kombu.serialization import dumps as serialize
from kombu.utils.json import dumps as json_dumps


class RedisListProducer:
    """The part of a kombu Producer that Celery's send_task uses: publish() and connection."""

    def __init__(self, app):
        self.app = app
        # send_task enters connection._reraise_as_library_errors() around publish(); the kombu
        # Connection object never connects for that.
        self.connection = app.connection_for_write()
        options = app.conf.broker_transport_options or {}
        self.client = redis.Redis.from_url(
            app.conf.broker_url,
            socket_timeout=options.get("socket_timeout"),
            socket_connect_timeout=options.get("socket_connect_timeout"),
        )

    def publish(
        self,
        body,
        *,
        routing_key,
        exchange=None,
        serializer=None,
        compression=None,
        headers=None,
        delivery_mode=None,
        priority=None,
        expiration=None,
        **properties,
    ):
        exchange_name = getattr(exchange, "name", exchange) or ""
        plain = not (exchange_name or compression or priority or expiration is not None)
        if not plain or not isinstance(delivery_mode, int):
            return self._kombu_publish(
                body,
                routing_key=routing_key,
                exchange=exchange,
                serializer=serializer,
                compression=compression,
                headers=headers,
                delivery_mode=delivery_mode,
                priority=priority,
                expiration=expiration,
                **properties,
            )
        for name in ("declare", "retry", "retry_policy", "timeout", "confirm_timeout"):
            # Publish options, not message properties: declaring the queue and retrying are the
            # worker's (it declares its queues) and the outbox sweep's business.
            properties.pop(name, None)
        content_type, content_encoding, data = serialize(body, serializer=serializer)
        if isinstance(data, str):
            data = data.encode(content_encoding or "utf-8")
        properties.update(
            delivery_mode=delivery_mode,
            delivery_info={"exchange": "", "routing_key": routing_key},
            priority=0,
            body_encoding="base64",
            delivery_tag=str(uuid.uuid4()),
        )
        message = {
            "body": base64.b64encode(data).decode(),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": headers or {},
            "properties": properties,
        }
        # The default exchange routes by name: the routing key is the queue, a Redis list.
        self.client.lpush(routing_key, json_dumps(message))

    def _kombu_publish(self, body, **kwargs):
        with self.app.producer_or_acquire() as producer:
            return producer.publish(body, **kwargs)


# By (app, broker URL): a process keeps one client per broker it publishes to.
_producers: dict[tuple[int, str], RedisListProducer] = {}
_producers_lock = threading.Lock()


def producer_for(app) -> RedisListProducer | None:
    """This process's producer for `app`, or None where kombu must publish: eager mode (the
    task runs in place), or a broker other than plain redis://."""
    url = str(app.conf.broker_url or "")
    if app.conf.task_always_eager or not url.startswith("redis://"):
        return None
    key = (id(app), url)
    producer = _producers.get(key)
    if producer is None:
        with _producers_lock:
            producer = _producers.get(key)
            if producer is None:
                producer = _producers[key] = RedisListProducer(app)
    return producer


def task_publish(task, *, args: list, countdown: float | None = None) -> None:
    """task.apply_async(args=args, countdown=countdown), published with one LPUSH where it can be."""
    task.apply_async(args=args, countdown=countdown, producer=producer_for(task.app))
