"""Run-time fault injection for the simulator's API (latency, share of 5xx, timeouts, "down").

Stored in the database (SimFault, one row) so every web process obeys the same setting,
and it can be changed while the server runs: from the `midtrans_sim_faults` command or
POST /sandbox/midtrans/_faults. The payment page and the fault endpoint are never faulted.
"""

from __future__ import annotations

import random
import time

from django.db import transaction
from django.db.models import F

from payments.simulator.models import SimFault

FAULT_FIELDS = ("latency_ms", "error_rate", "fail_next", "timeout", "timeout_seconds", "down")


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
        if name in ("timeout", "down"):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
            cleaned[name] = value
        elif name in ("latency_ms", "fail_next"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")
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
    cleaned = fault_clean(changes)
    with transaction.atomic():
        fault_get()
        fault = SimFault.objects.select_for_update().get(pk=1)
        if reset:
            for name in FAULT_FIELDS:
                setattr(fault, name, SimFault._meta.get_field(name).default)
        for name, value in cleaned.items():
            setattr(fault, name, value)
        fault.save()
    return fault


def fault_reset() -> SimFault:
    return fault_set(reset=True)


def fault_apply() -> str:
    """Act out the configured faults for one API call. Returns "" (answer normally), "down" or "error".

    Latency and timeouts are slept here; "timeout" then answers like a gateway that gave up.
    """
    fault = SimFault.objects.filter(pk=1).first()
    if fault is None:
        return ""
    if fault.down:
        return "down"
    if fault.latency_ms:
        time.sleep(fault.latency_ms / 1000)
    if fault.timeout:
        time.sleep(fault.timeout_seconds)
        return "timeout"
    # fail_next is consumed atomically so parallel workers fail exactly N calls between them.
    if fault.fail_next and SimFault.objects.filter(pk=1, fail_next__gt=0).update(fail_next=F("fail_next") - 1):
        return "error"
    if fault.error_rate and random.random() < fault.error_rate:
        return "error"
    return ""
