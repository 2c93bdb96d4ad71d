"""The one settings module, read by web, worker and beat alike.

Every value comes from the environment (or an optional `.env` beside manage.py).
Nothing here raises on bad configuration: problems are collected and reported by
the start-up checks in `buatfilm/checks.py`, with the variable's name and the fix.
"""

from pathlib import Path

import environ
from celery.schedules import crontab

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# An optional .env file; real environment variables always win over it.
_env_file = env.str("ENV_FILE", default=str(BASE_DIR / ".env"))
if Path(_env_file).is_file():
    environ.Env.read_env(_env_file, overwrite=False)

# Configuration problems found while reading the environment. The start-up checks
# turn each into an error that names the variable and says how to fix it.
CONFIG_ERRORS: list[tuple[str, str]] = []


def _read(reader, name, **kwargs):
    try:
        return reader(name, **kwargs)
    except (ValueError, environ.ImproperlyConfigured) as exc:
        CONFIG_ERRORS.append((name, f"{name} could not be read ({exc})."))
        return kwargs.get("default")


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _bool(name: str, *, default: bool) -> bool:
    """Strict boolean: a typo such as DEBUG=ture is a configuration error, not silently false."""
    raw = env.str(name, default=None)
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    CONFIG_ERRORS.append((name, f"{name}={raw!r} is not a boolean; use true or false."))
    return default


# --- Core ---------------------------------------------------------------------

DEBUG = _bool("DEBUG", default=False)
SECRET_KEY_IS_SET = bool(env.str("SECRET_KEY", default=""))
# Without SECRET_KEY the process only starts with DEBUG on (checked at start-up);
# the placeholder is never used with DEBUG off.
SECRET_KEY = env.str("SECRET_KEY", default="") or "insecure-demo-key-set-SECRET_KEY-in-production"
ALLOWED_HOSTS = _read(env.list, "ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = _read(env.list, "CSRF_TRUSTED_ORIGINS", default=[]) or [PUBLIC_BASE_URL]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "dbbackup",
    "buatfilm",
    "payments",
    "entitlements",
    "notifications",
    "payments.simulator",
]

