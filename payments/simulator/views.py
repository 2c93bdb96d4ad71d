"""HTTP face of the simulator: Midtrans' Snap and Core API paths, the payment page, fault control.

Mounted at /sandbox/midtrans/ only when MIDTRANS_SIMULATOR is on, with the same paths as
Midtrans' hosts below it, so the client only swaps its base URLs.
"""

from __future__ import annotations

import json
from functools import wraps

from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from payments.simulator import faults, services
from payments.simulator.models import SimTransaction

_SERVER_ERROR = "Sorry, we encountered internal server error. We will fix this soon."


def _json_body(request):
    # Parsed once per request: the API wrapper reads Snap's order id from it, then the view.
    if not hasattr(request, "_simulator_json"):
        try:
            request._simulator_json = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            request._simulator_json = services.INVALID_JSON
    return request._simulator_json


def _order_id_of(request) -> str:
    body = _json_body(request) if request.method == "POST" else None
    details = body.get("transaction_details") if isinstance(body, dict) else None
    order_id = details.get("order_id") if isinstance(details, dict) else None
    return order_id if isinstance(order_id, str) else ""


# Core API POSTs that honour Idempotency-Key (Midtrans: every POST but /token and /account).
_IDEMPOTENT_OPERATIONS = {"cancel", "expire", "refund", "approve", "deny"}
# Calls whose X-Override-Notification / X-Append-Notification name the transaction's URLs.
_NOTIFYING_OPERATIONS = {"snap_create", *_IDEMPOTENT_OPERATIONS}
MSG_METHOD_NOT_ALLOWED = "HTTP method is not allowed"


def _error_body(status_code: str, message: str, *, snap: bool) -> dict:
    """Midtrans' error shapes: Snap's error_messages, the Core API's status_code and status_message."""
    return {"error_messages": [message]} if snap else {"status_code": status_code, "status_message": message}


def _succeeded(response: HttpResponse) -> bool:
    """A success Midtrans would replay for an Idempotency-Key: 2xx, and a body code below 400 (or 407)."""
    if not 200 <= response.status_code < 300:
        return False
    try:
        code = int(json.loads(response.content).get("status_code", "200"))
    except (ValueError, TypeError, AttributeError):
        return False
    return code < 400 or code == 407


def _api(operation: str, *, snap: bool, methods: tuple[str, ...] = ("POST",)):
    """Wraps an API view: its HTTP methods, faults, Basic auth, notification URL headers,
    Idempotency-Key, and a SimApiCall row per request."""

    def decorator(view):
        @csrf_exempt
        @never_cache
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.method not in methods:
                response = JsonResponse(_error_body("405", MSG_METHOD_NOT_ALLOWED, snap=snap), status=405)
                response["Allow"] = ", ".join(methods)
                return response
            identifier = kwargs.get("identifier") or kwargs.get("token") or _order_id_of(request)
            applied = faults.fault_apply()
            fault = applied.kind
            if fault == "down":
                response = HttpResponse(
                    "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
                    status=503,
                    content_type="text/html",
                )
            elif fault == "timeout":
                response = HttpResponse("<html><body><h1>504 Gateway Time-out</h1></body></html>", status=504)
            elif fault == "answer":
                response = _canned_answer(request, applied, snap=snap)
            elif fault == "error":
                body = (
                    {"error_messages": [_SERVER_ERROR]}
                    if snap
                    else {"status_code": "500", "status_message": _SERVER_ERROR}
                )
                response = JsonResponse(body, status=500)
            elif not services.auth_valid(request.META.get("HTTP_AUTHORIZATION", "")):
                body = (
                    {"error_messages": [services.MSG_UNAUTHORIZED]}
                    if snap
                    else {"status_code": "401", "status_message": services.MSG_UNAUTHORIZED}
                )
                response = JsonResponse(body, status=401)
            else:
                response = _api_answer(request, view, operation, args, kwargs, snap=snap, applied=applied)
            services.api_call_record(
                operation=operation, order_id=identifier, http_status=response.status_code, fault=applied.label
            )
            return response

        return wrapped

    return decorator


