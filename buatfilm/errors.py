"""The project's 404 and 500 handlers (Django's handler404 / handler500).

A database outage reaches handler500 from wherever it was raised (a view, the session or auth
middleware, the admin): it answers 503 with Retry-After, never a 500. Machine clients (API,
webhook, metrics, health) get the contract's JSON error; people get an Indonesian page. The
pages are rendered without the request context, so they touch no database and no session.
"""

import logging
import sys

from django.db import DatabaseError
from django.http import HttpResponse, JsonResponse
from django.template import loader

from common.errors import error_response

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "5"
JSON_PATH_PREFIXES = ("/api/", "/webhooks/", "/metrics", "/health", "/sandbox/")


def _wants_json(request) -> bool:
    return request.path.startswith(JSON_PATH_PREFIXES)


def _json_error(status: int, code: str, message: str) -> JsonResponse:
    return error_response(status, code, message)


def _page(template: str, status: int) -> HttpResponse:
    return HttpResponse(loader.get_template(template).render({}), status=status)


def service_unavailable(request) -> HttpResponse:
    if _wants_json(request):
        response = _json_error(503, "service_unavailable", "Layanan sedang gangguan. Silakan coba lagi sebentar lagi.")
    else:
        response = _page("503.html", 503)
    response["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def server_error(request) -> HttpResponse:
    # Called inside Django's `except` block for the request, so the exception is at hand.
    exc = sys.exc_info()[1]
    if isinstance(exc, DatabaseError):
        logger.error("request_database_unavailable", extra={"path": request.path, "error": type(exc).__name__})
        return service_unavailable(request)
    if _wants_json(request):
        return _json_error(500, "internal_error", "Terjadi kesalahan di server.")
    return _page("500.html", 500)


def page_not_found(request, exception) -> HttpResponse:
    if _wants_json(request):
        return _json_error(404, "not_found", "Tidak ditemukan.")
    return _page("404.html", 404)
