"""Start-up checks: refuse to run on configuration that would fail in production.

They are Django system checks, so `manage.py check`, `runserver`, `migrate`, the
gunicorn web process (buatfilm/wsgi.py) and Celery worker/beat (buatfilm/celery.py)
all run them. Each message names the variable and says how to fix it.
"""

import os
from ipaddress import ip_address
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Warning, register

SANDBOX_SERVER_KEY_PREFIX = "SB-Mid-server-"

# Settings that must be greater than zero: (name, what it is).
POSITIVE_SETTINGS = [
    ("MIDTRANS_CONNECT_TIMEOUT", "seconds"),
    ("MIDTRANS_READ_TIMEOUT", "seconds"),
    ("MIDTRANS_STATUS_TIMEOUT", "seconds"),
    ("MIDTRANS_BREAKER_FAILURES", "failures"),
    ("MIDTRANS_BREAKER_COOLDOWN", "seconds"),
    ("MIDTRANS_MAX_CONCURRENT_CALLS", "calls in flight per Midtrans host and process"),
    ("WEBHOOK_STATUS_BUDGET", "seconds"),
    ("WEBHOOK_EVENTS_PER_ORDER_ID_MAX", "notifications recorded per Midtrans order id"),
    ("WEB_THREADS", "threads per web worker"),
    ("MIDTRANS_SIMULATOR_TIME_COMPRESSION", "a divisor"),
    ("DB_CONNECT_TIMEOUT", "seconds"),
    ("DB_STATEMENT_TIMEOUT_MS", "milliseconds"),
    ("DB_WEB_CALL_TIMEOUT_MS", "milliseconds"),
    ("DB_TASK_CALL_GRACE_MS", "milliseconds"),
    ("BACKUP_KEEP", "backups"),
    ("HEARTBEAT_INTERVAL_SECONDS", "seconds"),
    ("REDIS_SOCKET_TIMEOUT", "seconds"),
    ("ORDER_PAYMENT_WINDOW_MINUTES", "minutes"),
    ("EMAIL_TIMEOUT", "seconds"),
    ("WHATSAPP_TIMEOUT", "seconds"),
    ("LEGACY_IMPORT_BATCH_SIZE", "orders per batch"),
    ("LEGACY_DB_CONNECT_TIMEOUT", "seconds"),
    ("BACKFILL_NOTIFICATIONS_PER_MINUTE", "orders per minute"),
]


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


