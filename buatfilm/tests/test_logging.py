import json
import logging

from common.logging import JsonFormatter, KeyValueFormatter, RequestIdFilter, request_id_var


def _record(**extra):
    record = logging.LogRecord("payments", logging.INFO, __file__, 1, "order_paid", (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    RequestIdFilter().filter(record)
    return record


def test_json_lines_carry_the_request_id_and_fields():
    token = request_id_var.set("req-42")
    try:
        line = JsonFormatter().format(_record(order_id="BF-20261122-ABCDEFGH", amount=99000))
    finally:
        request_id_var.reset(token)
    payload = json.loads(line)
    assert payload["event"] == "order_paid"
    assert payload["request_id"] == "req-42"
    assert payload["order_id"] == "BF-20261122-ABCDEFGH"
    assert payload["amount"] == 99000


def test_text_lines_are_key_value_and_quote_spaces():
    line = KeyValueFormatter().format(_record(order_id="BF-1", reason="two words"))
    assert "order_paid" in line
    assert "order_id=BF-1" in line
    assert 'reason="two words"' in line
    assert "request_id=-" in line
    assert "\n" not in line


def test_request_id_reaches_log_lines_of_that_request(client, caplog):
    caplog.set_level(logging.INFO)
    logger = logging.getLogger("buatfilm.health")

    from django.urls import path

    def view(request):
        logger.info("inside_request")
        from django.http import HttpResponse

        return HttpResponse("ok")

    from django.test import override_settings

    urls = type("urls", (), {"urlpatterns": [path("probe", view)]})
    with override_settings(ROOT_URLCONF=urls):
        client.get("/probe", HTTP_X_REQUEST_ID="trace-7")
    # the configured console handler's filter stamped the record while the request ran
    record = next(r for r in caplog.records if r.getMessage() == "inside_request")
    assert record.request_id == "trace-7"
