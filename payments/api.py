"""The checkout REST API (contract: ../shared/design.md, "HTTP contract (v1)").

Thin views: parse the request, call one service, render. Every error has the shape
`{"error": {"code", "message", "fields"}}`; messages are for customers (Bahasa Indonesia).
"""

import ipaddress
import logging
import unicodedata

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from common.errors import error_body
from payments import selectors
from payments.models import DiscountCode, Order
from payments.services import checkout
from payments.services.discounts import MSG_UNKNOWN, discount_problem
from payments.services.idempotency import (
    MAX_KEY_LENGTH,
    IdempotencyClaim,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyReplay,
    idempotency_begin,
    idempotency_complete,
    idempotency_fingerprint,
    idempotency_release,
)

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


# --- Errors --------------------------------------------------------------------------------------


class ApiError(exceptions.APIException):
    """An error answered in the contract's shape."""

    def __init__(self, *, status_code: int, code: str, message: str, fields: dict | None = None, headers=None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.message = message
        self.fields = fields or {}
        self.headers = headers or {}


_CHECKOUT_ERROR_STATUS = {
    "invalid_request": status.HTTP_400_BAD_REQUEST,
    "sold_out": status.HTTP_409_CONFLICT,
    "already_owned": status.HTTP_409_CONFLICT,
    "already_paid": status.HTTP_409_CONFLICT,
    "order_expired": status.HTTP_409_CONFLICT,
    "payment_gateway_unavailable": status.HTTP_503_SERVICE_UNAVAILABLE,
}

_DRF_CODES = {
    exceptions.ParseError: ("invalid_request", "Isi permintaan bukan JSON yang valid."),
    exceptions.NotFound: ("not_found", "Tidak ditemukan."),
    exceptions.MethodNotAllowed: ("method_not_allowed", "Metode tidak diizinkan."),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", "Kirim data sebagai application/json."),
    exceptions.NotAcceptable: ("not_acceptable", "Format jawaban tidak tersedia."),
    exceptions.PermissionDenied: ("forbidden", "Akses ditolak."),
}


def _flatten_fields(detail) -> dict:
    """DRF's {field: [messages]} as {field: "first message"}."""
    if not isinstance(detail, dict):
        return {}
    flat = {}
    for field, messages in detail.items():
        if isinstance(messages, list | tuple) and messages:
            flat[field] = str(messages[0])
        elif isinstance(messages, dict):
            flat[field] = "; ".join(str(v[0] if isinstance(v, list) else v) for v in messages.values())
        else:
            flat[field] = str(messages)
    return flat


def api_exception_handler(exc, context):
    if isinstance(exc, checkout.CheckoutError):
        exc = _checkout_api_error(exc)
    elif isinstance(exc, Http404 | Order.DoesNotExist):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DatabaseError):
        # A database outage answers fast and retryable, never a 500 page.
        logger.error("api_database_error", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        exc = ApiError(
            status_code=503,
            code="service_unavailable",
            message="Layanan sedang gangguan. Silakan coba lagi sebentar lagi.",
            headers={"Retry-After": "5"},
        )

    response = drf_exception_handler(exc, context)  # keeps Retry-After for throttling
    if response is None:
        return None
    if isinstance(exc, ApiError):
        response.data = error_body(exc.error_code, exc.message, exc.fields)
        for name, value in exc.headers.items():
            response[name] = value
    elif isinstance(exc, exceptions.ValidationError):
        fields = _flatten_fields(exc.detail)
        non_field = fields.pop("non_field_errors", None)
        response.data = error_body("invalid_request", non_field or "Periksa kembali data yang Anda isi.", fields)
    elif isinstance(exc, exceptions.Throttled):
        wait = int(exc.wait) if exc.wait is not None else None
        message = "Terlalu banyak permintaan. " + (
            f"Silakan coba lagi dalam {wait} detik." if wait else "Silakan coba lagi nanti."
        )
        response.data = error_body("rate_limited", message)
    else:
        code, message = next(
            ((c, m) for cls, (c, m) in _DRF_CODES.items() if isinstance(exc, cls)),
            (getattr(exc, "default_code", "error"), str(getattr(exc, "detail", "Terjadi kesalahan."))),
        )
        response.data = error_body(code, message)
    return response


def _checkout_api_error(exc: checkout.CheckoutError) -> ApiError:
    headers = {}
    if isinstance(exc, checkout.GatewayUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    return ApiError(
        status_code=_CHECKOUT_ERROR_STATUS.get(exc.code, status.HTTP_400_BAD_REQUEST),
        code=exc.code,
        message=exc.message,
        fields=getattr(exc, "fields", None),
        headers=headers,
    )


# --- Client identity and rate limit ----------------------------------------------------------------


def client_ip(request) -> str | None:
    """The customer's IP: REMOTE_ADDR, or the address our own proxies put in X-Forwarded-For.

    Only the last TRUSTED_PROXY_COUNT hops are ours; anything left of them the client wrote.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    proxies = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0) or 0)
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    candidate = remote
    if proxies > 0 and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            candidate = hops[-min(proxies, len(hops))]
    try:
        return str(ipaddress.ip_address(candidate)) if candidate else None
    except ValueError:
        return remote


class CheckoutRateThrottle(SimpleRateThrottle):
    """CHECKOUT_RATE_LIMIT per client IP, read per request (so it can change without a restart)."""

    scope = "checkout"

    def get_rate(self):
        return settings.CHECKOUT_RATE_LIMIT or None

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": client_ip(request) or "unknown"}

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except Exception:
            # The counters live in Redis; losing Redis must not stop people from paying.
            logger.warning("checkout_throttle_unavailable", exc_info=True)
            return True


# --- Views -----------------------------------------------------------------------------------------


class ApiView(APIView):
    def get_exception_handler(self):
        return api_exception_handler


class PackageOutput(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    price = serializers.IntegerField()
    currency = serializers.CharField()
    available = serializers.SerializerMethodField()

    def get_available(self, package) -> bool:
        return selectors.package_is_available(package=package)


class PackageListApi(ApiView):
    def get(self, request):
        packages = selectors.package_list_active()
        return Response(PackageOutput(packages, many=True).data)


# The order answers are built as plain dicts: two fields each, where an output serializer
# per request cost more CPU than the rest of the rendering.
def _package_ref(package) -> dict:
    return {"id": package.id, "name": package.name}


def _payment(attempt) -> dict | None:
    return {"token": attempt.snap_token, "redirect_url": attempt.redirect_url} if attempt is not None else None


# Dates as DRF renders them everywhere (ISO 8601 in the current time zone); stateless, so shared.
_DATETIME = serializers.DateTimeField()


def _order_payload(order: Order, attempt) -> dict:
    return {
        "order_id": order.id,
        "status": order.status,
        "amount": order.amount,
        "currency": order.currency,
        "package": _package_ref(order.package),
        "payment": _payment(attempt),
        "expires_at": _DATETIME.to_representation(order.expires_at),
    }


class CheckoutApi(ApiView):
    throttle_classes = [CheckoutRateThrottle]

    class InputSerializer(serializers.Serializer):
        package_id = serializers.CharField(
            max_length=50,
            error_messages={"required": "Pilih paket.", "blank": "Pilih paket.", "invalid": "Pilih paket."},
        )
        name = serializers.CharField(
            max_length=100,
            trim_whitespace=True,
            error_messages={
                "required": "Nama wajib diisi.",
                "blank": "Nama wajib diisi.",
                "max_length": "Nama paling panjang 100 karakter.",
                "invalid": "Nama harus berupa teks.",
            },
        )
        email = serializers.EmailField(
            max_length=254,
            error_messages={
                "required": "Email wajib diisi.",
                "blank": "Email wajib diisi.",
                "invalid": "Alamat email tidak valid.",
                "max_length": "Alamat email terlalu panjang.",
            },
        )
        phone = serializers.CharField(
            max_length=32,
            error_messages={
                "required": "Nomor WhatsApp wajib diisi.",
                "blank": "Nomor WhatsApp wajib diisi.",
                "max_length": checkout.MSG_PHONE_INVALID,
                "invalid": checkout.MSG_PHONE_INVALID,
            },
        )
        discount_code = serializers.CharField(
            max_length=40,
            required=False,
            allow_blank=True,
            allow_null=True,
            default="",
            error_messages={"max_length": MSG_UNKNOWN, "invalid": MSG_UNKNOWN},
        )

        def _package(self, package_id: str):
            # Read once per request, together with what checkout decides first about this
            # customer: the discount code is checked against the same package, and the
            # checkout service takes it from here (checked_package) instead of reading again.
            packages = self.__dict__.setdefault("_packages", {})
            if package_id not in packages:
                email = str(self.initial_data.get("email") or "").strip().lower()
                if "\x00" in email or len(email) > 254:
                    # Not validated yet, and PostgreSQL refuses a NUL in text: read without it
                    # (the email field reports the problem; the service reads again anyway).
                    email = ""
                packages[package_id] = selectors.package_for_checkout(package_id=package_id, email=email)
            return packages[package_id]

        def checked_package(self):
            """The package validate_package_id checked (after is_valid())."""
            return self.__dict__.get("_packages", {}).get(self.validated_data["package_id"])

        def validate_package_id(self, value):
            problem = checkout.package_problem(package=self._package(value))
            if problem:
                raise serializers.ValidationError(problem)
            return value

        def validate_name(self, value):
            # Names go into emails and WhatsApp messages: no line breaks or control characters.
            if any(unicodedata.category(ch).startswith("C") for ch in value):
                raise serializers.ValidationError("Nama mengandung karakter yang tidak diizinkan.")
            return " ".join(value.split())

        def validate_email(self, value):
            return value.strip().lower()

        def validate_phone(self, value):
            try:
                return checkout.phone_normalize(raw=value)
            except ValueError as exc:
                raise serializers.ValidationError(str(exc)) from exc

        def validate_discount_code(self, value):
            value = DiscountCode.code_normalize(value)
            if not value:
                return ""
            discount = selectors.discount_get(code=value)
            if discount is None:
                raise serializers.ValidationError(MSG_UNKNOWN)
            # Checked per field (not in validate()) so every bad field is named in one answer.
            package = self._package(str(self.initial_data.get("package_id") or ""))
            if package is not None:
                problem = discount_problem(discount=discount, package=package)
                if problem:
                    raise serializers.ValidationError(problem)
            return value

    def post(self, request):
        key = request.headers.get(IDEMPOTENCY_HEADER)
        data = request.data
        if not isinstance(data, dict):
            raise ApiError(status_code=400, code="invalid_request", message="Isi permintaan harus objek JSON.")
        if key is None:
            return self._checkout(request, data, claim=None)

        key = key.strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ApiError(
                status_code=400,
                code="invalid_request",
                message="Idempotency-Key tidak valid.",
                fields={IDEMPOTENCY_HEADER: f"Harus 1-{MAX_KEY_LENGTH} karakter."},
            )
        try:
            claim = idempotency_begin(scope="checkout", key=key, fingerprint=idempotency_fingerprint(data=data))
        except IdempotencyKeyReused as exc:
            raise ApiError(
                status_code=422,
                code="idempotency_key_reused",
                message="Idempotency-Key ini sudah dipakai untuk permintaan lain.",
            ) from exc
        except IdempotencyKeyInUse as exc:
            raise ApiError(
                status_code=409,
                code="idempotency_key_in_use",
                message="Permintaan Anda sebelumnya masih diproses. Coba lagi sebentar lagi.",
                headers={"Retry-After": "1"},
            ) from exc
        if isinstance(claim, IdempotencyReplay):
            return Response(claim.body, status=claim.status, headers={REPLAYED_HEADER: "true"})

        try:
            response = self._checkout(request, data, claim=claim)
        except Exception as exc:
            order_id = getattr(exc, "order_id", None)
            try:
                handled = self.handle_exception(exc)
            except Exception:
                # An unexpected error (a 500): store nothing, let a retry run again.
                idempotency_release(claim=claim, order_id=order_id)
                raise
            self._idempotency_finish(claim, handled, order_id=order_id)
            return handled
        self._idempotency_finish(claim, response, order_id=response.data.get("order_id"))
        return response

    def _checkout(self, request, data, *, claim: IdempotencyClaim | None) -> Response:
        if claim is not None and claim.order_id:
            # An earlier try with this key (and this very body) made the order: resume it.
            result = checkout.checkout_start(package_id="", name="", email="", phone="", resume_order_id=claim.order_id)
        else:
            serializer = self.InputSerializer(data=data)
            serializer.is_valid(raise_exception=True)
            result = checkout.checkout_start(
                **serializer.validated_data,
                package=serializer.checked_package(),
                meta=checkout.RequestMeta(
                    client_ip=client_ip(request),
                    user_agent=request.META.get("HTTP_USER_AGENT", ""),
                    referrer=request.META.get("HTTP_REFERER", ""),
                ),
            )
        body = _order_payload(result.order, result.attempt)
        body["reused"] = not result.created
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)

    def _idempotency_finish(self, claim: IdempotencyClaim, response: Response, *, order_id: str | None) -> None:
        # Stored: what the endpoint decided (201, 200, 409 sold_out / already_owned).
        # Not stored: input errors (nothing started) and 503s (retry resumes the order).
        try:
            if response.status_code in (400, 503) or response.status_code >= 500:
                idempotency_release(claim=claim, order_id=order_id)
            else:
                idempotency_complete(claim=claim, status=response.status_code, body=response.data, order_id=order_id)
        except DatabaseError:
            logger.exception("idempotency_finish_failed", extra={"order_id": order_id})


class OrderDetailApi(ApiView):
    def get(self, request, order_id: str):
        order = selectors.order_get(order_id=order_id)
        if order is None:
            raise exceptions.NotFound()
        attempt = selectors.attempt_payable(order=order)
        return Response(
            {
                "order_id": order.id,
                "status": order.status,
                "amount": order.amount,
                "currency": order.currency,
                "package": _package_ref(order.package),
                "created_at": _DATETIME.to_representation(order.created_at),
                "paid_at": _DATETIME.to_representation(order.paid_at) if order.paid_at else None,
                "expires_at": _DATETIME.to_representation(order.expires_at),
                "payment": _payment(attempt),
            }
        )


class OrderPayApi(ApiView):
    throttle_classes = [CheckoutRateThrottle]

    def post(self, request, order_id: str):
        result = checkout.order_pay(order_id=order_id)
        body = _order_payload(result.order, result.attempt)
        return Response(body, status=status.HTTP_201_CREATED if result.new_attempt else status.HTTP_200_OK)
