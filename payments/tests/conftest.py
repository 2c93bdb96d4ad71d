"""Fixtures for payments tests. The Midtrans simulator fixture lives here; others may append theirs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class MidtransSim:
    """Drives the Midtrans simulator served by `live_server` (real HTTP for the client under test).

    `ref` arguments take a Snap token or a Midtrans order id. Methods: "bca_va", "qris",
    "gopay", "credit_card". Notifications go out asynchronously from a thread in this
    process; call `deliver()` to send whatever is due now and wait for it, or
    `pause_deliveries()` first to send only when you call `deliver()`.
    """

    live_url: str  # e.g. http://localhost:41234
    base_url: str  # live_url + "/sandbox/midtrans" (MIDTRANS_SNAP_URL and MIDTRANS_API_URL point here)
    notification_url: str  # live_url + "/webhooks/midtrans"

    # --- looking -------------------------------------------------------------------------------
    def transaction(self, ref: str):
        """The SimTransaction row (fresh from the database)."""
        from payments.simulator.models import SimTransaction

        tx = SimTransaction.objects.filter(token=ref).first() or SimTransaction.objects.filter(order_id=ref).first()
        if tx is None:
            raise LookupError(f"no simulated transaction for {ref!r}")
        return tx

    def notifications(self, ref: str | None = None) -> list:
        """SimNotification rows (payload, status, attempts, last_http_status, history), oldest first."""
        from payments.simulator.models import SimNotification

        rows = SimNotification.objects.order_by("id")
        if ref is not None:
            rows = rows.filter(transaction=self.transaction(ref))
        return list(rows)

    def api_calls(self, operation: str | None = None) -> list:
        """SimApiCall rows: every API request the simulator received (operation, order_id, http_status, fault)."""
        from payments.simulator.models import SimApiCall

        rows = SimApiCall.objects.order_by("id")
        return list(rows.filter(operation=operation) if operation else rows)

    def status_body(self, ref: str) -> dict:
        """What GET /v2/<id>/status would answer right now (without an HTTP call)."""
        from payments.simulator import services

        return services.status_read(identifier=self.transaction(ref).order_id)

    def page_url(self, ref: str) -> str:
        return f"{self.base_url}/snap/v4/redirection/{self.transaction(ref).token}"

    # --- acting as the customer (the same services the payment page calls) ---------------------------
    def choose(self, ref: str, method: str = "bca_va"):
        """Pick a method: the transaction becomes pending and a pending (201) notification is queued."""
        from payments.simulator import services

        tx = self.transaction(ref)
        return services.method_choose(token=tx.token, method=method)

    def _outcome(self, ref: str, outcome: str, method: str):
        from payments.simulator import services

        tx = self.transaction(ref)
        if not tx.method_chosen:
            tx = self.choose(ref, method)
        return services.outcome_apply(token=tx.token, outcome=outcome)

    def pay(self, ref: str, method: str = "bca_va"):
        """Settle (cards: capture/accept); chooses `method` first if none was chosen."""
        return self._outcome(ref, "pay", method)

    def expire(self, ref: str, method: str = "bca_va"):
        return self._outcome(ref, "expire", method)

    def deny(self, ref: str, method: str = "bca_va"):
        return self._outcome(ref, "deny", method)

    def trigger(
        self,
        ref: str,
        event: str,
        *,
        duplicate: int = 1,
        out_of_order: bool = False,
        amount: int | None = None,
        refund_amount: int | None = None,
        bad_signature: bool = False,
        method: str = "bca_va",
    ) -> list:
        """Like `manage.py midtrans_sim`: apply `event` and queue its signed notification(s); returns the rows."""
        from payments.simulator import triggers

        return triggers.trigger_event(
            order_id=self.transaction(ref).order_id,
            event=event,
            duplicate=duplicate,
            out_of_order=out_of_order,
            amount=amount,
            refund_amount=refund_amount,
            bad_signature=bad_signature,
            method=method,
        )

    # --- notifications ------------------------------------------------------------------------------
    def deliver(self, timeout: float = 10.0) -> list:
        """Send every notification due now, wait for any in flight; later retries stay scheduled."""
        from payments.simulator.dispatcher import deliveries_settle

        return deliveries_settle(timeout=timeout)

    def deliver_all(self, wait_seconds: float = 30.0) -> list:
        """Keep delivering, retries included, until nothing is left to send (or wait_seconds pass)."""
        from payments.simulator.dispatcher import deliveries_drain, dispatcher_stop

        dispatcher_stop()
        return deliveries_drain(wait_seconds=wait_seconds)

    def pause_deliveries(self) -> None:
        """Stop the background sender: nothing is sent until `deliver()`/`deliver_all()`."""
        from payments.simulator.dispatcher import dispatcher_autostart, dispatcher_stop

        dispatcher_autostart(False)
        dispatcher_stop()

    # --- faults -------------------------------------------------------------------------------------
    def faults(self, **changes) -> dict:
        """Set faults: latency_ms, error_rate (0..1), fail_next (N), timeout (bool), timeout_seconds, down (bool),
        answer_status (404/429/3xx) for the next answer_next (N) calls, retry_after_seconds (429),
        core_errors_as_http (bool: Core API errors with their status_code as the HTTP status)."""
        from payments.simulator import faults

        return faults.fault_as_dict(faults.fault_set(**changes))

    def faults_reset(self) -> None:
        from payments.simulator import faults

        faults.fault_reset()


@pytest.fixture
def midtrans_sim(live_server, settings):
    """The Midtrans simulator on `live_server`, with the client and notifications pointed at it."""
    from payments.simulator.dispatcher import dispatcher_autostart, dispatcher_stop

    base = f"{live_server.url}/sandbox/midtrans"
    settings.MIDTRANS_SIMULATOR = True
    settings.PUBLIC_BASE_URL = live_server.url
    settings.MIDTRANS_SNAP_URL = base
    settings.MIDTRANS_API_URL = base
    settings.MIDTRANS_NOTIFICATION_URL = f"{live_server.url}/webhooks/midtrans"
    # The sender thread starts with the live server's first request (as in a web process).
    autostart_before = dispatcher_autostart(True)
    yield MidtransSim(live_url=live_server.url, base_url=base, notification_url=settings.MIDTRANS_NOTIFICATION_URL)
    # Stop the sender before the test database is flushed under it.
    dispatcher_stop()
    dispatcher_autostart(autostart_before)


@pytest.fixture(autouse=True)
def _midtrans_sim_dispatcher_stopped():
    # A sender thread left running would touch the database after the test ended.
    yield
    from payments.simulator.dispatcher import dispatcher_stop

    dispatcher_stop()


@pytest.fixture
def midtrans_sim_alone(midtrans_sim, settings):
    """`midtrans_sim` with only the simulator's routes served (the simulator's own tests use this)."""
    settings.ROOT_URLCONF = "payments.simulator.standalone_urls"
    return midtrans_sim


@pytest.fixture(autouse=True)
def _midtrans_http_sessions_closed():
    # The Midtrans client keeps connections alive per process; a live_server thread serves a kept
    # connection (holding a database connection) until the client closes it.
    yield
    from payments import midtrans

    midtrans.http_sessions_close()


CHROMIUM = "/usr/bin/chromium"  # Debian's package, installed by `make browser`; never a downloaded browser
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",  # this machine has no internet; Chromium's own calls only fail
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def phone_page(monkeypatch):
    """A page in headless Chromium the size of a phone, with touch."""
    import shutil

    from django.db import connections

    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM reads are
    # plain synchronous code, so Django's async-safety guard is told so.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(
            viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, locale="id-ID"
        )
        page = context.new_page()
        page.set_default_timeout(15000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
            # Queries made while Playwright runs get a connection of their own (its event loop
            # changes the async context Django keys connections by); close it, or the test
            # database cannot be dropped at the end of the run.
            connections.close_all()


@pytest.fixture
def sim(midtrans_sim, settings):
    """The simulator with status confirmation on and its deliveries paused: a notification is
    "lost" unless the test delivers it. Alerts go to an operator address."""
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = True
    settings.ALERT_EMAILS = ["ops@buatfilm.test"]
    midtrans_sim.pause_deliveries()
    return midtrans_sim
