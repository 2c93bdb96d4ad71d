import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from payments.models import AuditEntry, Package

pytestmark = pytest.mark.django_db


def run(*args):
    from io import StringIO

    out = StringIO()
    call_command("package_upsert", *args, stdout=out)
    return out.getvalue()


def snapshot():
    return list(Package.objects.order_by("id").values())


def test_creates_a_package_with_course_defaulting_to_its_id():
    output = run("kelas-lanjutan", "--name", "Kelas Lanjutan", "--price", "149000", "--capacity", "50")
    package = Package.objects.get(id="kelas-lanjutan")
    assert (package.name, package.price, package.capacity, package.course_code, package.is_active) == (
        "Kelas Lanjutan",
        149000,
        50,
        "kelas-lanjutan",
        True,
    )
    assert "package kelas-lanjutan created" in output
    assert AuditEntry.objects.filter(action="package_created", object_id="kelas-lanjutan").exists()


def test_updates_and_prints_only_what_changed():
    output = run("ai-movie-course", "--price", "129000", "--inactive")
    package = Package.objects.get(id="ai-movie-course")
    assert (package.price, package.is_active, package.name) == (129000, False, "Buat Film Pakai AI")
    assert "price: 99000 -> 129000" in output
    assert "is_active: True -> False" in output
    assert "name" not in output


def test_running_twice_changes_nothing_the_second_time():
    run("ai-movie-course", "--price", "99000")
    assert "unchanged" in run("ai-movie-course", "--price", "99000")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ai-movie-course", "--price", "0"], "price must be a positive"),
        (["ai-movie-course", "--price", "-5000"], "price must be a positive"),
        (["paket-baru", "--price", "1000"], "--name and --price are required"),
        (["paket-baru", "--name", "Paket"], "--name and --price are required"),
        (["Bukan Slug!", "--name", "X", "--price", "1000"], "id"),
        (["ai-movie-course", "--capacity", "5", "--unlimited"], "not both"),
        (["ai-movie-course", "--name", "   "], "name must not be empty"),
    ],
)
def test_bad_arguments_fail_clearly_and_change_nothing(args, message):
    before = snapshot()
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert snapshot() == before
    assert not AuditEntry.objects.exists()


def test_non_numeric_price_is_rejected_by_the_parser(capsys):
    before = snapshot()
    with pytest.raises(CommandError, match="invalid int value"):
        run("ai-movie-course", "--price", "99.000,00")
    assert snapshot() == before
