from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from payments.services.catalog import CatalogError, package_upsert


class Command(BaseCommand):
    help = "Create or update a package in the catalog and print what changed."

    def add_arguments(self, parser):
        parser.add_argument("package_id", help="Slug id, e.g. ai-movie-course.")
        parser.add_argument("--name")
        parser.add_argument("--price", type=int, help="Whole rupiah, e.g. 99000.")
        parser.add_argument("--capacity", type=int, help="Seats for sale; 0 closes sales.")
        parser.add_argument("--unlimited", action="store_true", help="Remove the capacity limit.")
        parser.add_argument("--course", help="Course code the package grants (defaults to the package id).")
        state = parser.add_mutually_exclusive_group()
        state.add_argument("--inactive", action="store_true", help="Stop selling it.")
        state.add_argument("--active", action="store_true", help="Sell it again.")

    def handle(self, *args, package_id, name, price, capacity, unlimited, course, inactive, active, **options):
        if unlimited and capacity is not None:
            raise CommandError("use either --capacity N or --unlimited, not both.")
        try:
            result = package_upsert(
                package_id=package_id,
                name=name,
                price=price,
                capacity=capacity,
                clear_capacity=unlimited,
                course_code=course,
                is_active=False if inactive else (True if active else None),
                actor="manage.py package_upsert",
            )
        except CatalogError as exc:
            raise CommandError(str(exc)) from exc
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc

        verb = "created" if result.created else ("updated" if result.changes else "unchanged")
        self.stdout.write(f"package {result.package.id} {verb}")
        for field, (old, new) in result.changes.items():
            self.stdout.write(f"  {field}: {old!r} -> {new!r}")