MIDDLEWARE = [
    "common.logging.RequestIdMiddleware",
    # Before anything that may touch the database (sessions, auth): every call is bounded.
    "buatfilm.dbdeadline.DatabaseDeadlineMiddleware",
    "buatfilm.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "buatfilm.urls"
WSGI_APPLICATION = "buatfilm.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------

DATABASE_URL = env.str("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DB_CONNECT_TIMEOUT = _read(env.int, "DB_CONNECT_TIMEOUT", default=2)
DB_STATEMENT_TIMEOUT_MS = _read(env.int, "DB_STATEMENT_TIMEOUT_MS", default=5000)
DB_CONN_MAX_AGE = _read(env.int, "DB_CONN_MAX_AGE", default=60)
# Longest one database call of a web request may wait for an answer before the connection is
# dropped and the request answers 503 (a hung server; see buatfilm/dbdeadline.py). Celery tasks
# wait DB_STATEMENT_TIMEOUT_MS plus DB_TASK_CALL_GRACE_MS, so the server's own limit comes first.
DB_WEB_CALL_TIMEOUT_MS = _read(env.int, "DB_WEB_CALL_TIMEOUT_MS", default=2000)
DB_TASK_CALL_GRACE_MS = _read(env.int, "DB_TASK_CALL_GRACE_MS", default=5000)
# Server-side parameter binding and prepared statements (PostgreSQL). Off only behind a
# pooler that cannot keep prepared statements per client (PgBouncer < 1.21 in transaction mode).
DB_PREPARED_STATEMENTS = _bool("DB_PREPARED_STATEMENTS", default=True)

try:
    _db = environ.Env.db_url_config(DATABASE_URL)
    if _db.get("ENGINE") not in ("django.db.backends.postgresql", "django.db.backends.sqlite3"):
        raise environ.ImproperlyConfigured("only postgres:// and sqlite:// are supported")
except (environ.ImproperlyConfigured, ValueError, KeyError, AttributeError) as exc:
    CONFIG_ERRORS.append(
        (
            "DATABASE_URL",
            f"DATABASE_URL={DATABASE_URL!r} cannot be parsed ({exc}). Use "
            "postgres://USER:PASSWORD@HOST:5432/NAME in production or "
            "sqlite:///path/to/db.sqlite3 for the local demo.",
        )
    )
    # A harmless placeholder so the checks can run and report the problem.
    _db = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}

DATABASE_IS_SQLITE = _db["ENGINE"].endswith("sqlite3")
DATABASE_IS_POSTGRES = _db["ENGINE"].endswith("postgresql")
if DATABASE_IS_POSTGRES:
    # Django's backend with a client-side deadline on each call (buatfilm/postgresql/base.py).
    _db["ENGINE"] = "buatfilm.postgresql"
    _db["CONN_MAX_AGE"] = DB_CONN_MAX_AGE
    _db["CONN_HEALTH_CHECKS"] = True
    _db.setdefault("OPTIONS", {})
    _db["OPTIONS"]["connect_timeout"] = DB_CONNECT_TIMEOUT
    _db["OPTIONS"]["options"] = f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}"
    # Notice a dead peer on an open (pooled) connection instead of waiting on TCP forever.
    _db["OPTIONS"].update(keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
    _db["OPTIONS"]["tcp_user_timeout"] = DB_STATEMENT_TIMEOUT_MS + 5000
    if DB_PREPARED_STATEMENTS:
        # The same few statements run for every webhook and checkout: with the values sent
        # apart from the SQL, psycopg prepares a statement after its fifth use on a connection,
        # and PostgreSQL then skips parsing and planning it.
        _db["OPTIONS"].update(server_side_binding=True, prepare_threshold=5)
    _db["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default=None)}
elif DATABASE_IS_SQLITE:
    # The demo runs web and in-process tasks in one database file; wait for locks.
    _db.setdefault("OPTIONS", {})["timeout"] = 20
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache, Celery -------------------------------------------------------------

REDIS_URL = env.str("REDIS_URL", default="")
REDIS_SOCKET_TIMEOUT = _read(env.float, "REDIS_SOCKET_TIMEOUT", default=1.0)
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="buatfilm")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "buatfilm.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            "OPTIONS": {
                "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
                "socket_timeout": REDIS_SOCKET_TIMEOUT,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Without Redis (the demo) tasks run in-process, still only after the commit.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = _bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_SOFT_TIME_LIMIT = 90
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,
    "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
    "socket_timeout": REDIS_SOCKET_TIMEOUT,
    # A publish while Redis is down must fail fast; the outbox sweep catches up.
    "max_retries": 0,
}
CELERY_TASK_PUBLISH_RETRY = False
CELERY_TIMEZONE = "Asia/Jakarta"
CELERY_BEAT_SCHEDULE: dict = {}
# Notification delivery has its own queue, so a backlog of other work never delays it
# (the Procfile's worker consumes it: `--queues notifications,payments,celery`).
CELERY_TASK_ROUTES = {"notifications.*": {"queue": "notifications"}}
# Workers log through LOGGING below (key=value or JSON with every extra field, e.g. order_id),
# not Celery's own plain format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Midtrans ---------------------------------------------------------------------

