"""manage.py backfill_entitlements [--dry-run]

Grants course access for every paid order without it and revokes it for refunded or
charged-back orders (payments.services.backfill); prints each change. Safe to run any time.
"""

from django.core.management.base import BaseCommand

from payments.services.backfill import entitlements_backfill


class Command(BaseCommand):
    help = "Grant access for paid orders without it; revoke it for refunded or charged-back orders."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")

    def handle(self, *args, **options):
        changes = entitlements_backfill(dry_run=options["dry_run"])
        for line in changes:
            self.stdout.write(("would " if options["dry_run"] else "") + line)
        self.stdout.write(f"{len(changes)} change(s)" + (" (dry run: nothing changed)" if options["dry_run"] else ""))
