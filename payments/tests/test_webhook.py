"""The HTTP edge of POST /webhooks/midtrans: parsing, signature, routes, answers."""

import json

import pytest
from django.test import Client

from common.metrics import webhook_rejected_total
from entitlements.models import Entitlement
from payments.models import AuditEntry, Order, PaymentAttempt, PaymentEvent
from payments.tests.factories import OrderFactory, PaymentAttemptFactory
from payments.tests.midtrans_payloads import midtrans_body

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _apply_notifications_directly(settings):
    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = False


@pytest.fixture
def attempt():
    order = OrderFactory(status=Order.Status.PENDING_PAYMENT)
    return PaymentAttemptFactory(order=order, status=PaymentAttempt.Status.OPEN)


def post_raw(data, path="/webhooks/midtrans", content_type="application/json"):
    return Client(enforce_csrf_checks=True).post(path, data=data, content_type=content_type)


def snapshot():
    """Everything a notification could change."""
    return (
        list(Order.objects.values("id", "status", "paid_at", "needs_review")),
        list(PaymentAttempt.objects.values("id", "status", "transaction_id", "va_number")),
        PaymentEvent.objects.count(),
        Entitlement.objects.count(),
        AuditEntry.objects.count(),
    )


def rejected(reason):
    return webhook_rejected_total.labels(reason=reason)._value.get()


@pytest.mark.parametrize("path", ["/webhooks/midtrans", "/webhooks/midtrans/"])
def test_both_paths_accept_without_redirect_or_csrf_token(attempt, path):
    response = post_raw(json.dumps(midtrans_body(attempt.midtrans_order_id, "settlement")), path=path)

    assert response.status_code == 200
    assert Order.objects.get(pk=attempt.order_id).status == "PAID"


@pytest.mark.parametrize(
    "data",
    ["{not json", "", "[1, 2]", '"text"', b"\xff\xfe"],
    ids=["broken", "empty", "array", "string", "not-utf8"],
)
def test_malformed_body_is_400_and_changes_nothing(attempt, data):
    before, counted = snapshot(), rejected("malformed")

    response = post_raw(data)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert snapshot() == before
    assert rejected("malformed") == counted + 1


@pytest.mark.parametrize("field", ["order_id", "status_code", "gross_amount", "transaction_status"])
def test_missing_required_field_is_400_naming_it_and_changes_nothing(attempt, field):
    body = midtrans_body(attempt.midtrans_order_id, "settlement")
    del body[field]
    before = snapshot()

    response = post_raw(json.dumps(body))

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert snapshot() == before


def test_form_encoded_body_is_refused(attempt):
    body = midtrans_body(attempt.midtrans_order_id, "settlement")
    before = snapshot()

    response = Client().post("/webhooks/midtrans", data=body)  # multipart form, not JSON

    assert response.status_code == 400
    assert snapshot() == before


def _forged(attempt):
    body = midtrans_body(attempt.midtrans_order_id, "settlement")
    body["signature_key"] = "0" * 128
    return body


def _signed_over_integer_amount(attempt):
    # Signed over "99000" but sent as "99000.00": the strings must be used verbatim.
    body = midtrans_body(attempt.midtrans_order_id, "settlement", gross_amount="99000")
    body["gross_amount"] = "99000.00"
    return body


def _tampered_amount(attempt):
    body = midtrans_body(attempt.midtrans_order_id, "settlement", gross_amount="1000.00")
    body["gross_amount"] = "99000.00"
    return body


def _tampered_status(attempt):
    body = midtrans_body(attempt.midtrans_order_id, "settlement", status_code="201")
    body["status_code"] = "200"
    return body


def _wrong_key(attempt):
    return midtrans_body(attempt.midtrans_order_id, "settlement", server_key="SB-Mid-server-SOMEONE-ELSE")


def _missing_signature(attempt):
    return midtrans_body(attempt.midtrans_order_id, "settlement", signed=False)


@pytest.mark.parametrize(
    "make",
    [_forged, _signed_over_integer_amount, _tampered_amount, _tampered_status, _wrong_key, _missing_signature],
)
def test_bad_signature_is_401_with_a_log_line_and_a_counter_and_nothing_stored(attempt, make, caplog):
    body = make(attempt)
    before = snapshot()
    reason = "missing_signature" if "signature_key" not in body else "bad_signature"
    counted = rejected(reason)

    with caplog.at_level("WARNING", logger="payments.webhooks"):
        response = post_raw(json.dumps(body))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert snapshot() == before
    assert rejected(reason) == counted + 1
    lines = [r for r in caplog.records if r.name == "payments.webhooks"]
    assert len(lines) == 1 and lines[0].getMessage() == "webhook_rejected"
    assert (lines[0].reason, lines[0].midtrans_order_id) == (reason, attempt.midtrans_order_id)


