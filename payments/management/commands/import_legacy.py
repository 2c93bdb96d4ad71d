"""manage.py import_legacy --sqlite PATH | --postgres URL [--table payment_orders | --schema plan]
[--dry-run] [--allow-partial]

Imports the old Express app's orders (payments.services.legacy_import): prints counts by
source and status and every refused row with its reason; exits non-zero when a row was
refused, and then writes nothing, unless --allow-partial. Safe to run again.
"""

import gc

from django.core.management.base import BaseCommand, CommandError

from payments.services.legacy_import import (
    SOURCE_PAYMENT_ORDERS,
    SOURCE_PLAN,
    LegacySourceError,
    legacy_import,
    reader_open,
)


class Command(BaseCommand):
    help = "Import orders from the old systems (SQLite orders.db, PostgreSQL payment_orders or the plan schema)."

    def add_arguments(self, parser):
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--sqlite", metavar="PATH", help="the old app's SQLite file (opened read-only)")
        source.add_argument("--postgres", metavar="URL", help="the old PostgreSQL database (read-only session)")
        layout = parser.add_mutually_exclusive_group()
        layout.add_argument(
            "--table", choices=[SOURCE_PAYMENT_ORDERS], help="with --postgres: the interim payment_orders table"
        )
        layout.add_argument("--schema", choices=[SOURCE_PLAN], help="with --postgres: the upgrade plan's schema")
        parser.add_argument("--dry-run", action="store_true", help="check everything, write nothing, print the report")
        parser.add_argument(
            "--allow-partial", action="store_true", help="import the rows that fit even when others are refused"
        )
        parser.add_argument("--batch-size", type=int, metavar="N", help="orders per transaction")

    def handle(self, *args, **options):
        if options["sqlite"] and (options["table"] or options["schema"]):
            raise CommandError("--table and --schema go with --postgres, not --sqlite.")
        if options["batch_size"] is not None and options["batch_size"] <= 0:
            raise CommandError("--batch-size must be greater than zero.")
        layout = options["schema"] or options["table"] or SOURCE_PAYMENT_ORDERS

        def reader_factory():
            return reader_open(sqlite_path=options["sqlite"], postgres_url=options["postgres"], layout=layout)

        # The import makes millions of short-lived objects; without this every full collection
        # would also walk all of Django's long-lived ones, a fifth of the import's CPU.
        gc.freeze()
        try:
            report = legacy_import(
                reader_factory=reader_factory,
                dry_run=options["dry_run"],
                allow_partial=options["allow_partial"],
                batch_size=options["batch_size"],
            )
        except LegacySourceError as exc:
            raise CommandError(f"Cannot import: {exc}. Nothing was written.") from None
        for line in report.lines():
            self.stdout.write(line)
        if not report.written:
            self.stdout.write("dry run: nothing was written" if options["dry_run"] else "nothing was written")
        if report.refused and not options["allow_partial"]:
            raise CommandError(
                f"{len(report.refused)} row(s) refused (listed above). Fix them in the old data and run again, "
                "or import the rest with --allow-partial."
            )