@register("config")
def configuration_check(app_configs=None, **kwargs):
    errors = [
        Error(message, hint=f"Fix {name} in the environment or .env (see .env.example).", id="buatfilm.E000")
        for name, message in settings.CONFIG_ERRORS
    ]

    # Only the local simulator demo may run on the placeholder key, and only with DEBUG on.
    if not settings.SECRET_KEY_IS_SET and not (settings.DEBUG and settings.MIDTRANS_SIMULATOR):
        errors.append(
            Error(
                "SECRET_KEY is not set (only the local demo, DEBUG on with MIDTRANS_SIMULATOR on, may omit it).",
                hint="Set SECRET_KEY to a long random value, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`.",
                id="buatfilm.E001",
            )
        )

    if not settings.DEBUG and settings.DATABASE_IS_SQLITE:
        errors.append(
            Error(
                "DATABASE_URL points at SQLite and DEBUG is off; SQLite is only for the local demo.",
                hint="Set DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/NAME, or DEBUG=true for the demo.",
                id="buatfilm.E002",
            )
        )

    key = settings.MIDTRANS_SERVER_KEY
    if not key and not settings.MIDTRANS_SIMULATOR:
        errors.append(
            Error(
                "MIDTRANS_SERVER_KEY is not set.",
                hint="Copy the server key from the Midtrans dashboard (Settings > Access Keys) into "
                "MIDTRANS_SERVER_KEY, or set MIDTRANS_SIMULATOR=true for the local demo.",
                id="buatfilm.E003",
            )
        )
    if key and settings.MIDTRANS_IS_PRODUCTION and key.startswith(SANDBOX_SERVER_KEY_PREFIX):
        errors.append(
            Error(
                "MIDTRANS_SERVER_KEY is a sandbox key (SB-Mid-server-...) but MIDTRANS_IS_PRODUCTION=true.",
                hint="Use the production server key (Mid-server-...), or set MIDTRANS_IS_PRODUCTION=false.",
                id="buatfilm.E004",
            )
        )
    if key and not settings.MIDTRANS_IS_PRODUCTION and not key.startswith(SANDBOX_SERVER_KEY_PREFIX):
        errors.append(
            Error(
                "MIDTRANS_SERVER_KEY is a production key but MIDTRANS_IS_PRODUCTION is false (sandbox).",
                hint="Use the sandbox server key (SB-Mid-server-...), or set MIDTRANS_IS_PRODUCTION=true.",
                id="buatfilm.E005",
            )
        )
    if settings.MIDTRANS_SIMULATOR and settings.MIDTRANS_IS_PRODUCTION:
        errors.append(
            Error(
                "MIDTRANS_SIMULATOR=true together with MIDTRANS_IS_PRODUCTION=true.",
                hint="The simulator must never run in production: set MIDTRANS_SIMULATOR=false.",
                id="buatfilm.E006",
            )
        )
    if settings.DEBUG and settings.MIDTRANS_IS_PRODUCTION:
        errors.append(
            Error(
                "DEBUG=true together with MIDTRANS_IS_PRODUCTION=true.",
                hint="Debug pages leak secrets and customer data: set DEBUG=false in production.",
                id="buatfilm.E008",
            )
        )
    if not settings.DEBUG and not settings.REDIS_URL:
        errors.append(
            Error(
                "REDIS_URL is not set and DEBUG is off: without a broker, messages would be sent inside web "
                "requests and the periodic reconciliation would never run.",
                hint="Set REDIS_URL=redis://HOST:6379/0 (only the local demo, DEBUG on, runs tasks in-process).",
                id="buatfilm.E009",
            )
        )
    if settings.MIDTRANS_SIMULATOR and not _is_loopback(settings.PUBLIC_BASE_URL):
        errors.append(
            Error(
                f"MIDTRANS_SIMULATOR=true but PUBLIC_BASE_URL={settings.PUBLIC_BASE_URL!r} is not a loopback "
                "address: anyone could 'pay' on the simulator's page.",
                hint="Use the simulator only locally (PUBLIC_BASE_URL=http://127.0.0.1:8000), or set "
                "MIDTRANS_SIMULATOR=false and real Midtrans keys.",
                id="buatfilm.E010",
            )
        )
    if settings.MIDTRANS_IS_PRODUCTION and not settings.MIDTRANS_CONFIRM_WITH_STATUS_API:
        errors.append(
            Error(
                "MIDTRANS_CONFIRM_WITH_STATUS_API=false together with MIDTRANS_IS_PRODUCTION=true: the "
                "signature does not cover transaction_status, so an edited notification body would decide "
                "whether an order is paid.",
                hint="Set MIDTRANS_CONFIRM_WITH_STATUS_API=true (the default) in production; turn it off only "
                "against the sandbox or the simulator.",
                id="buatfilm.E013",
            )
        )
    if settings.MIDTRANS_IS_PRODUCTION:
        for name in ("MIDTRANS_API_URL", "MIDTRANS_SNAP_URL"):
            url = getattr(settings, name)
            if not url.startswith("https://"):
                errors.append(
                    Error(
                        f"{name}={url!r} is not https but MIDTRANS_IS_PRODUCTION=true.",
                        hint=f"Leave {name} empty to use Midtrans' production host, or give its https URL.",
                        id="buatfilm.E011",
                    )
                )
    for name, unit in POSITIVE_SETTINGS:
        value = getattr(settings, name)
        if value is None or value <= 0:
            errors.append(
                Error(
                    f"{name}={value!r} must be greater than zero ({unit}).",
                    hint=f"Set {name} to a positive number or remove it to use the default (see .env.example).",
                    id="buatfilm.E012",
                )
            )
    # Calls to both Midtrans hosts at their limits leave threads for everything else (threads
    # waiting briefly for a slot or for another request's Snap call come on top).
    # (With one thread per worker there is nothing to keep free: a call holds the worker.)
    limit, threads = settings.MIDTRANS_MAX_CONCURRENT_CALLS, settings.WEB_THREADS
    if (limit or 0) > 0 and 1 < (threads or 0) <= 2 * limit:
        errors.append(
            Error(
                f"MIDTRANS_MAX_CONCURRENT_CALLS={limit} per Midtrans host lets calls to Snap and the Core API take "
                f"all WEB_THREADS={threads} threads of a web worker, so a slow Midtrans would stall every request, "
                "including the course platform's entitlement checks.",
                hint="Keep 2 x MIDTRANS_MAX_CONCURRENT_CALLS below WEB_THREADS (defaults: 3 and 8).",
                id="buatfilm.E017",
            )
        )
    # The bundle the Midtrans client will load (REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, as requests
    # picks between them): one that is not there fails every call, so say so now, not at a payment.
    from payments.midtrans import ca_bundle_path

    ca_bundle = ca_bundle_path(settings.MIDTRANS_API_URL)
    if not os.path.exists(ca_bundle):
        errors.append(
            Error(
                f"The CA bundle {ca_bundle!r} (from REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE) does not exist, so no "
                "call to Midtrans could verify its certificate.",
                hint="Point the variable at a PEM bundle (or a directory of certificates) that exists, or unset "
                "it to use the bundle that ships with certifi.",
                id="buatfilm.E016",
            )
        )
    if not settings.COURSE_ACCESS_URL_IS_SET and not settings.MIDTRANS_SIMULATOR:
        errors.append(
            Error(
                'COURSE_ACCESS_URL is not set: the course link in every "payment received" email and WhatsApp '
                "would lead to a page that does not exist (only the local demo has one).",
                hint="Set COURSE_ACCESS_URL to the course platform's link with the placeholders {course} and "
                "{token}, e.g. COURSE_ACCESS_URL=https://kelas.example/{course}?token={token} (the platform checks "
                "the token with /api/entitlements/check/ or SECRET_KEY).",
                id="buatfilm.E018",
            )
        )
    if not settings.METRICS_TOKEN and not settings.DEBUG:
        errors.append(
            Warning(
                "METRICS_TOKEN is not set, so /metrics refuses every scrape and the Prometheus alerts "
                "(database down, stuck payments, missing backups) cannot fire.",
                hint="Set METRICS_TOKEN to a long random value and give Prometheus the same one "
                "(authorization: credentials: ... in its scrape config).",
                id="buatfilm.W001",
            )
        )
    if settings.METRICS_ALLOWED_IPS:
        import ipaddress

        for network in settings.METRICS_ALLOWED_IPS:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                errors.append(
                    Error(
                        f"METRICS_ALLOWED_IPS has {network!r}, which is not an address or a network.",
                        hint="Give addresses or CIDR networks, comma-separated, e.g. 10.0.0.0/8,192.0.2.7.",
                        id="buatfilm.E019",
                    )
                )
    if settings.DB_WEB_CALL_TIMEOUT_MS is not None and settings.DB_WEB_CALL_TIMEOUT_MS >= 3000:
        errors.append(
            Error(
                f"DB_WEB_CALL_TIMEOUT_MS={settings.DB_WEB_CALL_TIMEOUT_MS} lets a request wait 3 s or more on a hung "
                "database; the contract answers 503 within 3 s.",
                hint="Keep DB_WEB_CALL_TIMEOUT_MS below 3000 (default 2000).",
                id="buatfilm.E020",
            )
        )
    if settings.WHATSAPP_BACKEND not in {"meta", "fonnte", "console", "locmem"}:
        errors.append(
            Error(
                f"WHATSAPP_BACKEND={settings.WHATSAPP_BACKEND!r} is not a known backend.",
                hint="Use one of: meta, fonnte, console, locmem.",
                id="buatfilm.E007",
            )
        )
    if settings.MIDTRANS_SIMULATOR_LANGUAGE not in {"id", "en"}:
        errors.append(
            Error(
                f"MIDTRANS_SIMULATOR_LANGUAGE={settings.MIDTRANS_SIMULATOR_LANGUAGE!r} is not a language the "
                "simulator answers in.",
                hint="Use id (Bahasa Indonesia, the default) or en.",
                id="buatfilm.E131",
            )
        )
    if settings.MIDTRANS_SIMULATOR_EXPIRE_NOTIFICATION_CODE not in {"202", "407"}:
        errors.append(
            Error(
                f"MIDTRANS_SIMULATOR_EXPIRE_NOTIFICATION_CODE={settings.MIDTRANS_SIMULATOR_EXPIRE_NOTIFICATION_CODE!r}"
                " is not a status_code Midtrans sends with an expire notification.",
                hint="Use 202 (Midtrans' documented samples, the default) or 407 (observed).",
                id="buatfilm.E132",
            )
        )
    return errors


