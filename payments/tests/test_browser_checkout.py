"""The customer's whole path in headless Chromium against the live server and the Midtrans
simulator: landing form -> checkout API -> simulator payment page -> our finish page.
"""

import re
import shutil

import pytest
from django.db import connections

from payments.models import Order, OrderStatus, PaymentAttempt
from payments.tests.checkout_support import launch_package_ensure

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page(midtrans_sim, monkeypatch):
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM reads are
    # plain synchronous code, so Django's async-safety guard is told so.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 390, "height": 844}, locale="id-ID")  # a phone
        page = context.new_page()
        page.set_default_timeout(15000)
        yield page
        context.close()
        browser.close()
        # Queries made while Playwright runs get a connection of their own (its event loop
        # changes the async context Django keys connections by); close it, or the test
        # database cannot be dropped at the end of the run.
        connections.close_all()


def test_customer_fills_the_form_pays_on_the_simulator_and_lands_on_the_finish_page(page, midtrans_sim, settings):
    # given
    launch_package_ensure()
    settings.CHECKOUT_RATE_LIMIT = ""
    page.goto(midtrans_sim.live_url + "/")

    # when the form is sent with a mistake first: the error is shown inline and nothing is made
    page.fill("#name", "Dewi Lestari")
    page.fill("#email", "Dewi@Example.com")
    page.fill("#phone", "021 5555 1234")
    page.click("#pay-button")
    page.wait_for_selector("#error-phone:has-text('nomor ponsel')")
    assert page.get_attribute("#phone", "aria-invalid") == "true"
    assert Order.objects.count() == 0

    # and then corrected
    page.fill("#phone", "0812 3456 7890")
    page.click("#pay-button")

    # then the browser is on the simulator's payment page for a committed, payable order
    page.wait_for_url(re.compile(r"/sandbox/midtrans/snap/v4/redirection/"))
    order = Order.objects.get()
    assert (order.customer_email, order.customer_phone, order.status) == (
        "dewi@example.com",
        "+6281234567890",
        OrderStatus.PENDING_PAYMENT,
    )
    attempt = PaymentAttempt.objects.get(order=order)
    assert page.url.endswith(attempt.snap_token)
    assert page.is_visible(f"text={attempt.midtrans_order_id}")
    assert page.is_visible("text=Rp 99.000")

    # when the customer picks a bank transfer and pays
    page.click("button[value=bca_va]")
    page.wait_for_selector("[data-testid=va-number]")
    page.click("button[value=pay]")

    # then the simulator sends the browser back to our finish page for this order
    page.wait_for_url(re.compile(rf"/orders/{order.id}/"))
    page.wait_for_selector(f"#order-id:has-text('{order.id}')")
    assert midtrans_sim.transaction(attempt.midtrans_order_id).transaction_status == "settlement"
    # and once Midtrans' notification has been applied, the polling page turns to "paid" by itself
    page.wait_for_selector("#order-status[data-status=PAID]")
    assert page.is_visible("text=Pembayaran diterima")
    assert page.is_visible("text=Cek email dan WhatsApp Anda")
    assert not page.is_visible("#continue-button")
    order.refresh_from_db()
    assert order.status == OrderStatus.PAID
