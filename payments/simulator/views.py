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
            request._simulator_json = None
    return request._simulator_json


def _order_id_of(request) -> str:
    body = _json_body(request) if request.method == "POST" else None
    details = body.get("transaction_details") if isinstance(body, dict) else None
    order_id = details.get("order_id") if isinstance(details, dict) else None
    return order_id if isinstance(order_id, str) else ""


def _api(operation: str, *, snap: bool):
    """Wraps an API view: faults, Basic auth, and a SimApiCall row per request."""

    def decorator(view):
        @csrf_exempt
        @never_cache
        @wraps(view)
        def wrapped(request, *args, **kwargs):
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
                try:
                    response = JsonResponse(
                        view(request, *args, **kwargs), status=201 if operation == "snap_create" else 200
                    )
                except services.SimApiError as exc:
                    response = JsonResponse(exc.body, status=exc.http_status)
                if applied.core_errors_as_http and not snap:
                    _core_error_as_http(response)
            services.api_call_record(
                operation=operation, order_id=identifier, http_status=response.status_code, fault=applied.label
            )
            return response

        return wrapped

    return decorator


def _canned_answer(request, applied: faults.Applied, *, snap: bool) -> HttpResponse:
    """The answer_status fault: what a throttling Midtrans, a Spring 404 or a redirecting proxy sends."""
    code = applied.answer_status
    if code == 404:
        # What Midtrans' Spring backend answers for a path it has no route for (reference §2).
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


@require_POST
@_api("snap_create", snap=True)
def snap_transactions(request):
    base = request.build_absolute_uri("/").rstrip("/") + request.path.split("/snap/v1/")[0]
    return services.snap_create(payload=_json_body(request), redirect_base=base)


@require_POST
@_api("snap_cancel", snap=True)
def snap_cancel(request, token):
    return services.snap_cancel(token=token)


# --- Core API ------------------------------------------------------------------------------------


@require_GET
@_api("status", snap=False)
def status(request, identifier):
    return services.status_read(identifier=identifier)


@require_POST
@_api("cancel", snap=False)
def cancel(request, identifier):
    return services.transaction_cancel(identifier=identifier)


@require_POST
@_api("expire", snap=False)
def expire(request, identifier):
    return services.transaction_expire(identifier=identifier)


@require_POST
@_api("refund", snap=False)
def refund(request, identifier):
    return services.transaction_refund(identifier=identifier, body=_json_body(request))


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
    if tx is None:
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
