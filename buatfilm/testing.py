"""Settings for the test run: the environment a test run needs, then the one settings module.

pytest-django loads settings before any conftest runs, so the defaults are applied here.
Everything can still be overridden from the real environment.
"""

import os

_TEST_ENV = {
    "DATABASE_URL": "postgres://root@127.0.0.1:5432/buatfilm",
    "REDIS_URL": "redis://127.0.0.1:6379/15",
    "SECRET_KEY": "test-only-secret-key-not-for-production",
    "DEBUG": "false",
    "MIDTRANS_SIMULATOR": "true",
    "MIDTRANS_SERVER_KEY": "SB-Mid-server-TEST123",
    "ENTITLEMENTS_API_TOKEN": "test-entitlements-token",
    "EMAIL_URL": "memorymail://",
    "WHATSAPP_BACKEND": "locmem",
    "ALLOWED_HOSTS": "*",
    "CACHE_KEY_PREFIX": f"buatfilm-test-{os.getpid()}",
    "ENV_FILE": "/nonexistent",  # a developer's .env must not leak into the tests
}
for _name, _value in _TEST_ENV.items():
    os.environ.setdefault(_name, _value)

from buatfilm.settings import *  # noqa: E402, F403
