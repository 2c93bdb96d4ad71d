"""The customer's whole path in headless Chromium against the live server and the Midtrans
simulator: landing form -> checkout API -> simulator payment page -> our finish page.
"""

import re
import threading

import pytest

from payments import midtrans
from payments.models import IdempotencyRecord, Order, OrderStatus, PaymentAttempt
from payments.tests.checkout_support import launch_package_ensure

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def landing(midtrans_sim, phone_page, settings):
    """The landing page on a phone, open, with the launch package on sale."""
    launch_package_ensure()
    settings.CHECKOUT_RATE_LIMIT = ""
    phone_page.goto(midtrans_sim.live_url + "/")
    return phone_page


def form_fill(page, *, email: str, phone: str) -> None:
    page.fill("#name", "Dewi Lestari")
    page.fill("#email", email)
    page.fill("#phone", phone)


def test_customer_fills_the_form_pays_on_the_simulator_and_lands_on_the_finish_page(midtrans_sim, landing):
    # given
    page = landing

    # when the form is sent with a mistake first: the error is shown inline and nothing is made
    form_fill(page, email="Dewi@Example.com", phone="021 5555 1234")
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
    assert page.is_visible("text=Rp 99.000")  # the simulator's own page, as Midtrans writes it

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


def test_when_midtrans_is_busy_the_page_tries_again_by_itself_on_the_same_order(landing, settings):
    # given every Snap call slot of the server busy (a slow Midtrans) until released below
    page = landing
    settings.MIDTRANS_MAX_CONCURRENT_CALLS = 1
    slots = midtrans._call_slots(midtrans.SNAP)
    assert slots.acquire(blocking=False)
    freed = threading.Timer(0.5, slots.release)
    try:
        form_fill(page, email="dewi@example.com", phone="0812 3456 7890")

        # when the customer pays once: the server answers 503 with Retry-After 2
        page.click("#pay-button")
        page.wait_for_selector("#form-error:has-text('mencoba lagi secara otomatis')")
        assert page.is_disabled("#pay-button")
        freed.start()

        # then, without another click, the page comes back with the same key and reaches Snap
        page.wait_for_url(re.compile(r"/sandbox/midtrans/snap/v4/redirection/"), timeout=15_000)
    finally:
        if freed.is_alive() or freed.finished.is_set():
            freed.join()
        else:  # failed before the release was scheduled: later tests need the slot
            slots.release()
    order = Order.objects.get()
    assert order.status == OrderStatus.PENDING_PAYMENT
    assert list(PaymentAttempt.objects.order_by("number").values_list("status", flat=True)) == ["failed", "open"]
    assert "MidtransBusy" in PaymentAttempt.objects.get(number=1).last_error
    assert IdempotencyRecord.objects.count() == 1
