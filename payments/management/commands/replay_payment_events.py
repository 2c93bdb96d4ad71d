"""manage.py replay_payment_events [--failed] [--id N]

Re-applies recorded Midtrans events through the same service as the webhook (confirmed
with the status API when MIDTRANS_CONFIRM_WITH_STATUS_API is on). Without options: every
event still unprocessed. --failed: every event whose processing failed. --id N: that one
event, even if it was processed (recorded as a fresh event; effects stay exactly-once).
"""

from django.core.management.base import BaseCommand, CommandError

from payments.models import EventResult, PaymentEvent
from payments.services.events import EventDeferred, EventProcessingFailed, event_process


class Command(BaseCommand):
    help = "Re-apply recorded Midtrans payment events."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--failed", action="store_true", help="replay every event whose processing failed")
        which.add_argument("--id", type=int, metavar="N", help="replay the event with this id (forced)")

    def handle(self, *args, **options):
        if options["id"] is not None:
            if not PaymentEvent.objects.filter(pk=options["id"]).exists():
                raise CommandError(f"No payment event with id {options['id']}.")
            ids, force = [options["id"]], True
        else:
            result = EventResult.FAILED if options["failed"] else EventResult.RECEIVED
            ids = list(PaymentEvent.objects.filter(result=result).order_by("received_at").values_list("pk", flat=True))
            force = False
        failures = 0
        for event_id in ids:
            try:
                outcome = event_process(event_id=event_id, actor="replay-command", force=force)
            except (EventDeferred, EventProcessingFailed) as exc:
                failures += 1
                self.stderr.write(f"event {event_id}: not applied: {type(exc).__name__}: {exc}")
                continue
            self.stdout.write(f"event {event_id}: {outcome.describe()}")
        self.stdout.write(f"replayed={len(ids)} failed={failures}")
        if failures:
            raise CommandError(f"{failures} event(s) could not be applied; see above.")
