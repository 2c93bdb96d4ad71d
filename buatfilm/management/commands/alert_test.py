from django.core.management.base import BaseCommand, CommandError

from buatfilm.alerting import alert_test_send


class Command(BaseCommand):
    help = "Send a test alert through every configured channel (ALERT_EMAILS, ALERTMANAGER_URL) and report each."

    def handle(self, *args, **options):
        results = alert_test_send()
        if not results:
            raise CommandError(
                "No alert channel is configured: set ALERT_EMAILS (comma-separated addresses) and/or "
                "ALERTMANAGER_URL (e.g. http://alertmanager:9093)."
            )
        for result in results:
            line = f"{result.channel}: {'ok' if result.ok else 'FAILED'} ({result.detail})"
            self.stdout.write(self.style.SUCCESS(line) if result.ok else self.style.ERROR(line))
        failed = [r.channel for r in results if not r.ok]
        if failed:
            raise CommandError(f"The test alert did not go through: {', '.join(failed)}.")
