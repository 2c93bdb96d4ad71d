"""Backups with django-dbbackup, as an operator runs them: `manage.py dbbackup` stores a
compressed (optionally encrypted) dump, `manage.py dbrestore` asks before it overwrites, and a
restore brings back every row exactly as it was."""

import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection

from buatfilm.models import Heartbeat
from notifications.tests.conftest import worker_env
from payments.models import AuditEntry, Order, PaymentAttempt
from payments.tests.factories import OrderFactory, PaymentAttemptFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSPHRASE = "backup-test-passphrase"
TABLES = [
    Order._meta.db_table,
    PaymentAttempt._meta.db_table,
    AuditEntry._meta.db_table,
    "payments_package",
    "django_migrations",
]


def manage(*args: str, backup_dir, input_text: str | None = None, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=worker_env(BACKUP_DIR=str(backup_dir), **env),
        input=input_text,
        capture_output=True,
        text=True,
        timeout=120,
    )


def backups(directory) -> list:
    # dbbackup stores a .metadata file beside each backup (the connector that made it)
    return [path for path in directory.iterdir() if not path.name.endswith(".metadata")]


def table_fingerprints() -> dict[str, tuple[int, str]]:
    """Each table's row count and a checksum of all its rows."""
    found = {}
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{table}\" t"  # noqa: S608
            )
            found[table] = cursor.fetchone()
    return found


def test_backup_then_restore_brings_back_every_row(tmp_path):
    # given orders and attempts in the database
    for _ in range(5):
        PaymentAttemptFactory(order=OrderFactory())
    before = table_fingerprints()

    # when an operator backs up (compressed), then the data is lost
    backup = manage("dbbackup", "--compress", "--noinput", backup_dir=tmp_path)
    assert backup.returncode == 0, backup.stderr
    dumps = backups(tmp_path)
    assert len(dumps) == 1 and dumps[0].name.endswith(".psql.bin.gz"), dumps
    assert Heartbeat.objects.filter(name=Heartbeat.Name.BACKUP).exists()  # /metrics shows it
    PaymentAttempt.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(f'DELETE FROM "{AuditEntry._meta.db_table}"')  # noqa: S608
        cursor.execute(f'DELETE FROM "{Order._meta.db_table}"')  # noqa: S608
    assert table_fingerprints() != before

    # and restores the backup
    connection.close()  # the restore drops and recreates the tables
    restore = manage("dbrestore", "--uncompress", "--noinput", backup_dir=tmp_path)
    assert restore.returncode == 0, restore.stderr

    # then every table has the same rows as before
    assert table_fingerprints() == before


def test_restore_asks_for_confirmation_and_changes_nothing_when_refused(tmp_path):
    # given a backup, then a new order
    PaymentAttemptFactory(order=OrderFactory())
    assert manage("dbbackup", "--compress", "--noinput", backup_dir=tmp_path).returncode == 0
    OrderFactory()
    before = table_fingerprints()

    # when an operator runs dbrestore and answers no
    connection.close()
    refused = manage("dbrestore", "--uncompress", backup_dir=tmp_path, input_text="n\n")

    # then it asked, stopped, and the database is as it was
    assert "Are you sure you want to continue" in refused.stdout + refused.stderr
    assert "Quitting" in refused.stdout + refused.stderr  # dbrestore's answer to "n" (its exit code stays 0)
    assert table_fingerprints() == before


@pytest.fixture
def gnupg_home(tmp_path):
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    yield home
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def test_backup_is_encrypted_for_the_configured_gpg_key_and_restores(tmp_path, gnupg_home):
    # given a GPG key pair in a private keyring
    home = gnupg_home
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", PASSPHRASE]
    made = subprocess.run(
        [*gpg, "--quick-gen-key", "backup-test@buatfilm.local", "ed25519", "cert,sign", "never"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    fingerprint = (
        subprocess.run(
            [*gpg, "--list-keys", "--with-colons", "backup-test@buatfilm.local"], capture_output=True, text=True
        )
        .stdout.split("fpr:::::::::")[1]
        .split(":")[0]
    )
    added = subprocess.run(
        [*gpg, "--quick-add-key", fingerprint, "cv25519", "encr", "never"], capture_output=True, text=True
    )
    assert added.returncode == 0, added.stderr
    PaymentAttemptFactory(order=OrderFactory())
    before = table_fingerprints()
    store = tmp_path / "backups"
    env = {"BACKUP_GPG_RECIPIENT": "backup-test@buatfilm.local", "GNUPGHOME": str(home)}

    # when backed up with --encrypt
    backup = manage("dbbackup", "--compress", "--encrypt", "--noinput", backup_dir=store, **env)
    assert backup.returncode == 0, backup.stderr

    # then the file is a GPG message, not a readable dump, and it restores
    (stored,) = backups(store)
    assert stored.name.endswith(".gpg")
    assert b"payments_order" not in stored.read_bytes()
    OrderFactory()
    connection.close()
    restore = manage(
        "dbrestore", "--decrypt", "--uncompress", "--passphrase", PASSPHRASE, "--noinput", backup_dir=store, **env
    )
    assert restore.returncode == 0, restore.stderr
    assert table_fingerprints() == before
