"""Django's Redis cache backend, with one redis.Redis client per connection pool.

Django's RedisCacheClient builds a new redis.Redis object for every cache call. The
sockets come from a shared pool either way, but constructing the client (its table of
response callbacks) costs more CPU than the GET itself: the Midtrans circuit breaker and
the checkout rate limit read the cache on every request. A redis.Redis client is
thread-safe (each command borrows a connection from the pool), so one per pool is enough.
"""

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient


class _ClientReusingRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(pool)
        if client is None:
            client = self._clients[pool] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _ClientReusingRedisCacheClient
