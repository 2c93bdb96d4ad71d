from django.contrib import admin

from common.admin import ReadOnlyModelAdmin
from entitlements.models import Entitlement


@admin.register(Entitlement)
class EntitlementAdmin(ReadOnlyModelAdmin):
    list_display = ["email", "course_code", "status", "order_id", "granted_at", "revoked_at"]
    list_filter = ["status", "course_code", "granted_at"]
    search_fields = ["email", "order_id"]
