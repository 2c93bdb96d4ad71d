"""`manage.py smoke_check URL`: what a deploy must answer, asked over HTTP like a customer,
Midtrans and the load balancer would: ready, healthy enough, packages on sale, an unsigned
webhook refused, /metrics not public."""

from collections.abc import Callable
from dataclasses import dataclass

import requests


@dataclass
class SmokeResult:
    name: str
    ok: bool
    detail: str


def _ready(base: str) -> tuple[bool, str]:
    response = requests.get(base + "/health/ready", timeout=5)
    return response.status_code == 200, f"HTTP {response.status_code}"


def _health(base: str) -> tuple[bool, str]:
    response = requests.get(base + "/health", timeout=5)
    status = (
        response.json().get("status")
        if response.headers.get("Content-Type", "").startswith("application/json")
        else None
    )
    return response.status_code == 200 and status in ("healthy", "degraded"), f"HTTP {response.status_code}, {status}"


def _packages(base: str) -> tuple[bool, str]:
    response = requests.get(base + "/api/packages/", timeout=5)
    packages = response.json() if response.status_code == 200 else []
    on_sale = [p["id"] for p in packages if p.get("available")]
    return bool(on_sale), f"HTTP {response.status_code}, on sale: {', '.join(on_sale) or 'none'}"


def _unsigned_webhook_refused(base: str) -> tuple[bool, str]:
    body = {
        "order_id": "SMOKE-CHECK-UNSIGNED",
        "status_code": "200",
        "gross_amount": "1.00",
        "transaction_status": "settlement",
        "signature_key": "0" * 128,
    }
    response = requests.post(base + "/webhooks/midtrans", json=body, timeout=5, allow_redirects=False)
    return response.status_code == 401, f"HTTP {response.status_code} (401 expected)"


def _metrics_not_public(base: str) -> tuple[bool, str]:
    response = requests.get(base + "/metrics", timeout=5)
    return response.status_code in (401, 403), f"HTTP {response.status_code} without a token (401 expected)"


CHECKS: list[tuple[str, Callable[[str], tuple[bool, str]]]] = [
    ("ready", _ready),
    ("health", _health),
    ("packages", _packages),
    ("unsigned webhook refused", _unsigned_webhook_refused),
    ("metrics not public", _metrics_not_public),
]


def smoke_check(*, base_url: str) -> list[SmokeResult]:
    base = base_url.rstrip("/")
    results = []
    for name, check in CHECKS:
        try:
            ok, detail = check(base)
        except (requests.RequestException, ValueError) as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
        results.append(SmokeResult(name, ok, detail))
    return results
