"""Start-up checks of the operator tools' and reports' settings (issue 17)."""

import pytest

from buatfilm.tests.test_startup_checks import run_check


@pytest.mark.parametrize(
    ("overrides", "check_id", "names"),
    [
        ({"SALES_SUMMARY_HOUR": "24"}, "buatfilm.E170", ["SALES_SUMMARY_HOUR", "0-23"]),
        ({"SALES_SUMMARY_HOUR": "seven"}, "buatfilm.E000", ["SALES_SUMMARY_HOUR"]),
        ({"SALES_SUMMARY_EMAILS": "owner@example.com,finance"}, "buatfilm.E171", ["SALES_SUMMARY_EMAILS", "'finance'"]),
        ({"SALE_NOTICE_EMAILS": "nobody"}, "buatfilm.E171", ["SALE_NOTICE_EMAILS"]),
        ({"RESEND_ACCESS_MIN_SECONDS": "0"}, "buatfilm.E172", ["RESEND_ACCESS_MIN_SECONDS"]),
    ],
)
def test_bad_operator_tool_settings_refuse_with_named_variable_and_fix(overrides, check_id, names):
    result = run_check(**overrides)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert check_id in output
    for name in names:
        assert name in output
    assert "HINT" in output


def test_good_operator_tool_settings_pass():
    result = run_check(
        SALES_SUMMARY_EMAILS="owner@example.com,finance@example.com",
        SALES_SUMMARY_HOUR="0",
        SALE_NOTICE_EMAILS="owner@example.com",
        RESEND_ACCESS_MIN_SECONDS="120",
    )
    assert result.returncode == 0, result.stderr
