"""gunicorn settings the Procfile's web process loads (`--config gunicorn.conf.py`); the rest
of its options are on the Procfile line, where operators look for them."""

import os


def child_exit(server, worker):
    # prometheus-client's multiprocess mode (buatfilm/metrics.py): a dead worker's live gauges go.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