# Every message the services render, with the channels it has: (template, has WhatsApp text).
NOTIFICATION_TEMPLATES = [
    ("payment_instructions", True),
    ("payment_received", True),
    ("order_expired", False),
    ("refund_processed", True),
    ("operator_alert", False),
    ("sales_summary", False),
    ("sale_notice", False),
    ("outbox_alert", False),
]


def _sample_contexts() -> list[dict]:
    """Data shaped like payments.notices' and the outbox alert's contexts: once with every
    optional value present, once with each one empty, so both sides of each {% if %} render."""
    from django.utils import timezone

    full = {
        "customer_name": "Budi Santoso",
        "order_id": "BF-20261122-7K3QX9AB",
        "package_name": "Buat Film Pakai AI",
        "amount": "Rp99.000",
        "expires_at": timezone.now(),
        "payment_url": "https://app.midtrans.com/snap/v4/redirection/sample-token",
        "va_number": "12345678901",
        "bank": "BCA",
        "access_link": "https://kelas.example/ai-movie-course?token=sample",
        "shop_url": "https://buatfilm.example/",
        "refunded_amount": "Rp49.000",
        "fully_refunded": True,
        "subject": "Sample alert",
        "body": "Sample alert body.",
        "admin_url": "https://buatfilm.example/admin/",
    }
    empty = full | {"va_number": "", "bank": "", "fully_refunded": False, "order_id": ""}
    return [full, empty]


