"""Run the start-up checks outside manage.py (gunicorn, celery) and refuse to start."""

import sys

from django.core import checks


def failed_check_messages() -> list[str]:
    messages = checks.run_checks(include_deployment_checks=False)
    return [f"{m.id}: {m.msg}\n    HINT: {m.hint}" for m in messages if m.level >= checks.ERROR]


def exit_on_failed_checks(process: str) -> None:
    failures = failed_check_messages()
    if failures:
        sys.stderr.write(f"{process} refuses to start; fix the configuration:\n" + "\n".join(failures) + "\n")
        sys.stderr.flush()
        raise SystemExit(3)
