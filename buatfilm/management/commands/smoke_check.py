from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError

from buatfilm.smoke import smoke_check


class Command(BaseCommand):
    help = (
        "After a deploy: ask URL (e.g. https://shop.example) for readiness, health, packages on sale, "
        "that an unsigned webhook is refused and /metrics is not public. Exits 1 on any failure."
    )

    def add_arguments(self, parser):
        parser.add_argument("url", help="the deployment's base URL, e.g. https://shop.example")

    def handle(self, *args, url: str, **options):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CommandError(f"{url!r} is not an http(s) URL; give the base URL, e.g. https://shop.example")
        results = smoke_check(base_url=url)
        for result in results:
            line = f"{'ok  ' if result.ok else 'FAIL'} {result.name}: {result.detail}"
            self.stdout.write(self.style.SUCCESS(line) if result.ok else self.style.ERROR(line))
        failed = [r.name for r in results if not r.ok]
        if failed:
            raise CommandError(f"smoke check failed: {', '.join(failed)}")
        self.stdout.write(self.style.SUCCESS(f"{url}: all {len(results)} checks passed"))
