"""The operator's tools on the admin's order pages, each with and without its permission."""

import csv
import io

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from entitlements.models import Entitlement
from entitlements.tests.factories import EntitlementFactory
from notifications.models import Notification
from payments.models import AuditEntry, Order, PaymentAttempt, Refund
from payments.tests.factories import OrderFactory, PaymentAttemptFactory
from payments.tests.payment_support import package_for_tests

pytestmark = pytest.mark.django_db

OS = Order.Status
TOKEN = "test-entitlements-token"  # buatfilm.testing sets ENTITLEMENTS_API_TOKEN to this


def staff(client, django_user_model, name: str, *codenames: str):
    user = django_user_model.objects.create_user(name, f"{name}@buatfilm.test", "pw-for-tests", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_order", *codenames]))
    client.force_login(user)
    return client


def paid_order(**kw) -> Order:
    order = OrderFactory(package=package_for_tests(), status=OS.PAID, paid_at=timezone.now(), **kw)
    PaymentAttemptFactory(order=order, status=PaymentAttempt.Status.PAID, payment_type="bank_transfer")
    EntitlementFactory(order_id=order.pk, email=order.customer_email)
    return order


def snapshot() -> tuple:
    return (
        sorted(
            Order.objects.values_list(
                "id", "status", "customer_email", "customer_phone", "needs_review", "review_reason", "refunded_amount"
            )
        ),
        sorted(Entitlement.objects.values_list("order_id", "email", "status")),
        Refund.objects.count(),
        AuditEntry.objects.count(),
        Notification.objects.count(),
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def url(name: str, order: Order) -> str:
    return reverse(f"admin:payments_order_{name}", args=[order.pk])


# --- refusals: every tool, for a staff user who may only view orders ------------------------------

TOOLS = [
    ("refund", "post", {"attempt": "x", "reason": "other"}, "payments.refund_order"),
    ("resolve", "post", {"note": "checked"}, "payments.resolve_review"),
    ("sync", "post", {}, "payments.sync_order"),
    ("correct", "post", {"email": "baru@example.com"}, "payments.correct_contact"),
    ("resend", "post", {}, "payments.resend_access"),
]


@pytest.mark.parametrize(("tool", "method", "data", "permission"), TOOLS)
def test_each_tool_is_refused_clearly_without_its_permission_and_changes_nothing(
    client, django_user_model, tool, method, data, permission
):
    viewer = staff(client, django_user_model, "andi")
    order = paid_order(needs_review=True, review_reason="Late payment: X.")
    before = snapshot()

    response = getattr(viewer, method)(url(tool, order), data, follow=True)

    assert response.status_code == 200
    assert any(permission in m and "Nothing was changed" in m for m in messages_of(response))
    assert snapshot() == before
    # and the buttons are not on the page
    page = viewer.get(url("change", order)).content.decode()
    for button in ("Sync from Midtrans", ">Refund<", "Resolve review", "Correct email", "Resend access"):
        assert button not in page


def test_tools_are_refused_to_staff_who_may_not_even_view_orders(client, django_user_model):
    user = django_user_model.objects.create_user("tamu", "t@buatfilm.test", "pw", is_staff=True)
    client.force_login(user)
    order = paid_order()
    before = snapshot()
    for tool, method, data, _ in TOOLS:
        assert getattr(client, method)(url(tool, order), data).status_code == 403
    assert client.get(reverse("admin:payments_order_export")).status_code == 403
    assert snapshot() == before


def test_the_admin_is_in_english(client, django_user_model):
    viewer = staff(client, django_user_model, "andi")
    page = viewer.get(reverse("admin:payments_order_changelist")).content.decode()
    assert '<html lang="en"' in page and "Select order to view" in page


# --- review queue ----------------------------------------------------------------------------------


def test_review_queue_lists_cases_with_their_reason_and_a_resolved_case_leaves_it(client, django_user_model):
    operator = staff(client, django_user_model, "siti", "resolve_review")
    flagged = paid_order(needs_review=True, review_reason="Double payment: BF-X-2 was paid although ...")
    calm = paid_order()
    queue = reverse("admin:payments_order_changelist") + "?review=open"

    page = operator.get(queue).content.decode()
    assert flagged.pk in page and "Double payment" in page and calm.pk not in page

    # a note is required
    before = snapshot()
    response = operator.post(url("resolve", flagged), {"note": "  "})
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    assert snapshot() == before

    response = operator.post(url("resolve", flagged), {"note": "Refunded BF-X-2 by hand."}, follow=True)

    assert any("resolved" in m for m in messages_of(response))
    flagged.refresh_from_db()
    assert (flagged.needs_review, flagged.review_resolved_by, flagged.review_resolution_note) == (
        False,
        "siti",
        "Refunded BF-X-2 by hand.",
    )
    assert flagged.pk not in operator.get(queue).content.decode()
    assert flagged.pk in operator.get(reverse("admin:payments_order_changelist") + "?review=resolved").content.decode()
    entry = AuditEntry.objects.get(action="review_resolved")
    assert entry.actor == "siti" and "Double payment" in entry.old_value["review_reason"]

    # resolving again: there is no case left
    before = snapshot()
    response = operator.post(url("resolve", flagged), {"note": "again"})
    assert "no open review case" in response.content.decode()
    assert snapshot() == before


# --- correcting the contact ------------------------------------------------------------------------


def test_corrected_email_moves_the_access_and_the_check_api_follows(client, django_user_model):
    operator = staff(client, django_user_model, "siti", "correct_contact")
    order = paid_order(customer_email="budi@gmial.com")

    response = operator.post(url("correct", order), {"email": "Budi@Gmail.com", "phone": "0812-9999-0000"}, follow=True)

    assert any("corrected" in m for m in messages_of(response))
    order.refresh_from_db()
    assert (order.customer_email, order.customer_phone) == ("budi@gmail.com", "+6281299990000")
    entry = AuditEntry.objects.get(action="contact_corrected")
    assert entry.actor == "siti"
    assert entry.old_value == {"customer_email": "budi@gmial.com", "customer_phone": "+6281234567890"}
    assert entry.new_value == {"customer_email": "budi@gmail.com", "customer_phone": "+6281299990000"}

    def check(email):
        return client.get(
            "/api/entitlements/check/",
            {"email": email, "course": "ai-movie-course"},
            HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
        ).json()

    assert check("budi@gmail.com")["active"] is True
    assert check("budi@gmial.com")["active"] is False


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"email": "not-an-email"}, "is not a valid email address"),
        ({"phone": "12"}, "is not a valid mobile number"),
        ({}, "Give a new email or a new phone number"),
    ],
)
def test_bad_contact_corrections_are_refused_clearly_and_change_nothing(client, django_user_model, data, message):
    operator = staff(client, django_user_model, "siti", "correct_contact")
    order = paid_order()
    before = snapshot()

    response = operator.post(url("correct", order), data)

    assert response.status_code == 200 and message in response.content.decode()
    assert snapshot() == before


