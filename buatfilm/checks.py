"""Start-up checks: refuse to run on configuration that would fail in production.

They are Django system checks, so `manage.py check`, `runserver`, `migrate`, the
gunicorn web process (buatfilm/wsgi.py) and Celery worker/beat (buatfilm/celery.py)
all run them. Each message names the variable and says how to fix it.
"""

from django.conf import settings
from django.core.checks import Error, register

SANDBOX_SERVER_KEY_PREFIX = "SB-Mid-server-"


@register("config")
def configuration_check(app_configs=None, **kwargs):
    errors = [
        Error(message, hint=f"Fix {name} in the environment or .env (see .env.example).", id="buatfilm.E000")
        for name, message in settings.CONFIG_ERRORS
    ]

    if not settings.DEBUG and not settings.SECRET_KEY_IS_SET:
        errors.append(
            Error(
                "SECRET_KEY is not set and DEBUG is off.",
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
    if settings.WHATSAPP_BACKEND not in {"meta", "fonnte", "console", "locmem"}:
        errors.append(
            Error(
                f"WHATSAPP_BACKEND={settings.WHATSAPP_BACKEND!r} is not a known backend.",
                hint="Use one of: meta, fonnte, console, locmem.",
                id="buatfilm.E007",
            )
        )
    return errors
