from django.db import migrations

LAUNCH_PACKAGE = {
    "id": "ai-movie-course",
    "name": "Buat Film Pakai AI",
    "price": 99000,
    "course_code": "ai-movie-course",
}


def create_launch_package(apps, schema_editor):
    Package = apps.get_model("payments", "Package")
    Package.objects.get_or_create(
        id=LAUNCH_PACKAGE["id"],
        defaults={k: v for k, v in LAUNCH_PACKAGE.items() if k != "id"},
    )


def remove_launch_package(apps, schema_editor):
    Package = apps.get_model("payments", "Package")
    Package.objects.filter(id=LAUNCH_PACKAGE["id"], orders__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("payments", "0001_initial")]

    operations = [migrations.RunPython(create_launch_package, remove_launch_package)]
