from django.urls import path

from entitlements.api import EntitlementCheckApi

urlpatterns = [
    path("api/entitlements/check/", EntitlementCheckApi.as_view(), name="entitlement-check"),
]