def _api_answer(request, view, operation: str, args, kwargs, *, snap: bool, applied: faults.Applied) -> HttpResponse:
    """An authenticated call: its notification URL headers and Idempotency-Key, then the view."""
    if operation in _NOTIFYING_OPERATIONS:
        try:
            kwargs["notify"] = services.notify_urls_parse(
                override=request.headers.get("X-Override-Notification", ""),
                append=request.headers.get("X-Append-Notification", ""),
            )
        except ValueError as exc:
            status = 400 if snap else 200  # Core API errors come as HTTP 200 (see services._core_error)
            return JsonResponse(_error_body("400", str(exc), snap=snap), status=status)
    claim = services.IdempotencyClaim()
    if operation in _IDEMPOTENT_OPERATIONS:
        claim = services.idempotency_claim(key=request.headers.get("Idempotency-Key", ""), operation=operation)
        if claim.replay is not None:
            return JsonResponse(claim.replay[1], status=claim.replay[0])
        if claim.in_progress:
            return JsonResponse(services.idempotency_in_progress_body(), status=202)
    try:
        try:
            response = JsonResponse(view(request, *args, **kwargs), status=201 if operation == "snap_create" else 200)
        except services.SimApiError as exc:
            response = JsonResponse(exc.body, status=exc.http_status)
        if applied.core_errors_as_http and not snap:
            _core_error_as_http(response)
    except BaseException:
        services.idempotency_finish(claim=claim, http_status=500, body=None, success=False)
        raise
    services.idempotency_finish(
        claim=claim, http_status=response.status_code, body=json.loads(response.content), success=_succeeded(response)
    )
    return response


def _canned_answer(request, applied: faults.Applied, *, snap: bool) -> HttpResponse:
    """The answer_status fault: what a throttling Midtrans, a Spring 404 or a redirecting proxy sends."""
    code = applied.answer_status
    if code == 404:
        # What Midtrans' Spring backend answers for a path it has no route for (reference §2).
        return _spring_not_found(request)
    if code == 429:
        message = "Too many requests, please slow down"
        body = {"error_messages": [message]} if snap else {"status_code": "429", "status_message": message}
        response = JsonResponse(body, status=429)
        response["Retry-After"] = str(applied.retry_after_seconds)
        return response
    # A redirect, like a proxy sending http to https: the body is an HTML page.
    response = HttpResponse(f"<html><body><h1>{code} Moved</h1></body></html>", status=code, content_type="text/html")
    response["Location"] = f"https://{request.get_host()}{request.get_full_path()}"
    return response


def _core_error_as_http(response: HttpResponse) -> None:
    """core_errors_as_http: a Core API error body's status_code becomes the HTTP status (407 is data)."""
    try:
        code = int(json.loads(response.content).get("status_code", ""))
    except (ValueError, TypeError, AttributeError):
        return
    if code >= 400 and code != 407:
        response.status_code = code


# --- Snap API ------------------------------------------------------------------------------------


@_api("snap_create", snap=True)
def snap_transactions(request, notify):
    base = request.build_absolute_uri("/").rstrip("/") + request.path.split("/snap/v1/")[0]
    return services.snap_create(payload=_json_body(request), redirect_base=base, notify=notify)


@_api("snap_cancel", snap=True)
def snap_cancel(request, token):
    return services.snap_cancel(token=token)


# --- Core API ------------------------------------------------------------------------------------


@_api("status", snap=False, methods=("GET",))
def status(request, identifier):
    return services.status_read(identifier=identifier)


@_api("cancel", snap=False)
def cancel(request, identifier, notify):
    return services.transaction_cancel(identifier=identifier, notify=notify)


@_api("expire", snap=False)
def expire(request, identifier, notify):
    return services.transaction_expire(identifier=identifier, notify=notify)


@_api("refund", snap=False)
def refund(request, identifier, notify):
    return services.transaction_refund(identifier=identifier, body=_json_body(request), notify=notify)


@_api("approve", snap=False)
def approve(request, identifier, notify):
    return services.transaction_approve(identifier=identifier, notify=notify)


@_api("deny", snap=False)
def deny(request, identifier, notify):
    return services.transaction_deny(identifier=identifier, notify=notify)


# --- Paths the simulator does not serve -----------------------------------------------------------

# Core API actions after /v2/{id}/: a path with more segments before one of them has a "/" in the
# order id, which Midtrans' Spring backend has no route for (reference §2).
_CORE_ACTIONS = ("status", "cancel", "expire", "refund", "approve", "deny")


def _spring_not_found(request) -> JsonResponse:
    return JsonResponse(
        {
            "timestamp": timezone.now().isoformat(timespec="milliseconds"),
            "status": 404,
            "error": "Not Found",
            "message": "No message available",
            "path": request.path,
        },
        status=404,
    )


