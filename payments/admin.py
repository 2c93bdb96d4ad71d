from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.template.loader import render_to_string

from common.admin import ReadOnlyModelAdmin, ReadOnlyTabularInline
from entitlements.models import Entitlement
from notifications.models import Notification
from payments.admin_forms import CatalogFormAdmin, DiscountCodeForm, PackageForm
from payments.admin_tools import OrderToolsMixin
from payments.models import AuditEntry, DiscountCode, Order, Package, PaymentAttempt, PaymentEvent, Refund
from payments.services.reconcile import order_sync_by_operator


@admin.register(Package)
class PackageAdmin(CatalogFormAdmin):
    form = PackageForm
    list_display = ["id", "name", "price", "currency", "is_active", "capacity", "course_code"]
    list_filter = ["is_active"]
    search_fields = ["id", "name"]

    def get_readonly_fields(self, request, obj=None):
        # The id is the catalog's public key; changing it would orphan orders.
        return ["id", "created_at", "updated_at"] if obj else ["created_at", "updated_at"]


@admin.register(DiscountCode)
class DiscountCodeAdmin(CatalogFormAdmin):
    form = DiscountCodeForm
    list_display = ["code", "kind", "value", "package", "times_used", "max_uses", "starts_at", "ends_at", "is_active"]
    list_filter = ["is_active", "kind", "package"]
    search_fields = ["code"]
    readonly_fields = ["times_used", "created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        # Codes are upserted by name: renaming one here would make a second code.
        return ["code", *self.readonly_fields] if obj else self.readonly_fields


class PaymentAttemptInline(ReadOnlyTabularInline):
    model = PaymentAttempt
    fields = [
        "midtrans_order_id",
        "status",
        "amount",
        "payment_type",
        "va_number",
        "fraud_status",
        "transaction_status",
        "refunded_amount",
        "updated_at",
    ]
    readonly_fields = fields


class ReviewQueueFilter(admin.SimpleListFilter):
    """The review queue: orders that need a person (late or double payment, amount mismatch,
    reversal, fraud challenge), until an operator resolves the case."""

    title = "review queue"
    parameter_name = "review"

    def lookups(self, request, model_admin):
        return [("open", "Needs review"), ("resolved", "Resolved cases")]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(needs_review=True)
        if self.value() == "resolved":
            return queryset.filter(needs_review=False, review_resolved_at__isnull=False)
        return queryset


@admin.register(Order)
class OrderAdmin(OrderToolsMixin, ReadOnlyModelAdmin):
    list_display = [
        "id",
        "status",
        "customer_email",
        "customer_phone",
        "package",
        "amount",
        "created_at",
        "paid_at",
        "needs_review",
        "review_case",
        "legacy_id",
    ]
    list_filter = [
        "status",
        "package",
        ReviewQueueFilter,
        "needs_review",
        "created_at",
        "paid_at",
        "legacy_source",
        "legacy_paid_notice",
    ]
    search_fields = [
        "id",
        "customer_email",
        "customer_phone",
        "customer_name",
        "attempts__midtrans_order_id",
        "legacy_id",
    ]
    date_hierarchy = "created_at"
    inlines = [PaymentAttemptInline]
    readonly_fields = ["events_table", "entitlement_table", "notifications_table", "audit_table", "refunds_table"]
    actions = ["sync_from_midtrans"]

    # The order stays read-only: this action asks Midtrans and applies what it says, through
    # the same service as the webhook, audited with the operator's username. It calls
    # Midtrans and can change payment state, so it needs its own permission, not "view".
    SYNC_PERMISSION = "payments.sync_order"
    SYNC_REFUSED = (
        "Sync from Midtrans needs the permission 'Can sync order from Midtrans' (payments.sync_order); "
        "ask an administrator to grant it. Nothing was synced or changed."
    )

    def has_sync_permission(self, request):
        return request.user.is_active and request.user.is_staff and request.user.has_perm(self.SYNC_PERMISSION)

    def changelist_view(self, request, extra_context=None):
        # Without the permission the action is not offered, and Django would silently ignore a
        # posted one; say clearly why nothing happened instead.
        if (
            request.method == "POST"
            and request.POST.get("action") == "sync_from_midtrans"
            and self.has_view_permission(request)
            and not self.has_sync_permission(request)
        ):
            self.message_user(request, self.SYNC_REFUSED, level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        return super().changelist_view(request, extra_context)

    @admin.action(description="Sync from Midtrans", permissions=["sync"])
    def sync_from_midtrans(self, request, queryset):
        username = request.user.get_username()
        limit = 50  # each order costs Midtrans calls; the request must stay short
        if queryset.count() > limit:
            self.message_user(request, f"Only the first {limit} selected orders were synced.", level=messages.WARNING)
        for order_id in queryset.values_list("id", flat=True)[:limit]:
            report = order_sync_by_operator(order_id=order_id, username=username)
            if report.errors:
                self.message_user(request, f"{order_id}: {'; '.join(report.errors)}", level=messages.ERROR)
            elif report.changes:
                self.message_user(request, f"{order_id}: {'; '.join(report.changes)}", level=messages.SUCCESS)
            else:
                self.message_user(request, f"{order_id}: already in line with Midtrans.", level=messages.INFO)

    @admin.display(description="Review")
    def review_case(self, obj):
        if not obj.needs_review:
            return ""
        reason = obj.review_reason.strip().splitlines()[-1] if obj.review_reason.strip() else "flagged"
        return reason if len(reason) <= 90 else reason[:89] + "…"

    @admin.display(description="Refunds")
    def refunds_table(self, obj):
        return render_to_string(
            "admin/payments/refunds_table.html",
            {"refunds": Refund.objects.filter(order_id=obj.id).select_related("attempt").order_by("requested_at")},
        )

    @admin.display(description="Payment events")
    def events_table(self, obj):
        events = PaymentEvent.objects.filter(attempt__order=obj).order_by("received_at")
        return render_to_string("admin/payments/events_table.html", {"events": events})

    @admin.display(description="Entitlement")
    def entitlement_table(self, obj):
        return render_to_string(
            "admin/payments/entitlement_table.html",
            {"entitlements": Entitlement.objects.filter(order_id=obj.id)},
        )

    @admin.display(description="Notifications")
    def notifications_table(self, obj):
        return render_to_string(
            "admin/payments/notifications_table.html",
            {"notifications": Notification.objects.filter(reference=obj.id).order_by("created_at")},
        )

    @admin.display(description="Audit trail")
    def audit_table(self, obj):
        return render_to_string(
            "admin/payments/audit_table.html",
            {"entries": AuditEntry.objects.filter(object_type="order", object_id=obj.id).order_by("created_at")},
        )


@admin.register(PaymentAttempt)
class PaymentAttemptAdmin(ReadOnlyModelAdmin):
    list_display = ["midtrans_order_id", "status", "amount", "payment_type", "transaction_status", "updated_at"]
    list_filter = ["status", "payment_type", "created_at"]
    search_fields = [
        "midtrans_order_id",
        "order__id",
        "order__customer_email",
        "order__customer_phone",
        "transaction_id",
    ]


@admin.register(PaymentEvent)
class PaymentEventAdmin(ReadOnlyModelAdmin):
    list_display = [
        "id",
        "midtrans_order_id",
        "source",
        "transaction_status",
        "status_code",
        "result",
        "received_at",
        "processed_at",
    ]
    list_filter = ["source", "result", "transaction_status", "received_at"]
    search_fields = [
        "midtrans_order_id",
        "attempt__order__id",
        "attempt__order__customer_email",
        "attempt__order__customer_phone",
    ]


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyModelAdmin):
    list_display = ["created_at", "actor", "action", "object_type", "object_id", "correlation_id"]
    list_filter = ["action", "object_type", "created_at"]
    search_fields = ["object_id", "actor", "correlation_id"]


@admin.register(Refund)
class RefundAdmin(ReadOnlyModelAdmin):
    list_display = ["refund_key", "order", "amount", "reason", "status", "offline", "operator", "requested_at"]
    list_filter = ["status", "reason", "offline", "requested_at"]
    search_fields = ["refund_key", "order__id", "offline_reference", "operator"]
