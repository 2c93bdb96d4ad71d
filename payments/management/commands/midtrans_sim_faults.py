"""Set the Midtrans simulator's faults while it runs (shared by every web process).

    manage.py midtrans_sim_faults --latency-ms 800 --error-rate 0.3
    manage.py midtrans_sim_faults --down          # 503 HTML for every API call
    manage.py midtrans_sim_faults --timeout --timeout-seconds 20
    manage.py midtrans_sim_faults --answer-status 429 --answer-next 2 --retry-after-seconds 1
    manage.py midtrans_sim_faults --core-errors-as-http   # 404/412/406 ... as HTTP statuses
    manage.py midtrans_sim_faults --reset
Without options it prints the current faults. The same is available as
GET/POST/DELETE /sandbox/midtrans/_faults.
"""

import argparse
import json

from django.core.management.base import BaseCommand, CommandError

from payments.simulator import faults


class Command(BaseCommand):
    help = "Show or change the Midtrans simulator's injected faults."

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true", help="clear every fault first")
        parser.add_argument("--latency-ms", type=int, help="added latency per API call")
        parser.add_argument("--error-rate", type=float, help="share (0..1) of API calls answered 500")
        parser.add_argument("--fail-next", type=int, help="the next N API calls answer 500")
        parser.add_argument("--timeout", action=argparse.BooleanOptionalAction, help="hold calls (--no-timeout)")
        parser.add_argument("--timeout-seconds", type=float, help="how long a held call waits (default 30)")
        parser.add_argument(
            "--down", action=argparse.BooleanOptionalAction, help="answer 503 HTML to every call (--no-down)"
        )
        parser.add_argument(
            "--answer-status",
            type=int,
            help="HTTP status for the next --answer-next calls: 404 (Spring-style JSON), 429, 301/302/303/307/308",
        )
        parser.add_argument("--answer-next", type=int, help="how many API calls answer --answer-status")
        parser.add_argument("--retry-after-seconds", type=int, help="Retry-After sent with a 429 (default 1)")
        parser.add_argument(
            "--core-errors-as-http",
            action=argparse.BooleanOptionalAction,
            help="Core API errors (and an unknown order's status) with their status_code as HTTP status",
        )

    def handle(self, *args, **options):
        changes = {name: options[name] for name in faults.FAULT_FIELDS if options.get(name) is not None}
        try:
            # Validated before anything is written; --reset and the changes are one transaction,
            # so a bad value leaves the faults exactly as they were.
            if changes or options["reset"]:
                fault = faults.fault_set(reset=options["reset"], **changes)
            else:
                fault = faults.fault_get()
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(faults.fault_as_dict(fault)))