def test_without_a_server_key_every_notification_is_refused(attempt, settings):
    # given: no server key configured, and a body "signed" with that empty key, as anyone can
    # compute it: the signature itself checks out, so only the fail-closed guard can refuse it
    settings.MIDTRANS_SERVER_KEY = ""
    body = midtrans_body(attempt.midtrans_order_id, "settlement", server_key="")
    before = snapshot()
    counted = rejected("no_server_key")

    # when
    response = post_raw(json.dumps(body))

    # then
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert rejected("no_server_key") == counted + 1
    assert snapshot() == before


def test_unknown_extra_fields_are_accepted_and_kept(attempt):
    body = midtrans_body(attempt.midtrans_order_id, "settlement", brand_new_field={"x": 1}, issuer="gopay")

    response = post_raw(json.dumps(body))

    assert response.status_code == 200
    assert PaymentEvent.objects.get().payload["brand_new_field"] == {"x": 1}


def test_get_is_not_allowed_and_changes_nothing(attempt):
    before = snapshot()

    response = Client().get("/webhooks/midtrans")

    assert response.status_code == 405
    assert snapshot() == before


def test_unexpected_error_outside_the_apply_step_is_503_with_a_traceback_logged(attempt, settings, monkeypatch, caplog):
    # given: confirmation on, and the status read failing in a way nobody foresaw (not a
    # Midtrans error, not a database error): outside the apply step, so nothing catches it there
    from payments.services import events

    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = True

    def status_confirm_broken(*, midtrans_order_id):
        raise KeyError("transaction_status")

    monkeypatch.setattr(events, "status_confirm", status_confirm_broken)
    body = midtrans_body(attempt.midtrans_order_id, "settlement")
    before_order = list(Order.objects.values("id", "status", "paid_at", "needs_review"))
    before_attempt = list(PaymentAttempt.objects.values("id", "status", "transaction_id", "va_number"))

    # when
    with caplog.at_level("ERROR", logger="payments.webhooks"):
        response = post_raw(json.dumps(body))

    # then: 503 (Midtrans retries it 4 times, a 500 only once), never a 500
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "internal_error"
    assert response["Retry-After"]
    # the traceback is logged with the order id
    lines = [r for r in caplog.records if r.getMessage() == "webhook_unexpected_error"]
    assert len(lines) == 1 and lines[0].exc_info is not None
    assert lines[0].midtrans_order_id == attempt.midtrans_order_id
    # nothing was applied; the notification stays recorded, unprocessed, for the sweep
    assert list(Order.objects.values("id", "status", "paid_at", "needs_review")) == before_order
    assert list(PaymentAttempt.objects.values("id", "status", "transaction_id", "va_number")) == before_attempt
    assert Entitlement.objects.count() == 0
    assert list(PaymentEvent.objects.values_list("result", flat=True)) == ["received"]


def test_status_api_error_that_is_not_an_outage_keeps_the_event_for_the_sweep_and_answers_200(
    attempt, settings, monkeypatch
):
    # given: confirmation on; the status API answers an error about this transaction (HTTP 404),
    # which retrying the notification cannot cure
    from payments import midtrans
    from payments.services import events

    settings.MIDTRANS_CONFIRM_WITH_STATUS_API = True

    def status_confirm_404(*, midtrans_order_id):
        raise midtrans.MidtransNotFound("Midtrans answered HTTP 404", operation="status", http_status=404)

    monkeypatch.setattr(events, "status_confirm", status_confirm_404)
    body = midtrans_body(attempt.midtrans_order_id, "settlement")
    before_order = list(Order.objects.values("id", "status", "paid_at", "needs_review"))

    # when
    response = post_raw(json.dumps(body))

    # then: recorded, not applied, kept unprocessed (with the reason) for the sweep
    assert response.status_code == 200 and response.json()["result"] == "unconfirmed"
    assert list(Order.objects.values("id", "status", "paid_at", "needs_review")) == before_order
    assert Entitlement.objects.count() == 0
    event = PaymentEvent.objects.get()
    assert event.result == "received" and "MidtransNotFound" in event.error
