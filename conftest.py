"""Fixtures shared by every app's tests."""

import pytest
from django.conf import settings
from django.core.cache import cache


def _cache_clear_own_keys():
    # FLUSHDB would also wipe whatever else shares the Redis database (Celery queues of a
    # worker under test, another run's state); delete only this run's prefixed keys.
    if settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        client = cache._cache.get_client(write=True)
        keys = list(client.scan_iter(match=f"{settings.CACHE_KEY_PREFIX}:*", count=1000))
        if keys:
            client.delete(*keys)
    else:
        cache.clear()


@pytest.fixture(autouse=True)
def _clear_cache():
    # Rate-limit counters and the Midtrans circuit live in the cache; tests start clean.
    _cache_clear_own_keys()
    yield
    _cache_clear_own_keys()


@pytest.fixture(autouse=True)
def _midtrans_sim_dispatcher_not_autostarted():
    # A web process with MIDTRANS_SIMULATOR on starts the simulator's delivery thread on its first
    # request; in tests only when a test asks for it (the midtrans_sim fixture turns it on).
    from payments.simulator.dispatcher import dispatcher_autostart

    dispatcher_autostart(False)
