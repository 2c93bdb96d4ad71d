"""manage.py refund_order ORDER_ID [--amount N] --reason CODE [--note TEXT] [--offline --reference TEXT]

Refunds one payment of an order through Midtrans, or records an offline refund (money sent
back by hand, for methods Midtrans cannot refund). The same service as the admin's button.
Run it again after a timeout: it retries the same refund with the same key, never twice.
"""

import getpass

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from payments.models import Refund
from payments.services.refunds import RefundRefused, refund_request

REFUND_PERMISSION = "payments.refund_order"


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise CommandError(f"--amount {value!r} is not a whole number of rupiah.") from None
    if number <= 0:
        raise CommandError(f"--amount must be above 0, not {number}.")
    return number


class Command(BaseCommand):
    help = "Refund an order (through Midtrans, or --offline with --reference), audited."

    def add_arguments(self, parser):
        parser.add_argument("order_id")
        parser.add_argument("--amount", help="integer rupiah; default: all that remains refundable")
        parser.add_argument("--reason", required=True, help=f"one of: {', '.join(Refund.Reason.values)}")
        parser.add_argument("--note", default="", help="why, in the operator's words")
        parser.add_argument("--offline", action="store_true", help="the money was sent back by hand")
        parser.add_argument("--reference", default="", help="the transfer's reference (with --offline)")
        parser.add_argument("--attempt", metavar="MIDTRANS_ORDER_ID", help="which payment, if the order was paid twice")
        parser.add_argument(
            "--operator",
            metavar="USERNAME",
            help="the operator to audit it as (needs payments.refund_order); default: the shell user",
        )

    def handle(self, *args, **options):
        amount = _positive_int(options["amount"]) if options["amount"] is not None else None
        if options["reason"] not in Refund.Reason.values:
            raise CommandError(
                f"--reason {options['reason']!r} is not a refund reason; use one of: {', '.join(Refund.Reason.values)}."
            )
        if options["offline"] and not options["reference"].strip():
            raise CommandError("--offline needs --reference (the reference of the transfer you made).")
        if options["reference"] and not options["offline"]:
            raise CommandError("--reference goes with --offline only.")
        operator = options["operator"]
        if operator:
            user = get_user_model().objects.filter(username=operator, is_active=True).first()
            if user is None:
                raise CommandError(f"No active user {operator!r}.")
            if not user.has_perm(REFUND_PERMISSION):
                raise CommandError(
                    f"User {operator!r} lacks the permission 'Can refund order' ({REFUND_PERMISSION}); nothing changed."
                )
        else:
            operator = f"shell:{getpass.getuser()}"
        try:
            outcome = refund_request(
                order_id=options["order_id"],
                amount=amount,
                reason=options["reason"],
                note=options["note"],
                operator=operator,
                offline=options["offline"],
                reference=options["reference"],
                attempt=options["attempt"],
            )
        except RefundRefused as exc:
            raise CommandError(f"{exc} Nothing was changed.") from exc
        self.stdout.write(outcome.message)
        if outcome.refund.status == Refund.Status.FAILED:
            raise CommandError("The refund failed.")
        if outcome.refund.status == Refund.Status.REQUESTED and outcome.refund.last_error:
            raise CommandError("Midtrans did not answer: run the same command again to retry it.")
