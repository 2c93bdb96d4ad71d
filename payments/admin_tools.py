"""The operator's tools on the admin's order pages: refund, resolve a review case, sync from
Midtrans, correct the contact, resend access, export CSV.

OrderAdmin (payments/admin.py) mixes these in. Each view checks its own permission (viewing
an order allows none of them), parses a form, calls one service and shows its message;
a refused action says why and changes nothing.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from payments.exports import orders_csv_response
from payments.models import Order, PaymentAttempt, Refund
from payments.services.reconcile import order_sync_by_operator
from payments.services.refunds import RefundRefused, refund_request
from payments.services.support import SupportRefused, access_resend, contact_correct, review_resolve
from payments.states import MONEY_HOLDING_ATTEMPT_STATUSES

# (permission, what it is called in the admin) per tool.
TOOL_PERMISSIONS = {
    "refund": ("payments.refund_order", "Can refund order"),
    "resolve": ("payments.resolve_review", "Can resolve order review case"),
    "sync": ("payments.sync_order", "Can sync order from Midtrans"),
    "correct": ("payments.correct_contact", "Can correct customer email or phone"),
    "resend": ("payments.resend_access", "Can resend access message"),
    "export": ("payments.export_orders", "Can export orders as CSV"),
}


def _attempt_label(attempt: PaymentAttempt) -> str:
    amount = f"{attempt.amount:,}".replace(",", ".")
    method = attempt.payment_type or "method unknown"
    return f"{attempt.midtrans_order_id} ({method}, Rp {amount}, {attempt.get_status_display().lower()})"


class RefundForm(forms.Form):
    attempt = forms.ChoiceField(label="Payment", help_text="The payment to refund (an order paid twice has two).")
    amount = forms.IntegerField(
        required=False, min_value=1, label="Amount (Rp)", help_text="Leave empty to refund all that remains."
    )
    reason = forms.ChoiceField(choices=Refund.Reason.choices)
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=1000)
    offline = forms.BooleanField(
        required=False,
        label="Offline refund",
        help_text="The money was sent back by hand (bank transfer, convenience store: Midtrans cannot refund those).",
    )
    reference = forms.CharField(required=False, max_length=200, help_text="The transfer's reference (offline only).")

    def __init__(self, *args, attempts: list[PaymentAttempt], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["attempt"].choices = [
            (
                a.midtrans_order_id,
                f"{a.midtrans_order_id} ({a.payment_type or 'method unknown'}, Rp {a.amount:,}".replace(",", ".")
                + f", {a.get_status_display().lower()})",
            )
            for a in attempts
        ]


class ResolveReviewForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=1000, label="How it was resolved")


class CorrectContactForm(forms.Form):
    email = forms.CharField(required=False, max_length=254, label="New email")
    phone = forms.CharField(required=False, max_length=32, label="New phone")


class OrderToolsMixin:
    """For OrderAdmin: the URLs, permission checks and views of the operator's tools."""

    change_form_template = "admin/payments/order/change_form.html"
    change_list_template = "admin/payments/order/change_list.html"

    def tool_allowed(self, request, tool: str) -> bool:
        user = request.user
        return user.is_active and user.is_staff and user.has_perm(TOOL_PERMISSIONS[tool][0])

    def _tool_refused(self, request, tool: str, order_id: str | None = None):
        permission, label = TOOL_PERMISSIONS[tool]
        self.message_user(
            request,
            f"This needs the permission '{label}' ({permission}); ask an administrator to grant it. "
            "Nothing was changed.",
            level=messages.ERROR,
        )
        return self._back(order_id)

    def _back(self, order_id: str | None):
        if order_id is None:
            return HttpResponseRedirect(reverse("admin:payments_order_changelist"))
        return HttpResponseRedirect(reverse("admin:payments_order_change", args=[order_id]))

    def get_urls(self):
        wrap = self.admin_site.admin_view
        mine = [
            path("export.csv", wrap(self.export_view), name="payments_order_export"),
            path("<path:object_id>/refund/", wrap(self.refund_view), name="payments_order_refund"),
            path("<path:object_id>/resolve-review/", wrap(self.resolve_view), name="payments_order_resolve"),
            path("<path:object_id>/sync/", wrap(require_POST(self.sync_view)), name="payments_order_sync"),
            path("<path:object_id>/correct-contact/", wrap(self.correct_view), name="payments_order_correct"),
            path("<path:object_id>/resend-access/", wrap(require_POST(self.resend_view)), name="payments_order_resend"),
        ]
        return mine + super().get_urls()

    def _order_for(self, request, object_id: str) -> Order:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(Order, pk=object_id)

    def _form_page(self, request, order: Order, *, title: str, form, submit: str, intro: str = ""):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": order,
            "title": title,
            "form": form,
            "submit": submit,
            "intro": intro,
        }
        return TemplateResponse(request, "admin/payments/order/tool_form.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = {tool: self.tool_allowed(request, tool) for tool in ("refund", "resolve", "sync", "correct", "resend")}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "tools": extra})

    def changelist_view(self, request, extra_context=None):
        extra = {"can_export": self.tool_allowed(request, "export")}
        return super().changelist_view(request, {**(extra_context or {}), **extra})

    # --- views ----------------------------------------------------------------------------------

    def refund_view(self, request, object_id):
        order = self._order_for(request, object_id)
        if not self.tool_allowed(request, "refund"):
            return self._tool_refused(request, "refund", order.pk)
        attempts = [a for a in order.attempts.order_by("number") if a.status in MONEY_HOLDING_ATTEMPT_STATUSES]
        form = RefundForm(request.POST if request.method == "POST" else None, attempts=attempts)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                outcome = refund_request(
                    order_id=order.pk,
                    attempt=data["attempt"],
                    amount=data["amount"],
                    reason=data["reason"],
                    note=data["note"],
                    offline=data["offline"],
                    reference=data["reference"],
                    operator=request.user.get_username(),
                )
            except RefundRefused as exc:
                form.add_error(None, f"{exc} Nothing was changed.")
            else:
                level = {
                    Refund.Status.CONFIRMED: messages.SUCCESS,
                    Refund.Status.FAILED: messages.ERROR,
                }.get(outcome.refund.status, messages.WARNING if outcome.refund.last_error else messages.INFO)
                self.message_user(request, outcome.message, level=level)
                return self._back(order.pk)
        if not attempts and request.method == "GET":
            form.add_error(None, f"Order {order.pk} has no payment to refund (order {order.get_status_display()}).")
        return self._form_page(request, order, title=f"Refund order {order.pk}", form=form, submit="Refund")

    def resolve_view(self, request, object_id):
        order = self._order_for(request, object_id)
        if not self.tool_allowed(request, "resolve"):
            return self._tool_refused(request, "resolve", order.pk)
        form = ResolveReviewForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                review_resolve(order_id=order.pk, operator=request.user.get_username(), note=form.cleaned_data["note"])
            except SupportRefused as exc:
                form.add_error(None, f"{exc} Nothing was changed.")
            else:
                self.message_user(request, f"Review case of {order.pk} resolved.", level=messages.SUCCESS)
                return self._back(order.pk)
        return self._form_page(
            request,
            order,
            title=f"Resolve the review case of {order.pk}",
            form=form,
            submit="Resolve",
            intro=order.review_reason or "This order has no open review case.",
        )

    def sync_view(self, request, object_id):
        order = self._order_for(request, object_id)
        if not self.tool_allowed(request, "sync"):
            return self._tool_refused(request, "sync", order.pk)
        report = order_sync_by_operator(order_id=order.pk, username=request.user.get_username())
        if report.errors:
            self.message_user(request, "; ".join(report.errors), level=messages.ERROR)
        elif report.changes:
            self.message_user(request, "; ".join(report.changes), level=messages.SUCCESS)
        else:
            self.message_user(request, f"{order.pk}: already in line with Midtrans.", level=messages.INFO)
        return self._back(order.pk)

    def correct_view(self, request, object_id):
        order = self._order_for(request, object_id)
        if not self.tool_allowed(request, "correct"):
            return self._tool_refused(request, "correct", order.pk)
        form = CorrectContactForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                contact_correct(
                    order_id=order.pk,
                    operator=request.user.get_username(),
                    email=form.cleaned_data["email"],
                    phone=form.cleaned_data["phone"],
                )
            except SupportRefused as exc:
                form.add_error(None, f"{exc} Nothing was changed.")
            else:
                self.message_user(request, f"Contact of {order.pk} corrected.", level=messages.SUCCESS)
                return self._back(order.pk)
        return self._form_page(
            request,
            order,
            title=f"Correct the contact of {order.pk}",
            form=form,
            submit="Save correction",
            intro=f"Now: {order.customer_email}, {order.customer_phone}. Leave a field empty to keep it.",
        )

    def resend_view(self, request, object_id):
        order = self._order_for(request, object_id)
        if not self.tool_allowed(request, "resend"):
            return self._tool_refused(request, "resend", order.pk)
        try:
            access_resend(order_id=order.pk, operator=request.user.get_username())
        except SupportRefused as exc:
            self.message_user(request, f"{exc} Nothing was sent.", level=messages.ERROR)
        else:
            self.message_user(request, f"Access message for {order.pk} queued again.", level=messages.SUCCESS)
        return self._back(order.pk)

    def export_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        if not self.tool_allowed(request, "export"):
            return self._tool_refused(request, "export")
        # The changelist's own filtering (filters, search, date hierarchy) of this request's query.
        try:
            queryset = self.get_changelist_instance(request).get_queryset(request)
        except IncorrectLookupParameters:
            self.message_user(request, "The list's filters in that address are not valid.", level=messages.ERROR)
            return self._back(None)
        return orders_csv_response(queryset=queryset, actor=request.user.get_username())
