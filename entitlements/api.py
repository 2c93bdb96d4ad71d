"""The API the course platform (LMS) asks: may this email watch this course?"""

import hmac

from django.conf import settings
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from common.errors import error_body
from entitlements.selectors import entitlement_for


def _error(*, http_status: int, code: str, message: str, fields: dict | None = None) -> Response:
    response = Response(error_body(code, message, fields), status=http_status)
    if http_status == status.HTTP_401_UNAUTHORIZED:
        response["WWW-Authenticate"] = 'Bearer realm="entitlements"'
    return response


def _bearer_token_valid(request) -> bool:
    expected = settings.ENTITLEMENTS_API_TOKEN
    if not expected:
        return False  # no token configured: the API is closed, never open
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode(), expected.encode())


class EntitlementCheckApi(APIView):
    class InputSerializer(serializers.Serializer):
        email = serializers.EmailField(max_length=254)
        course = serializers.SlugField(max_length=50)

    class OutputSerializer(serializers.Serializer):
        email = serializers.EmailField()
        course = serializers.CharField()
        active = serializers.BooleanField()
        granted_at = serializers.DateTimeField(allow_null=True)
        order_id = serializers.CharField(allow_null=True)

    def get(self, request):
        if not _bearer_token_valid(request):
            return _error(
                http_status=status.HTTP_401_UNAUTHORIZED,
                code="unauthorized",
                message="A valid 'Authorization: Bearer <token>' header is required.",
            )
        given = self.InputSerializer(data=request.query_params)
        if not given.is_valid():
            return _error(
                http_status=status.HTTP_400_BAD_REQUEST,
                code="invalid_request",
                message="Query parameters 'email' and 'course' are required.",
                fields={name: [str(e) for e in errors] for name, errors in given.errors.items()},
            )
        email = given.validated_data["email"].lower()
        course = given.validated_data["course"]
        entitlement = entitlement_for(email=email, course_code=course)
        active = entitlement is not None and entitlement.status == entitlement.Status.ACTIVE
        output = self.OutputSerializer(
            {
                "email": email,
                "course": course,
                "active": active,
                "granted_at": entitlement.granted_at if active else None,
                "order_id": entitlement.order_id if active else None,
            }
        )
        return Response(output.data)