@register("config")
def notification_templates_check(app_configs=None, **kwargs):
    """A message that cannot be rendered (a missing or broken template, a bad COURSE_ACCESS_URL)
    fails inside the payment transaction and rolls the settlement back: every paid order would
    answer 503 until it is fixed. Render each one now, so the process refuses to start instead."""
    from entitlements.services import access_link_build
    from notifications.rendering import email_render, whatsapp_render

    errors = []
    try:
        access_link_build(email="budi@example.com", course_code="ai-movie-course")
    except Exception as exc:
        errors.append(
            Error(
                f"COURSE_ACCESS_URL={settings.COURSE_ACCESS_URL!r} cannot be filled in with the course and "
                f"the token ({type(exc).__name__}: {exc}).",
                hint="Use only the placeholders {course} and {token} (write {{ and }} for a literal brace), "
                "e.g. https://kelas.example/{course}?token={token}; or leave it empty for the default.",
                id="buatfilm.E014",
            )
        )
    for template, has_whatsapp in NOTIFICATION_TEMPLATES:
        for context in _sample_contexts():
            try:
                email_render(template=template, context=context)
                if has_whatsapp:
                    whatsapp_render(template=template, context=context)
            except Exception as exc:
                errors.append(
                    Error(
                        f"Notification template {template!r} cannot be rendered ({type(exc).__name__}: {exc}).",
                        hint=f"Fix templates/notifications/{template}/ (subject.txt, email.txt, email.html"
                        + (", whatsapp.txt" if has_whatsapp else "")
                        + "): every file must exist and render.",
                        id="buatfilm.E015",
                    )
                )
                break  # one message per template is enough
    return errors


@register("config")
def operator_tools_check(app_configs=None, **kwargs):
    """Settings of the operator tools and the owners' reports (issue 17)."""
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    errors = []
    hour = settings.SALES_SUMMARY_HOUR
    if not isinstance(hour, int) or not 0 <= hour <= 23:
        errors.append(
            Error(
                f"SALES_SUMMARY_HOUR={hour!r} is not an hour of the day.",
                hint="Set SALES_SUMMARY_HOUR to 0-23 (Asia/Jakarta), e.g. 7 for 07:00 WIB.",
                id="buatfilm.E170",
            )
        )
    for name in ("SALES_SUMMARY_EMAILS", "SALE_NOTICE_EMAILS"):
        for address in getattr(settings, name) or []:
            try:
                validate_email(address)
            except ValidationError:
                errors.append(
                    Error(
                        f"{name} contains {address!r}, which is not an email address.",
                        hint=f"Set {name} to comma-separated addresses, e.g. owner@example.com,finance@example.com.",
                        id="buatfilm.E171",
                    )
                )
    seconds = settings.RESEND_ACCESS_MIN_SECONDS
    if not isinstance(seconds, int) or seconds < 1:
        errors.append(
            Error(
                f"RESEND_ACCESS_MIN_SECONDS={seconds!r} must be a whole number of seconds, at least 1.",
                hint="Set RESEND_ACCESS_MIN_SECONDS=60 (the default) or more.",
                id="buatfilm.E172",
            )
        )
    return errors
