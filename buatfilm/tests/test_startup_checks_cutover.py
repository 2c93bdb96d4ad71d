"""The cut-over settings (import_legacy, backfill_notifications) are checked at start-up too."""

import pytest

from buatfilm.tests.test_startup_checks import run_check


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"LEGACY_IMPORT_BATCH_SIZE": "0"}, "buatfilm.E012"),
        ({"LEGACY_IMPORT_BATCH_SIZE": "lots"}, "buatfilm.E000"),
        ({"LEGACY_DB_CONNECT_TIMEOUT": "-1"}, "buatfilm.E012"),
        ({"BACKFILL_NOTIFICATIONS_PER_MINUTE": "0"}, "buatfilm.E012"),
    ],
)
def test_bad_cutover_settings_refuse_with_the_variable_named(overrides, check_id):
    result = run_check(**overrides)

    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert check_id in output
    assert next(iter(overrides)) in output
    assert "Traceback" not in output
