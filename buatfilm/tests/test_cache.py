from django.core.cache import cache, caches

from buatfilm.cache import RedisCache


def test_the_cache_is_redis_and_reuses_one_client_per_pool():
    # given the project's cache (Redis in tests, as in production)
    assert isinstance(caches["default"], RedisCache)
    client = cache._cache.get_client("k")

    # when it is used for reads and writes
    cache.set("cache-test-key", {"state": "open"}, timeout=30)
    values = cache.get_many(["cache-test-key", "cache-test-missing"])

    # then the values round-trip and no new client was built for the calls
    assert values == {"cache-test-key": {"state": "open"}}
    assert cache._cache.get_client("k", write=True) is client
    cache.delete("cache-test-key")
    assert cache.get("cache-test-key") is None
