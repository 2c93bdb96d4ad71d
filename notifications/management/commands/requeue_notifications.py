"""Requeue dead letters from the command line (the same service as the admin's "Requeue").

manage.py requeue_notifications --dead                       every dead letter
manage.py requeue_notifications --dead --since 2026-11-22    dead letters that died since then
manage.py requeue_notifications --id 41 --id 42              these (they must be dead)
"""

import getpass

from django.core.management.base import BaseCommand, CommandError

from common.moments import moment_argument
from notifications.models import Notification
from notifications.services import NotificationInputError, notification_requeue


class Command(BaseCommand):
    help = "Requeue dead notifications (dead -> pending, attempts reset); audited in the logs."

    def add_arguments(self, parser):
        parser.add_argument("--dead", action="store_true", help="Requeue every dead letter (see --since).")
        parser.add_argument("--id", type=int, action="append", dest="ids", default=[], help="A notification id.")
        parser.add_argument(
            "--since", type=moment_argument, help="Only messages that became dead at or after this ISO date/date-time."
        )

    def handle(self, *args, dead, ids, since, **options):
        if not dead and not ids:
            raise CommandError("Say what to requeue: --dead (all dead letters) and/or --id N.")
        queryset = Notification.objects.none()
        if ids:
            found = dict(Notification.objects.filter(pk__in=ids).values_list("pk", "status"))
            missing = sorted(set(ids) - set(found))
            if missing:
                raise CommandError(f"No notification with id {', '.join(map(str, missing))}; nothing was requeued.")
            alive = sorted(pk for pk, status in found.items() if status != Notification.Status.DEAD)
            if alive:
                raise CommandError(
                    f"Notification {', '.join(map(str, alive))} is not dead (only dead letters can be requeued; "
                    "use the admin's Resend to send a sent message again); nothing was requeued."
                )
            queryset |= Notification.objects.filter(pk__in=ids)
        if dead:
            queryset |= Notification.objects.filter(status=Notification.Status.DEAD)
        if since:
            queryset = queryset.filter(updated_at__gte=since)

        actor = f"cli:{getpass.getuser()}"
        requeued = []
        for pk in queryset.order_by("pk").values_list("pk", flat=True).distinct():
            try:
                notification_requeue(notification_id=pk, actor=actor)
            except NotificationInputError as exc:  # requeued or resent meanwhile by someone else
                self.stderr.write(str(exc))
                continue
            requeued.append(pk)
        listed = f": {', '.join(map(str, requeued))}" if requeued else ""
        self.stdout.write(f"Requeued {len(requeued)} notification(s){listed}.")