# --- resending access ------------------------------------------------------------------------------


def test_resend_access_rebuilds_the_message_to_the_current_contact_once_per_click(client, django_user_model):
    operator = staff(client, django_user_model, "siti", "resend_access", "correct_contact")
    order = paid_order(customer_email="lama@example.com")
    operator.post(url("correct", order), {"email": "baru@example.com"})

    response = operator.post(url("resend", order), follow=True)

    assert any("queued again" in m for m in messages_of(response))
    sent = Notification.objects.filter(reference=order.pk, template="payment_received")
    assert sorted(sent.values_list("channel", "recipient")) == [
        ("email", "baru@example.com"),
        ("whatsapp", "+6281234567890"),
    ]
    assert "token=" in sent.get(channel="email").body_text

    # a second click at once is refused: rate-limited, nothing more queued
    before = snapshot()
    response = operator.post(url("resend", order), follow=True)
    assert any("was just resent" in m and "Nothing was sent" in m for m in messages_of(response))
    assert snapshot() == before


def test_resend_access_after_the_wait_sends_again(client, django_user_model, settings):
    operator = staff(client, django_user_model, "siti", "resend_access")
    order = paid_order()
    operator.post(url("resend", order))
    AuditEntry.objects.filter(action="access_resent").update(
        created_at=timezone.now() - timezone.timedelta(seconds=settings.RESEND_ACCESS_MIN_SECONDS + 1)
    )

    operator.post(url("resend", order))

    assert Notification.objects.filter(reference=order.pk, template="payment_received").count() == 4


