"""The admin's catalog forms validate and save through the same services as the commands
(package_upsert, discount_upsert): what `discount_upsert` refuses, the admin refuses too,
with the same message, and the change is audited with the operator's username."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import transaction

from payments.models import DiscountCode, Package
from payments.services.catalog import CatalogError, package_upsert
from payments.services.discounts import DiscountError, discount_upsert


class _DryRun(Exception):
    """Raised to roll back a service call made only to validate the form."""


class ServiceForm(forms.ModelForm):
    """A ModelForm whose clean() asks the service (then rolls back) and whose save goes through it."""

    service_errors = (CatalogError, DiscountError)
    actor = "admin"

    def service_call(self, *, actor: str):
        raise NotImplementedError

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            with transaction.atomic():
                self.service_call(actor=self.actor)
                raise _DryRun
        except _DryRun:
            pass
        except self.service_errors as exc:
            message = str(exc)
            raise ValidationError(message[:1].upper() + message[1:]) from None
        return data


class PackageForm(ServiceForm):
    price = forms.IntegerField(
        min_value=1,
        help_text="Integer rupiah, at least Rp 1.",
        error_messages={"min_value": "The price must be at least Rp 1 (a whole number of rupiah)."},
    )

    class Meta:
        model = Package
        fields = ["id", "name", "price", "is_active", "capacity", "course_code"]

    def clean(self):
        # Empty course code = the package id (as the command does), set before the model's checks.
        if not self.cleaned_data.get("course_code"):
            self.cleaned_data["course_code"] = self.cleaned_data.get("id") or self.instance.pk or ""
        return super().clean()

    def service_call(self, *, actor: str):
        data = self.cleaned_data
        return package_upsert(
            package_id=self.instance.pk if self.instance.pk and "id" not in data else data["id"],
            name=data["name"],
            price=data["price"],
            capacity=data.get("capacity"),
            clear_capacity=data.get("capacity") is None,
            course_code=data.get("course_code") or None,
            is_active=data.get("is_active", False),
            actor=actor,
        ).package


class DiscountCodeForm(ServiceForm):
    value = forms.IntegerField(min_value=1, help_text="Percent (1-99) or integer rupiah.")

    class Meta:
        model = DiscountCode
        fields = ["code", "kind", "value", "package", "starts_at", "ends_at", "max_uses", "is_active"]

    def clean_code(self):
        # Stored upper-case, as the service normalises it (the model's constraint insists).
        return DiscountCode.code_normalize(self.cleaned_data.get("code"))

    def service_call(self, *, actor: str):
        data = self.cleaned_data
        percent = data["value"] if data["kind"] == DiscountCode.Kind.PERCENT else None
        return discount_upsert(
            code=data.get("code", self.instance.code),
            percent=percent,
            amount=None if percent is not None else data["value"],
            package_id=data["package"].pk if data.get("package") else None,
            max_uses=data.get("max_uses"),
            starts_at=data.get("starts_at"),
            ends_at=data.get("ends_at"),
            is_active=data.get("is_active", False),
            actor=actor,
        ).discount


class CatalogFormAdmin(admin.ModelAdmin):
    """Saves through the form's service, audited as the operator."""

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        form.actor = request.user.get_username()
        return form

    def save_model(self, request, obj, form, change):
        saved = form.service_call(actor=request.user.get_username())
        # The admin goes on with `obj` (history entry, redirect): give it the stored row's key.
        obj.pk = saved.pk