MIDTRANS_SIMULATOR = _bool("MIDTRANS_SIMULATOR", default=False)
MIDTRANS_IS_PRODUCTION = _bool("MIDTRANS_IS_PRODUCTION", default=False)
# The simulator accepts exactly this key when none is configured, so the demo runs
# with no secrets at all. It is a sandbox-style key and never valid at Midtrans.
MIDTRANS_SIMULATOR_DEFAULT_SERVER_KEY = "SB-Mid-server-SIMULATOR-LOCAL-ONLY"
MIDTRANS_SERVER_KEY = env.str("MIDTRANS_SERVER_KEY", default="").strip() or (
    MIDTRANS_SIMULATOR_DEFAULT_SERVER_KEY if MIDTRANS_SIMULATOR else ""
)
MIDTRANS_CLIENT_KEY = env.str("MIDTRANS_CLIENT_KEY", default="").strip() or (
    "SB-Mid-client-SIMULATOR-LOCAL-ONLY" if MIDTRANS_SIMULATOR else ""
)
_SIMULATOR_BASE = f"{PUBLIC_BASE_URL}/sandbox/midtrans"
MIDTRANS_SNAP_URL = env.str("MIDTRANS_SNAP_URL", default="").rstrip("/") or (
    _SIMULATOR_BASE
    if MIDTRANS_SIMULATOR
    else ("https://app.midtrans.com" if MIDTRANS_IS_PRODUCTION else "https://app.sandbox.midtrans.com")
)
MIDTRANS_API_URL = env.str("MIDTRANS_API_URL", default="").rstrip("/") or (
    _SIMULATOR_BASE
    if MIDTRANS_SIMULATOR
    else ("https://api.midtrans.com" if MIDTRANS_IS_PRODUCTION else "https://api.sandbox.midtrans.com")
)
MIDTRANS_NOTIFICATION_URL = env.str("MIDTRANS_NOTIFICATION_URL", default="") or (f"{PUBLIC_BASE_URL}/webhooks/midtrans")
MIDTRANS_CONFIRM_WITH_STATUS_API = _bool("MIDTRANS_CONFIRM_WITH_STATUS_API", default=True)
MIDTRANS_CONNECT_TIMEOUT = _read(env.float, "MIDTRANS_CONNECT_TIMEOUT", default=3.05)
MIDTRANS_READ_TIMEOUT = _read(env.float, "MIDTRANS_READ_TIMEOUT", default=10.0)
# Webhook handling must answer Midtrans well under 5 s, so its status read is tighter.
MIDTRANS_STATUS_TIMEOUT = _read(env.float, "MIDTRANS_STATUS_TIMEOUT", default=2.0)
MIDTRANS_STATUS_RETRIES = _read(env.int, "MIDTRANS_STATUS_RETRIES", default=2)
MIDTRANS_BREAKER_FAILURES = _read(env.int, "MIDTRANS_BREAKER_FAILURES", default=5)
MIDTRANS_BREAKER_COOLDOWN = _read(env.float, "MIDTRANS_BREAKER_COOLDOWN", default=30.0)
# Calls in flight per process to each Midtrans host (Snap, Core API); the web worker's other
# threads stay free for requests that never call Midtrans (payments.midtrans, "Call slots").
MIDTRANS_MAX_CONCURRENT_CALLS = _read(env.int, "MIDTRANS_MAX_CONCURRENT_CALLS", default=3)
# Threads per web worker: read by the Procfile's gunicorn; here only to check the limit above.
WEB_THREADS = _read(env.int, "WEB_THREADS", default=8)
# The simulator's notification retry schedule (2, 10, 30, 90, 210 min) divided by this.
MIDTRANS_SIMULATOR_TIME_COMPRESSION = _read(env.float, "MIDTRANS_SIMULATOR_TIME_COMPRESSION", default=1.0)
# Simulator only: the server key the simulator accepts and signs with (empty = MIDTRANS_SERVER_KEY);
# a different value plays "our key is not the one Midtrans has".
MIDTRANS_SIMULATOR_SERVER_KEY = env.str("MIDTRANS_SIMULATOR_SERVER_KEY", default="").strip()
# Simulator only: the language of Snap's "order id already used" answer ("id": "sudah digunakan",
# "en": "has already been taken"); Midtrans has been seen answering both.
MIDTRANS_SIMULATOR_LANGUAGE = env.str("MIDTRANS_SIMULATOR_LANGUAGE", default="id").strip().lower()
# Simulator only: the status_code of an expire notification ("202" as Midtrans' documented
# samples show, or "407" as observed). The status API answers an expired transaction with 407.
MIDTRANS_SIMULATOR_EXPIRE_NOTIFICATION_CODE = env.str(
    "MIDTRANS_SIMULATOR_EXPIRE_NOTIFICATION_CODE", default="202"
).strip()

