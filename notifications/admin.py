from django.contrib import admin

from buatfilm.admin import ReadOnlyModelAdmin, ReadOnlyTabularInline
from notifications.models import Notification, NotificationAttempt


class NotificationAttemptInline(ReadOnlyTabularInline):
    model = NotificationAttempt
    fields = ["number", "outcome", "error", "provider_message_id", "worker", "started_at", "finished_at"]
    readonly_fields = fields
    show_change_link = False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyModelAdmin):
    list_display = [
        "id",
        "channel",
        "template",
        "recipient",
        "status",
        "attempts",
        "next_attempt_at",
        "reference",
        "created_at",
    ]
    list_filter = ["status", "channel", "template", "created_at"]
    search_fields = ["reference", "recipient", "dedupe_key"]
    inlines = [NotificationAttemptInline]


@admin.register(NotificationAttempt)
class NotificationAttemptAdmin(ReadOnlyModelAdmin):
    list_display = ["notification", "number", "outcome", "started_at", "finished_at"]
    list_filter = ["outcome"]
    search_fields = ["notification__reference", "notification__recipient"]
