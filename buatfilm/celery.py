"""The Celery app. Worker and beat load the very same Django settings as the web."""

import os

from celery import Celery
from celery.signals import beat_init, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buatfilm.settings")

app = Celery("buatfilm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
@beat_init.connect
def _refuse_bad_configuration(**_kwargs):
    from buatfilm.startup import exit_on_failed_checks

    exit_on_failed_checks("celery")
