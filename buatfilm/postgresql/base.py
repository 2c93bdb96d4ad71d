"""Django's PostgreSQL backend with a client-side deadline on each call (buatfilm.dbdeadline).

A subclass, as Django documents for changing a built-in backend: queries, commits, rollbacks,
connection set-up and the health check before reusing a pooled connection each run under the
deadline of the current scope (a web request, a Celery task). The health check always has a
short one of its own, so a request that finds its pooled connection on a hung server still
has time to try a fresh connection (bounded by DB_CONNECT_TIMEOUT) and answer 503 within 3 s.
While the server is not answering, one probe thread tries to connect and requests answer 503
at once (dbdeadline's connect gate).
"""

import time

from django.db.backends.postgresql import base

from buatfilm.dbdeadline import call_bounded, connect_gate, scope_deadline

# SELECT 1 on a live server answers in well under a millisecond.
USABLE_CHECK_SECONDS = 0.5


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.execute_wrappers.append(self._execute_bounded)

    def _fileno(self) -> int | None:
        return self.connection.fileno() if self.connection is not None and not self.connection.closed else None

    def _execute_bounded(self, execute, sql, params, many, context):
        with call_bounded(self._fileno()):
            return execute(sql, params, many, context)

    def get_new_connection(self, conn_params):
        # Inside a deadline scope (web requests, tasks) a server known not to answer is asked by
        # one probe thread, not by every request (buatfilm.dbdeadline.ConnectGate); outside
        # (manage.py) as usual.
        if scope_deadline() is None:
            return super().get_new_connection(conn_params)
        if not connect_gate.admit(probe=lambda: base.Database.connect(**conn_params).close()):
            down_for = time.monotonic() - (connect_gate.down_since or time.monotonic())
            raise base.Database.OperationalError(
                f"the database has not answered for {down_for:.1f} s (a probe is checking it)"
            )
        try:
            connection = super().get_new_connection(conn_params)
        except Exception:
            connect_gate.report(ok=False)
            raise
        connect_gate.report(ok=True)
        return connection

    def init_connection_state(self):
        with call_bounded(self._fileno()):
            super().init_connection_state()

    def is_usable(self):
        if connect_gate.is_down():
            return False  # the server is not answering: do not wait on this connection either
        with call_bounded(self._fileno(), seconds=USABLE_CHECK_SECONDS):
            return super().is_usable()

    def commit(self):
        with call_bounded(self._fileno()):
            super().commit()

    def rollback(self):
        with call_bounded(self._fileno()):
            super().rollback()
