from django.contrib import admin, messages

from common.admin import ReadOnlyModelAdmin, ReadOnlyTabularInline
from notifications.models import Notification, NotificationAttempt
from notifications.services import NotificationInputError, notification_requeue, notification_resend


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
    actions = ["requeue", "resend"]

    # Messages are never edited, but an operator allowed to "change" notifications may
    # requeue or resend them; both go through a service and are audited.
    def has_operate_permission(self, request):
        return request.user.has_perm("notifications.change_notification")

    def _run(self, request, queryset, *, service, verb: str):
        done, refused = [], []
        for pk in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                result = service(notification_id=pk, actor=request.user.get_username())
            except NotificationInputError as exc:
                refused.append(str(exc))
                continue
            # The audit record on the row's admin history (Django's LogEntry): who, when, what.
            self.log_change(request, result, f"{verb} notification {pk} (new id {result.pk})")
            done.append(pk)
        if done:
            self.message_user(request, f"{verb}: {', '.join(map(str, done))}.", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)

    @admin.action(description="Requeue (dead letter -> pending, attempts reset)", permissions=["operate"])
    def requeue(self, request, queryset):
        self._run(request, queryset, service=notification_requeue, verb="Requeued")

    @admin.action(description="Resend (a new message with the same content)", permissions=["operate"])
    def resend(self, request, queryset):
        self._run(request, queryset, service=notification_resend, verb="Resent")


@admin.register(NotificationAttempt)
class NotificationAttemptAdmin(ReadOnlyModelAdmin):
    list_display = ["notification", "number", "outcome", "started_at", "finished_at"]
    list_filter = ["outcome"]
    search_fields = ["notification__reference", "notification__recipient"]
