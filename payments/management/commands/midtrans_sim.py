"""`stripe trigger` for the Midtrans simulator.

    manage.py midtrans_sim ORDER_ID settlement|pending|deny|cancel|expire|refund|partial_refund|
                           chargeback|challenge|reversal [--duplicate N] [--out-of-order] [--amount X]

ORDER_ID is the Midtrans order id of a simulated transaction (e.g. BF-20261122-7K3QX9AB-1).
The notifications are sent from this process right away; retries after a non-2xx answer,
and a refund's second notification (when the bank confirms it, 60 s divided by
MIDTRANS_SIMULATOR_TIME_COMPRESSION later), are left to the web process's sender (or
waited for here with --wait SECONDS).
"""

from django.core.management.base import BaseCommand, CommandError

from payments.simulator import services, triggers
from payments.simulator.dispatcher import SEND_TIMEOUT_SECONDS, deliveries_await, deliveries_drain
from payments.simulator.models import SimNotification, SimRefundConfirmation


class Command(BaseCommand):
    help = "Apply an event to a simulated Midtrans transaction and send its signed notification(s)."

    def add_arguments(self, parser):
        parser.add_argument("order_id", help="Midtrans order id of a simulated transaction")
        parser.add_argument("event", choices=triggers.EVENTS)
        parser.add_argument("--duplicate", type=int, default=1, metavar="N", help="send N copies (default 1)")
        parser.add_argument(
            "--out-of-order", action="store_true", help="deliver the event before the notification that precedes it"
        )
        parser.add_argument(
            "--amount", type=int, metavar="X", help="tampered gross_amount (rupiah) in the notification, validly signed"
        )
        parser.add_argument("--refund-amount", type=int, metavar="R", help="rupiah refunded by partial_refund")
        parser.add_argument("--bad-signature", action="store_true", help="sign with a wrong server key")
        parser.add_argument(
            "--method",
            choices=list(services.METHODS),
            default="bca_va",
            help="method to choose when none was chosen yet (default bca_va)",
        )
        parser.add_argument("--no-send", action="store_true", help="only queue; the web process sends them")
        parser.add_argument(
            "--wait", type=float, default=0.0, metavar="SECONDS", help="keep sending retries for up to SECONDS"
        )

    def handle(self, *args, **options):
        try:
            rows = triggers.trigger_event(
                order_id=options["order_id"],
                event=options["event"],
                duplicate=options["duplicate"],
                out_of_order=options["out_of_order"],
                amount=options["amount"],
                refund_amount=options["refund_amount"],
                bad_signature=options["bad_signature"],
                method=options["method"],
            )
        except services.SimStateError as exc:
            raise CommandError(str(exc)) from exc
        for row in rows:
            p = row.payload
            self.stdout.write(
                f"queued #{row.id}: {p['order_id']} {p['transaction_status']} status_code={p['status_code']} "
                f"gross_amount={p['gross_amount']}"
            )
        if options["no_send"]:
            return
        ids = [row.id for row in rows]
        sent = deliveries_drain(only_ids=ids, wait_seconds=options["wait"])
        # A refund's bank confirmation (the second notification) may have fallen due meanwhile.
        ids += [row.id for row in sent if row.id not in ids]
        # The web process's sender may have taken some rows meanwhile: report what became of each.
        for row in deliveries_await(ids=ids, timeout=SEND_TIMEOUT_SECONDS + 5):
            outcome = f"HTTP {row.last_http_status}" if row.last_http_status else (row.last_error or "not sent yet")
            status = row.payload["transaction_status"]
            line = f"#{row.id} {status}: {row.status} after {row.attempts} attempt(s), {outcome}"
            if row.status == SimNotification.Status.PENDING:
                line += f"; next try at {row.due_at:%H:%M:%S} (sent by the web process)"
            self.stdout.write(line)
        for confirmation in SimRefundConfirmation.objects.filter(
            transaction__order_id=options["order_id"], applied_at__isnull=True
        ):
            self.stdout.write(
                f"refund {confirmation.refund_chargeback_id}: the bank confirms at {confirmation.due_at:%H:%M:%S} "
                "(sent by the web process, or wait for it here with --wait)"
            )
