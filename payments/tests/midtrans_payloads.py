"""Midtrans notification and status bodies shaped like the reference's samples (§2, §3)."""

import uuid

from django.conf import settings

from payments.midtrans import signature_compute

STATUS_CODES = {
    "capture": "200",
    "settlement": "200",
    "pending": "201",
    "deny": "202",
    "cancel": "202",
    "expire": "407",
    "failure": "202",
    "refund": "200",
    "partial_refund": "200",
    "chargeback": "200",
    "partial_chargeback": "200",
    "authorize": "200",
}


def midtrans_body(
    midtrans_order_id: str,
    transaction_status: str,
    *,
    gross_amount: str = "99000.00",
    status_code: str | None = None,
    fraud_status: str | None = "accept",
    payment_type: str = "bank_transfer",
    transaction_id: str | None = None,
    va_number: str = "12345678901",
    server_key: str | None = None,
    signed: bool = True,
    **extra,
) -> dict:
    status_code = status_code or STATUS_CODES[transaction_status]
    body = {
        "transaction_time": "2026-11-22 10:00:00",
        "transaction_status": transaction_status,
        "transaction_id": transaction_id or str(uuid.uuid5(uuid.NAMESPACE_URL, midtrans_order_id)),
        "status_message": "midtrans payment notification",
        "status_code": status_code,
        "payment_type": payment_type,
        "order_id": midtrans_order_id,
        "merchant_id": "G123456789",
        "gross_amount": gross_amount,
        "currency": "IDR",
    }
    if fraud_status is not None:
        body["fraud_status"] = fraud_status
    if payment_type == "bank_transfer":
        body["va_numbers"] = [{"bank": "bca", "va_number": va_number}]
    if transaction_status == "settlement":
        body["settlement_time"] = "2026-11-22 10:05:00"
    body.update(extra)
    if signed:
        body["signature_key"] = signature_compute(
            order_id=midtrans_order_id,
            status_code=status_code,
            gross_amount=gross_amount,
            server_key=settings.MIDTRANS_SERVER_KEY if server_key is None else server_key,
        )
    return body
