"""The switch end to end (live_server, the Midtrans simulator over HTTP, PostgreSQL): a payment
open in the old app at the switch is applied here, by its notification or by the sweep."""

import pytest
from django.core.management import call_command

from entitlements.models import Entitlement
from notifications.models import Notification
from payments import midtrans
from payments.models import Order, PaymentAttempt
from payments.services.reconcile import reconcile_sweep
from payments.tests.legacy_support import legacy_row, sqlite_orders_db
from payments.tests.midtrans_payloads import midtrans_body
from payments.tests.payment_support import package_for_tests, webhook_post

pytestmark = pytest.mark.django_db(transaction=True)

OS = Order.Status


def _open_at_the_old_app(sim, legacy_id: str) -> None:
    """What the old app did before the switch: a Snap transaction under the legacy id, and the
    customer picked BCA virtual account (its pending notification went to the old app)."""
    midtrans.snap_create(
        payload={
            "transaction_details": {"order_id": legacy_id, "gross_amount": 99000},
            "customer_details": {"email": f"{legacy_id.lower()}@example.com"},
        }
    )
    sim.choose(legacy_id, "bca_va")


def _import_pending(tmp_path, legacy_id: str) -> Order:
    package_for_tests()  # transactional tests flush the launch package of the data migration
    path = sqlite_orders_db(tmp_path / "orders.db", [legacy_row(legacy_id, status="pending", amount="99000.00")])
    call_command("import_legacy", "--sqlite", str(path))
    return Order.objects.get(legacy_id=legacy_id)


def _paid_messages(order: Order) -> list[str]:
    return sorted(Notification.objects.filter(dedupe_key__startswith=f"order:{order.id}:paid:").values_list(
        "channel", flat=True))  # fmt: skip


def test_settlement_for_a_legacy_id_after_the_switch_marks_the_imported_order_paid(sim, live_server, tmp_path):
    # given: an order pending in the old app at the switch, imported here
    _open_at_the_old_app(sim, "OLD-20261120-0042")
    order = _import_pending(tmp_path, "OLD-20261120-0042")
    assert order.status == OS.PENDING_PAYMENT
    assert not Entitlement.objects.exists()

    # when: the customer pays, and Midtrans notifies the new URL for the old order id (signed)
    call_command("midtrans_sim", "OLD-20261120-0042", "settlement")
    # and Midtrans retries the same notification
    duplicate = webhook_post(live_server.url, midtrans_body("OLD-20261120-0042", "settlement"))

    # then: paid once, one entitlement, one paid message per channel
    assert duplicate.status_code == 200
    order.refresh_from_db()
    assert order.status == OS.PAID
    assert PaymentAttempt.objects.get(order=order).status == PaymentAttempt.Status.PAID
    assert list(Entitlement.objects.values_list("order_id", "status")) == [(order.id, "active")]
    assert _paid_messages(order) == ["email", "whatsapp"]


@pytest.mark.parametrize("sweep", ["beat", "command"])
def test_reconcile_sweep_applies_a_legacy_payment_whose_notification_was_lost(sim, tmp_path, sweep):
    # given: imported pending; the customer paid at Midtrans, the notification never arrived
    _open_at_the_old_app(sim, "OLD-LOST-1")
    order = _import_pending(tmp_path, "OLD-LOST-1")
    sim.pay("OLD-LOST-1")

    # when: the next periodic sweep runs, or the operator runs it for orders since the old
    # app's first order
    if sweep == "beat":
        reconcile_sweep()
    else:
        call_command("reconcile_payments", "--since", "2026-11-01")

    # then
    order.refresh_from_db()
    assert order.status == OS.PAID
    assert Entitlement.objects.filter(order_id=order.id, status="active").count() == 1
    assert _paid_messages(order) == ["email", "whatsapp"]
