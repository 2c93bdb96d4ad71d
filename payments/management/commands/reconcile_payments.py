"""manage.py reconcile_payments [--order ID] [--since ISO] [--dry-run]

Asks Midtrans about stale attempts, orders past their window, unprocessed or failed
events and orphans, applies what it says, and prints every change. The same sweep
Celery beat runs every RECONCILE_INTERVAL_SECONDS.
"""

from django.core.management.base import BaseCommand, CommandError

from common.moments import moment_argument
from payments.models import Order
from payments.services.reconcile import reconcile_run


class Command(BaseCommand):
    help = "Reconcile orders with Midtrans: read statuses, expire what is past its window, apply, print changes."

    def add_arguments(self, parser):
        parser.add_argument("--order", metavar="ID", help="only this order (all its attempts, paid ones included)")
        parser.add_argument(
            "--since", metavar="ISO", type=moment_argument, help="only orders, attempts and events created since then"
        )
        parser.add_argument("--dry-run", action="store_true", help="read from Midtrans, change nothing, print")

    def handle(self, *args, **options):
        since = options["since"]
        order_id = options["order"]
        if order_id and not Order.objects.filter(pk=order_id).exists():
            raise CommandError(f"No order {order_id!r}.")
        report = reconcile_run(actor="reconcile-command", since=since, order_id=order_id, dry_run=options["dry_run"])
        for line in report.changes:
            self.stdout.write(line)
        for line in report.errors:
            self.stderr.write(f"error: {line}")
        self.stdout.write(report.summary())
        if report.stopped_early:
            raise CommandError("Midtrans was unavailable; run again later.")
