"""The contract's error shape, for every JSON answer that is not a success (design.md, HTTP
contract): {"error": {"code": ..., "message": ..., "fields": {...}}}."""

from django.http import JsonResponse


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def error_response(status: int, code: str, message: str, fields: dict | None = None) -> JsonResponse:
    return JsonResponse(error_body(code, message, fields), status=status)
