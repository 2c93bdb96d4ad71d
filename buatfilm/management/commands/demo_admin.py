from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "admin"  # noqa: S105 - demo only: refused unless DEBUG and SQLite


class Command(BaseCommand):
    help = "Create the demo operator account admin/admin (only in the local SQLite demo)."

    def handle(self, *args, **options):
        if not (settings.DEBUG and settings.DATABASE_IS_SQLITE):
            raise CommandError("demo_admin only runs in the local demo (DEBUG=true on SQLite).")
        User = get_user_model()
        if User.objects.filter(username=DEMO_USERNAME).exists():
            self.stdout.write(f"demo operator '{DEMO_USERNAME}' exists")
            return
        User.objects.create_superuser(DEMO_USERNAME, "admin@buatfilm.local", DEMO_PASSWORD)
        self.stdout.write(f"demo operator created: {DEMO_USERNAME} / {DEMO_PASSWORD} at /admin/")