# --- Orders and checkout -----------------------------------------------------------------

ORDER_PAYMENT_WINDOW_MINUTES = _read(env.int, "ORDER_PAYMENT_WINDOW_MINUTES", default=1440)
CHECKOUT_RATE_LIMIT = env.str("CHECKOUT_RATE_LIMIT", default="20/min")
IDEMPOTENCY_RETENTION_HOURS = _read(env.int, "IDEMPOTENCY_RETENTION_HOURS", default=24)
CELERY_BEAT_SCHEDULE["payments-idempotency-purge"] = {
    "task": "payments.idempotency_purge",
    "schedule": 3600,  # hourly; a record lives IDEMPOTENCY_RETENTION_HOURS (>= 24) plus at most an hour
}
# Reverse proxies in front of gunicorn that append to X-Forwarded-For: the customer's IP
# (rate limit, order metadata) is read that many hops from the right. 0 = gunicorn faces
# clients directly (X-Forwarded-For is then ignored: clients could write anything there).
TRUSTED_PROXY_COUNT = _read(env.int, "TRUSTED_PROXY_COUNT", default=1)
# Keep access on a partial refund (the design's default); set false to revoke.
PARTIAL_REFUND_REVOKES_ACCESS = _bool("PARTIAL_REFUND_REVOKES_ACCESS", default=False)

# --- Webhook and reconciliation ----------------------------------------------------------

# Seconds all tries of the webhook's status confirmation may take together (Midtrans waits
# 15 s; we answer well under 5 s, a 503 makes Midtrans retry).
WEBHOOK_STATUS_BUDGET = _read(env.float, "WEBHOOK_STATUS_BUDGET", default=3.0)
# Notifications recorded per Midtrans order id; past it one of a new meaning is not kept
# (the status API's answer is applied instead), so edited copies cannot fill the table.
WEBHOOK_EVENTS_PER_ORDER_ID_MAX = _read(env.int, "WEBHOOK_EVENTS_PER_ORDER_ID_MAX", default=100)
# The sweep asks Midtrans about attempts pending (or open) longer than this many minutes.
RECONCILE_STALE_MINUTES = _read(env.int, "RECONCILE_STALE_MINUTES", default=5)
# Events still unprocessed after this many seconds are retried by the sweep (not in flight).
RECONCILE_EVENT_GRACE_SECONDS = _read(env.int, "RECONCILE_EVENT_GRACE_SECONDS", default=60)
# The sweep gives up re-processing an unprocessed or failing event after this many tries
# (it stays as it is, operators are alerted once; replay_payment_events --id N retries it).
RECONCILE_EVENT_MAX_ATTEMPTS = _read(env.int, "RECONCILE_EVENT_MAX_ATTEMPTS", default=20)
# Operators are alerted once about a notification for an unknown Midtrans order id (an
# orphan) still unmatched after this many hours.
RECONCILE_ORPHAN_ALERT_HOURS = _read(env.int, "RECONCILE_ORPHAN_ALERT_HOURS", default=24)
# Items per sweep and kind, so one run stays short; the next run continues.
RECONCILE_BATCH_SIZE = _read(env.int, "RECONCILE_BATCH_SIZE", default=200)
# Hours after payment during which the sweep keeps re-reading paid (and partially refunded)
# attempts, less often as time passes, so a lost reversal, refund or chargeback notification
# still revokes access. 0 turns it off.
RECONCILE_PAID_WATCH_HOURS = _read(env.int, "RECONCILE_PAID_WATCH_HOURS", default=48)
# Seconds between reconciliation sweeps (Celery beat).
RECONCILE_INTERVAL_SECONDS = _read(env.int, "RECONCILE_INTERVAL_SECONDS", default=300)
CELERY_BEAT_SCHEDULE["payments-reconcile"] = {
    "task": "payments.reconcile",
    "schedule": RECONCILE_INTERVAL_SECONDS,
}

# --- Entitlements ---------------------------------------------------------------------

