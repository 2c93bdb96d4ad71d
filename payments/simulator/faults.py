"""Run-time fault injection for the simulator's API (latency, share of 5xx, timeouts, "down").

Besides outages, some answers Midtrans (or something in front of it) may give that the
client must handle: the next N calls answered with a canned HTTP status (`answer_next`,
`answer_status`: 404 Spring-style JSON, 429 with Retry-After, a 3xx redirect), and Core
API errors delivered with their body status_code as the HTTP status
(`core_errors_as_http`: 404 for an unknown order's status, 412, 406 ...) instead of HTTP 200.

Stored in the database (SimFault, one row) so every web process obeys the same setting,
and it can be changed while the server runs: from the `midtrans_sim_faults` command or
POST /sandbox/midtrans/_faults. The payment page and the fault endpoint are never faulted.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F

from payments.simulator.models import SimFault

FAULT_FIELDS = (
    "latency_ms",
    "error_rate",
    "fail_next",
    "timeout",
    "timeout_seconds",
    "down",
    "answer_status",
    "answer_next",
    "retry_after_seconds",
    "core_errors_as_http",
)
# HTTP statuses `answer_status` can give: a Spring-style 404, a 429, redirects.
ANSWER_STATUSES = (404, 429, 301, 302, 303, 307, 308)


@dataclass(frozen=True)
class Applied:
    """What fault_apply decided for one API call."""

    kind: str = ""  # "", "down", "timeout", "error" or "answer"
    answer_status: int = 0
    retry_after_seconds: int = 0
    core_errors_as_http: bool = False

    @property
    def label(self) -> str:
        """For SimApiCall.fault: "down", "answer_429", ... ("" when answered normally)."""
        return f"answer_{self.answer_status}" if self.kind == "answer" else self.kind


def _settings_read() -> SimFault | None:
    """The current faults, read fresh from the database (None before anything set them).

    Every API call reads them, so a change by any process applies to the very next call.
    """
    return SimFault.objects.filter(pk=1).first()


def fault_get() -> SimFault:
    fault, _ = SimFault.objects.get_or_create(pk=1)
    return fault


def fault_as_dict(fault: SimFault) -> dict:
    return {name: getattr(fault, name) for name in FAULT_FIELDS}


def fault_clean(changes: dict) -> dict:
    """The changes, checked and typed; raises ValueError on an unknown name or a bad value."""
    unknown = set(changes) - set(FAULT_FIELDS)
    if unknown:
        raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
    cleaned: dict = {}
    for name, value in changes.items():
        if name in ("timeout", "down", "core_errors_as_http"):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
            cleaned[name] = value
        elif name in ("latency_ms", "fail_next", "answer_next", "retry_after_seconds", "answer_status"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")
            if name == "answer_status" and value not in (0, *ANSWER_STATUSES):
                raise ValueError(f"answer_status must be 0 or one of {', '.join(map(str, ANSWER_STATUSES))}")
            cleaned[name] = value
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if name == "error_rate" and not 0.0 <= value <= 1.0:
                raise ValueError("error_rate must be between 0 and 1")
            if name == "timeout_seconds" and not 0.0 < value <= 300.0:
                raise ValueError("timeout_seconds must be between 0 and 300")
            cleaned[name] = float(value)
    return cleaned


def fault_set(*, reset: bool = False, **changes) -> SimFault:
    """Change some fault settings (the others stay, or go back to their defaults with `reset`).

    Everything is validated before anything is written, and the reset and the changes are
    one transaction: a bad value raises ValueError and leaves the faults as they were.
    """
    if not isinstance(reset, bool):
        raise ValueError("reset must be true or false")
    cleaned = fault_clean(changes)
    with transaction.atomic():
        fault_get()
        fault = SimFault.objects.select_for_update().get(pk=1)
        if reset:
            for name in FAULT_FIELDS:
                setattr(fault, name, SimFault._meta.get_field(name).default)
        for name, value in cleaned.items():
            setattr(fault, name, value)
        if fault.answer_next and not fault.answer_status:
            # Raised inside the transaction: nothing is written.
            raise ValueError("answer_next needs answer_status (which HTTP status to answer with)")
        fault.save()
    return fault


def fault_reset() -> SimFault:
    return fault_set(reset=True)


def fault_apply() -> Applied:
    """Act out the configured faults for one API call; the view answers by the result.

    Latency and timeouts are slept here; "timeout" then answers like a gateway that gave up.
    """
    fault = _settings_read()
    if fault is None:
        return Applied()
    if fault.down:
        return Applied("down")
    if fault.latency_ms:
        time.sleep(fault.latency_ms / 1000)
    if fault.timeout:
        time.sleep(fault.timeout_seconds)
        return Applied("timeout")
    # Counters are consumed atomically so parallel workers answer exactly N calls between them.
    if fault.answer_next and SimFault.objects.filter(pk=1, answer_next__gt=0).update(answer_next=F("answer_next") - 1):
        return Applied("answer", answer_status=fault.answer_status, retry_after_seconds=fault.retry_after_seconds)
    if fault.fail_next and SimFault.objects.filter(pk=1, fail_next__gt=0).update(fail_next=F("fail_next") - 1):
        return Applied("error")
    if fault.error_rate and random.random() < fault.error_rate:
        return Applied("error")
    return Applied(core_errors_as_http=fault.core_errors_as_http)
