"""Helpers shared by the checkout, idempotency and page tests."""

import itertools
import threading
import uuid

import requests

from notifications.models import Notification
from payments.models import AuditEntry, DiscountCode, IdempotencyRecord, Order, PaymentAttempt

_counter = itertools.count(1)

LAUNCH_PACKAGE_ID = "ai-movie-course"


def launch_package_ensure():
    """The launch package comes from a data migration; transactional tests flush it away."""
    from payments.models import Package

    package, _ = Package.objects.get_or_create(
        id=LAUNCH_PACKAGE_ID, defaults={"name": "Buat Film Pakai AI", "price": 99000, "course_code": LAUNCH_PACKAGE_ID}
    )
    return package


def checkout_body(**overrides) -> dict:
    """A valid checkout body for the launch package with a fresh email."""
    body = {
        "package_id": LAUNCH_PACKAGE_ID,
        "name": "Budi Santoso",
        "email": f"budi{next(_counter)}-{uuid.uuid4().hex[:6]}@example.com",
        "phone": "0812-3456-7890",
    }
    body.update(overrides)
    return body


def db_state() -> dict:
    """Everything a checkout could change; compare before/after to prove nothing did."""
    from payments.simulator.models import SimApiCall, SimTransaction

    return {
        "orders": sorted(Order.objects.values_list("id", "status", "amount")),
        "attempts": sorted(PaymentAttempt.objects.values_list("midtrans_order_id", "status", "snap_token")),
        "idempotency": sorted(IdempotencyRecord.objects.values_list("key", "state", "response_status", "order_id")),
        "audit": AuditEntry.objects.count(),
        "discount_uses": sorted(DiscountCode.objects.values_list("code", "times_used")),
        "notifications": Notification.objects.count(),
        "sim_transactions": SimTransaction.objects.count(),
        "snap_calls": SimApiCall.objects.filter(operation="snap_create").count(),
    }


def snap_calls() -> int:
    from payments.simulator.models import SimApiCall

    return SimApiCall.objects.filter(operation="snap_create").count()


def post_json(url: str, body: dict, *, key: str | None = None, session=None, timeout: float = 30.0):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return (session or requests).post(url, json=body, headers=headers, timeout=timeout)


def run_parallel(fn, args_list: list) -> list:
    """Call fn(*args) for each args in threads released together by a barrier; results in order."""
    barrier = threading.Barrier(len(args_list))
    results: list = [None] * len(args_list)

    def worker(index, args):
        barrier.wait()
        try:
            results[index] = fn(*args)
        except Exception as exc:  # kept and asserted on by the test
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i, a)) for i, a in enumerate(args_list)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results
