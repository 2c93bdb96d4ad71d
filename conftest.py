"""Fixtures shared by every app's tests."""

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _clear_cache():
    # Rate-limit counters and the Midtrans circuit live in the cache; tests start clean.
    cache.clear()
    yield
    cache.clear()