ENTITLEMENTS_API_TOKEN = env.str("ENTITLEMENTS_API_TOKEN", default="")
COURSE_ACCESS_URL_IS_SET = bool(env.str("COURSE_ACCESS_URL", default=""))
# Unset, the link leads to the demo's own course page (mounted with the simulator only); a
# start-up check requires it everywhere else.
COURSE_ACCESS_URL = env.str("COURSE_ACCESS_URL", default="") or f"{PUBLIC_BASE_URL}/course/{{course}}?token={{token}}"

# --- Notifications ------------------------------------------------------------------------

EMAIL_URL = env.str("EMAIL_URL", default="consolemail://")
try:
    vars().update(environ.Env.email_url_config(EMAIL_URL))
except (environ.ImproperlyConfigured, ValueError, KeyError) as exc:
    CONFIG_ERRORS.append(
        (
            "EMAIL_URL",
            f"EMAIL_URL={EMAIL_URL!r} cannot be parsed ({exc}). Use smtp+tls://USER:PASSWORD@HOST:587 "
            "in production, consolemail:// for the demo.",
        )
    )
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
EMAIL_TIMEOUT = _read(env.int, "EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="BuatFilm <halo@buatfilm.local>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
ALERT_EMAILS = _read(env.list, "ALERT_EMAILS", default=[])

WHATSAPP_BACKEND = env.str("WHATSAPP_BACKEND", default="console")
WHATSAPP_TIMEOUT = _read(env.float, "WHATSAPP_TIMEOUT", default=10.0)
WHATSAPP_META_API_URL = env.str("WHATSAPP_META_API_URL", default="https://graph.facebook.com/v21.0")
WHATSAPP_META_TOKEN = env.str("WHATSAPP_META_TOKEN", default="")
WHATSAPP_META_PHONE_NUMBER_ID = env.str("WHATSAPP_META_PHONE_NUMBER_ID", default="")
WHATSAPP_FONNTE_API_URL = env.str("WHATSAPP_FONNTE_API_URL", default="https://api.fonnte.com/send")
WHATSAPP_FONNTE_TOKEN = env.str("WHATSAPP_FONNTE_TOKEN", default="")
# Meta template messages: the language code of the approved templates.
WHATSAPP_META_TEMPLATE_LANGUAGE = env.str("WHATSAPP_META_TEMPLATE_LANGUAGE", default="id")

# The outbox. Delays (seconds) before each retry; a message gets len(schedule) + 1 tries.
NOTIFICATION_RETRY_SCHEDULE = _read(
    env.list, "NOTIFICATION_RETRY_SCHEDULE", cast=float, default=[30, 120, 600, 1800, 3600, 7200, 14400, 28800]
)
# Each delay is spread by +/- this fraction so a provider outage does not end in a thundering herd.
NOTIFICATION_RETRY_JITTER = _read(env.float, "NOTIFICATION_RETRY_JITTER", default=0.2)
# How long a worker owns a claimed message. Longer than the task's hard time limit, so a live
# worker never loses its lease; a killed worker's message is picked up again after it.
NOTIFICATION_LEASE_SECONDS = _read(env.float, "NOTIFICATION_LEASE_SECONDS", default=300.0)
NOTIFICATION_SWEEP_INTERVAL = _read(env.float, "NOTIFICATION_SWEEP_INTERVAL", default=30.0)
# The sweep re-kicks a due message only once it has been due this long (its own kick comes first).
NOTIFICATION_SWEEP_GRACE = _read(env.float, "NOTIFICATION_SWEEP_GRACE", default=20.0)
NOTIFICATION_SWEEP_BATCH = _read(env.int, "NOTIFICATION_SWEEP_BATCH", default=2000)
# Alert the operators when the oldest undelivered message is older than this.
NOTIFICATION_BACKLOG_ALERT_SECONDS = _read(env.int, "NOTIFICATION_BACKLOG_ALERT_SECONDS", default=600)
# Sent messages (and their attempts) are deleted after this many days.
NOTIFICATION_RETENTION_DAYS = _read(env.int, "NOTIFICATION_RETENTION_DAYS", default=90)
CELERY_BEAT_SCHEDULE["notifications-sweep"] = {
    "task": "notifications.sweep",
    "schedule": NOTIFICATION_SWEEP_INTERVAL,
}
CELERY_BEAT_SCHEDULE["notifications-purge"] = {
    "task": "notifications.purge",
    "schedule": crontab(hour=3, minute=17),  # daily, at a quiet hour (CELERY_TIMEZONE)
}

# --- Metrics and monitoring -------------------------------------------------------------------

# prometheus-client's multiprocess mode: the directory every web and worker process on this
# machine writes its counters to, added up by /metrics. Read by prometheus-client itself from
# the environment (the Procfile sets it); made here, before any metric exists.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# Bearer token Prometheus sends to /metrics; empty refuses every scrape (401).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Addresses or networks (CIDR) allowed to scrape /metrics, comma-separated; empty = any (token still needed).
METRICS_ALLOWED_IPS = _read(env.list, "METRICS_ALLOWED_IPS", default=[])
# Alertmanager's base URL, for `manage.py alert_test` (the Prometheus rules reach it on their own).
ALERTMANAGER_URL = env.str("ALERTMANAGER_URL", default="")
# Seconds between heartbeats (beat sends, a worker records; /metrics shows the last one).
HEARTBEAT_INTERVAL_SECONDS = _read(env.int, "HEARTBEAT_INTERVAL_SECONDS", default=60)
CELERY_BEAT_SCHEDULE["buatfilm-heartbeat"] = {
    "task": "buatfilm.heartbeat",
    "schedule": HEARTBEAT_INTERVAL_SECONDS,
}

# Error reports to Sentry from web, worker and beat (Django and Celery integrations); off when empty.
SENTRY_DSN = env.str("SENTRY_DSN", default="")
SENTRY_ENVIRONMENT = env.str("SENTRY_ENVIRONMENT", default="production")
SENTRY_TRACES_SAMPLE_RATE = _read(env.float, "SENTRY_TRACES_SAMPLE_RATE", default=0.0)
if SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    try:
        sentry_sdk.init(
            dsn=SENTRY_DSN,
            environment=SENTRY_ENVIRONMENT,
            integrations=[DjangoIntegration(), CeleryIntegration()],
            traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE,
            # Customers' emails, phones and tokens stay here: no user data, no request bodies.
            send_default_pii=False,
            max_request_body_size="never",
        )
    except Exception as exc:  # sentry_sdk raises its own BadDsn for a malformed DSN
        CONFIG_ERRORS.append(
            ("SENTRY_DSN", f"SENTRY_DSN cannot be used ({exc}); copy the DSN from Sentry's project settings.")
        )

# --- Internationalisation -------------------------------------------------------------------

LANGUAGE_CODE = "id"
TIME_ZONE = "Asia/Jakarta"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

# --- Static files and backups (Django storages) --------------------------------------------

# WhiteNoise serves collectstatic's output (release runs it) from the web process itself,
# compressed and with far-future caching, so the admin has its styles without an nginx.
# Not the manifest variant: a template that names a file collectstatic has not seen must not 500.
BACKUP_DIR = env.str("BACKUP_DIR", default=str(BASE_DIR / "var" / "backups"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    # django-dbbackup's files (`manage.py dbbackup` / `dbrestore`).
    "dbbackup": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": BACKUP_DIR}},
}
# Backups kept by the daily run's --clean (older ones are deleted).
BACKUP_KEEP = _read(env.int, "BACKUP_KEEP", default=14)
DBBACKUP_CLEANUP_KEEP = BACKUP_KEEP
# Encrypt each backup for this GPG key (its id or email; the public key must be in the keyring
# of the user running the worker). Empty = not encrypted.
BACKUP_GPG_RECIPIENT = env.str("BACKUP_GPG_RECIPIENT", default="")
DBBACKUP_GPG_RECIPIENT = BACKUP_GPG_RECIPIENT or None
DBBACKUP_GPG_ALWAYS_TRUST = bool(BACKUP_GPG_RECIPIENT)
# Our PostgreSQL backend is Django's with a deadline (buatfilm/postgresql): dump it as that one.
DBBACKUP_CONNECTOR_MAPPING = {"buatfilm.postgresql": "dbbackup.db.postgresql.PgDumpBinaryConnector"}
DBBACKUP_SEND_EMAIL = False  # a failed run raises in the task and is alerted through /metrics instead
CELERY_BEAT_SCHEDULE["buatfilm-backup"] = {
    "task": "buatfilm.backup",
    "schedule": crontab(hour=2, minute=41),  # daily, at a quiet hour (CELERY_TIMEZONE)
}

# --- REST framework -------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_RATES": {"checkout": CHECKOUT_RATE_LIMIT},
}

# --- Security --------------------------------------------------------------------------------

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = PUBLIC_BASE_URL.startswith("https://")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Never redirect the webhook (Midtrans does not follow 301); SSL is the proxy's job.
APPEND_SLASH = True
SILENCED_SYSTEM_CHECKS = [
    "security.W004",  # HSTS is set by the TLS-terminating proxy
    "security.W008",  # SSL redirect happens at the proxy; a redirect here would break webhooks
]

# --- Logging ------------------------------------------------------------------------------------

LOG_FORMAT = env.str("LOG_FORMAT", default="text")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "common.logging.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "common.logging.JsonFormatter"},
        "text": {"()": "common.logging.KeyValueFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

# --- Operator tools and reports (issue 17) ------------------------------------------------------

# The admin speaks English (customer messages stay Bahasa Indonesia: they are rendered with
# their own language, notifications.rendering).
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware"),
    "buatfilm.admin.AdminLanguageMiddleware",
)
ADMIN_LANGUAGE = "en"
# An operator's "Resend access" goes out at most once per this many seconds per order.
RESEND_ACCESS_MIN_SECONDS = _read(env.int, "RESEND_ACCESS_MIN_SECONDS", default=60)
# The daily sales summary: sent to these addresses (none: not sent) at this hour, Asia/Jakarta.
SALES_SUMMARY_EMAILS = _read(env.list, "SALES_SUMMARY_EMAILS", default=[])
SALES_SUMMARY_HOUR = _read(env.int, "SALES_SUMMARY_HOUR", default=7)
# Optional: a short "new sale" email to these addresses for every paid order.
SALE_NOTICE_EMAILS = _read(env.list, "SALE_NOTICE_EMAILS", default=[])
# Midtrans refunds still requested are read again (and, unanswered, sent again with their key).
CELERY_BEAT_SCHEDULE["payments-refunds-sweep"] = {
    "task": "payments.refunds_sweep",
    "schedule": RECONCILE_INTERVAL_SECONDS,
}
CELERY_BEAT_SCHEDULE["payments-sales-summary"] = {
    "task": "payments.sales_summary",
    # The day that just ended (CELERY_TIMEZONE is Asia/Jakarta); an out-of-range hour is
    # reported by the start-up checks, and the default is used meanwhile.
    "schedule": crontab(hour=SALES_SUMMARY_HOUR if 0 <= (SALES_SUMMARY_HOUR or 0) <= 23 else 7, minute=0),
}

# --- Cut-over from the old systems (import_legacy, backfill_notifications) ---------------

# Legacy orders per batch of import_legacy: each batch is one transaction and one read.
LEGACY_IMPORT_BATCH_SIZE = _read(env.int, "LEGACY_IMPORT_BATCH_SIZE", default=1000)
# Seconds import_legacy waits for the old PostgreSQL database to accept a connection.
LEGACY_DB_CONNECT_TIMEOUT = _read(env.int, "LEGACY_DB_CONNECT_TIMEOUT", default=10)
# Orders per minute backfill_notifications enqueues the "paid" message for (one email and
# one WhatsApp each): below the providers' sending limits, so workers never hit a 429.
BACKFILL_NOTIFICATIONS_PER_MINUTE = _read(env.int, "BACKFILL_NOTIFICATIONS_PER_MINUTE", default=30)