def test_resend_access_of_an_unpaid_order_is_refused(client, django_user_model):
    operator = staff(client, django_user_model, "siti", "resend_access")
    order = OrderFactory(package=package_for_tests())
    before = snapshot()
    response = operator.post(url("resend", order), follow=True)
    assert any("gives no access to resend" in m for m in messages_of(response))
    assert snapshot() == before


# --- export ---------------------------------------------------------------------------------------


def _csv(response) -> tuple[list[list[str]], int]:
    chunks = list(response.streaming_content)
    text = b"".join(chunks).decode()
    return list(csv.reader(io.StringIO(text))), len(chunks)


def test_export_of_a_large_filtered_list_streams_the_filtered_rows(client, django_user_model):
    operator = staff(client, django_user_model, "siti", "export_orders")
    package = package_for_tests()
    now = timezone.now()
    Order.objects.bulk_create(
        [
            Order(
                id=f"BF-20261204-P{n:07d}",
                package=package,
                customer_name="Budi",
                customer_email=f"p{n}@example.com",
                customer_phone="+6281234567890",
                list_price=99000,
                amount=99000,
                status=OS.PAID,
                paid_at=now,
                expires_at=now,
            )
            for n in range(5000)
        ]
        + [
            Order(
                id=f"BF-20261204-E{n:07d}",
                package=package,
                customer_name="Budi",
                customer_email=f"e{n}@example.com",
                customer_phone="+6281234567890",
                list_price=99000,
                amount=99000,
                status=OS.EXPIRED,
                expires_at=now,
            )
            for n in range(300)
        ]
    )

    response = operator.get(reverse("admin:payments_order_export"), {"status__exact": "PAID"})

    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    rows, chunks = _csv(response)
    assert rows[0] == [
        "order_id",
        "legacy_id",
        "created_at",
        "paid_at",
        "status",
        "package",
        "list_price",
        "discount",
        "amount",
        "refunded",
        "payment_type",
        "email",
        "phone",
    ]
    assert len(rows) == 5001 and {r[4] for r in rows[1:]} == {"PAID"}
    assert chunks == 5001  # one line at a time, never the whole file at once


def test_export_row_has_the_orders_figures(client, django_user_model):
    operator = staff(client, django_user_model, "siti", "export_orders")
    order = paid_order(customer_email="satu@example.com")
    Order.objects.filter(pk=order.pk).update(refunded_amount=9000)

    rows, _ = _csv(operator.get(reverse("admin:payments_order_export"), {"q": "satu@example.com"}))

    assert len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["order_id"] == order.pk and row["status"] == "PAID" and row["package"] == "ai-movie-course"
    assert (row["list_price"], row["discount"], row["amount"], row["refunded"]) == ("99000", "0", "99000", "9000")
    assert (row["payment_type"], row["email"], row["phone"]) == ("bank_transfer", "satu@example.com", "+6281234567890")
    assert row["paid_at"].endswith("+07:00")


def test_export_is_refused_without_its_permission(client, django_user_model):
    viewer = staff(client, django_user_model, "andi")
    paid_order()
    response = viewer.get(reverse("admin:payments_order_export"), follow=True)
    assert not getattr(response, "streaming", False)
    assert any("payments.export_orders" in m for m in messages_of(response))
    assert "Export CSV" not in viewer.get(reverse("admin:payments_order_changelist")).content.decode()
