import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buatfilm.settings")

application = get_asgi_application()

from buatfilm.startup import exit_on_failed_checks  # noqa: E402

exit_on_failed_checks("web")
