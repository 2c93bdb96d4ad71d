"""The Celery app. Worker and beat load the very same Django settings as the web."""

import os

from celery import Celery
from celery.signals import beat_init, task_postrun, task_prerun, worker_init, worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buatfilm.settings")

app = Celery("buatfilm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
@beat_init.connect
def _refuse_bad_configuration(**_kwargs):
    from buatfilm.startup import exit_on_failed_checks

    exit_on_failed_checks("celery")


# Each task's database calls wait at most the server's statement timeout plus a grace, so a
# hung server fails the task (it is retried) instead of holding a worker process forever.
_task_deadline_tokens: dict[str, object] = {}


@task_prerun.connect
def _database_deadline_enter(task_id=None, **_kwargs):
    from django.conf import settings

    from buatfilm.dbdeadline import scope_enter

    seconds = (settings.DB_STATEMENT_TIMEOUT_MS + settings.DB_TASK_CALL_GRACE_MS) / 1000
    _task_deadline_tokens[task_id] = scope_enter(seconds)


@task_postrun.connect
def _database_deadline_exit(task_id=None, **_kwargs):
    from buatfilm.dbdeadline import scope_exit

    token = _task_deadline_tokens.pop(task_id, None)
    if token is not None:
        scope_exit(token)


@worker_process_shutdown.connect
def _metrics_process_dead(**_kwargs):
    # prometheus-client's multiprocess mode (buatfilm/metrics.py), as gunicorn's child_exit does.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