@csrf_exempt
@never_cache
def not_served(request, rest: str = ""):
    """Every other path under the prefix: JSON in the shape of the Midtrans host it belongs to.

    Snap paths answer `error_messages`; `/v2/{id}/{action}` with a "/" in the id answers
    Midtrans' Spring-style 404; any other path (the Core API's, or one Midtrans serves and the
    simulator does not, e.g. /v2/charge: see the README) answers the Core API's 404 body.
    """
    segments = rest.strip("/").split("/")
    if segments[0] == "snap":
        response = JsonResponse(_error_body("404", "The requested resource is not found", snap=True), status=404)
    elif segments[0] == "v2" and len(segments) > 3 and segments[-1] in _CORE_ACTIONS:
        response = _spring_not_found(request)
    else:
        message = f"The requested resource is not found: the Midtrans simulator does not serve {request.method} /{rest}"
        response = JsonResponse(_error_body("404", message, snap=False), status=404)
    services.api_call_record(operation="not_served", order_id="", http_status=response.status_code, fault="")
    return response


# --- Fault control ---------------------------------------------------------------------------------


@csrf_exempt
@never_cache
@require_http_methods(["GET", "POST", "DELETE"])
def fault_control(request):
    """GET the faults, POST a JSON object of changes, DELETE to clear them all."""
    if request.method == "DELETE":
        fault = faults.fault_reset()
    elif request.method == "POST":
        changes = _json_body(request)
        if not isinstance(changes, dict):
            return JsonResponse({"error": 'send a JSON object, e.g. {"error_rate": 0.5}'}, status=400)
        try:
            fault = faults.fault_set(**changes)
        except ValueError as exc:
            return JsonResponse({"error": str(exc)}, status=400)
    else:
        fault = faults.fault_get()
    return JsonResponse(faults.fault_as_dict(fault))


# --- Payment page ---------------------------------------------------------------------------------


def _rupiah(amount: int) -> str:
    """Indonesian thousands separator: 149000 -> "149.000" (negative for discount lines)."""
    return f"{amount:,}".replace(",", ".")


def _page(request, tx: SimTransaction | None, *, error: str = "", status: int = 200):
    context = {"tx": tx, "error": error}
    if tx is not None:
        context.update(
            {
                "methods": services.methods_offered(tx),
                "method_label": next(
                    (
                        spec["label"]
                        for spec in services.METHODS.values()
                        if (spec["payment_type"], spec["bank"]) == (tx.payment_type, tx.bank)
                    ),
                    "",
                ),
                "amount": _rupiah(tx.gross_amount),
                "items": [
                    {"name": item.get("name", ""), "quantity": item.get("quantity", 1), "price": _rupiah(item["price"])}
                    for item in (tx.request_payload or {}).get("item_details") or []
                ],
                "finish_url": services.finish_redirect_url(tx),
                "expiry": services.time_format(tx.expiry_time),
            }
        )
    return render(request, "simulator/payment.html", context, status=status)


@never_cache
@require_GET
def payment_page(request, token):
    tx = SimTransaction.objects.filter(token=token).first()
    if tx is None or services.page_expired(tx):
        return _page(request, None, error="Sesi pembayaran tidak ditemukan atau sudah tidak berlaku.", status=404)
    return _page(request, tx)


@require_POST
def payment_method(request, token):
    try:
        services.method_choose(token=token, method=request.POST.get("method", ""))
    except services.SimStateError as exc:
        return _page(request, SimTransaction.objects.filter(token=token).first(), error=str(exc), status=400)
    return HttpResponseRedirect(request.path.rsplit("/", 1)[0])


@require_POST
def payment_action(request, token):
    """Pay, let expire, get denied, or go back to the shop; then Midtrans' redirect to the finish URL."""
    action = request.POST.get("action", "")
    try:
        if action == "back":
            tx = SimTransaction.objects.filter(token=token).first()
            if tx is None:
                raise services.SimStateError("Sesi pembayaran tidak ditemukan.")
        else:
            tx = services.outcome_apply(token=token, outcome=action)
    except services.SimStateError as exc:
        return _page(request, SimTransaction.objects.filter(token=token).first(), error=str(exc), status=400)
    finish = services.finish_redirect_url(tx)
    return HttpResponseRedirect(finish) if finish else HttpResponseRedirect(request.path.rsplit("/", 1)[0])
