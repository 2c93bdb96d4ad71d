"""manage.py backfill_notifications --message payment_received [--since ISO] [--only-unsent]
[--per-minute N] [--dry-run]

Sends the "pembayaran diterima" message (with the course link) to imported customers, on
purpose, at most once per order, at most --per-minute orders a minute
(payments.services.backfill).
"""

from django.core.management.base import BaseCommand, CommandError

from common.moments import moment_argument
from payments.services.backfill import paid_notices_backfill

MESSAGES = ["payment_received"]


class Command(BaseCommand):
    help = "Send the payment-received message to imported customers, once per order, rate-limited."

    def add_arguments(self, parser):
        parser.add_argument("--message", required=True, help=f"the message to send: {', '.join(MESSAGES)}")
        parser.add_argument("--since", metavar="ISO", type=moment_argument, help="only orders paid since then")
        parser.add_argument(
            "--only-unsent", action="store_true", help="only orders the old system recorded as not told"
        )
        parser.add_argument("--per-minute", type=int, metavar="N", help="orders per minute (default: the setting)")
        parser.add_argument("--dry-run", action="store_true", help="print who would be sent it, send nothing")

    def handle(self, *args, **options):
        if options["message"] not in MESSAGES:
            raise CommandError(f"--message {options['message']!r} is not one of: {', '.join(MESSAGES)}.")
        if options["per_minute"] is not None and options["per_minute"] <= 0:
            raise CommandError("--per-minute must be greater than zero.")
        since = options["since"]
        report = paid_notices_backfill(
            since=since,
            only_unsent=options["only_unsent"],
            dry_run=options["dry_run"],
            per_minute=options["per_minute"],
        )
        for line in report.lines():
            self.stdout.write(line)
