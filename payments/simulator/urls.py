"""Mounted at /sandbox/midtrans/ by buatfilm/urls.py, only when MIDTRANS_SIMULATOR is on."""

from django.urls import path

from payments.simulator import views

app_name = "midtrans_simulator"

urlpatterns = [
    # Snap API (Midtrans host app.midtrans.com)
    path("snap/v1/transactions", views.snap_transactions, name="snap-create"),
    path("snap/v1/transactions/<str:token>/cancel", views.snap_cancel, name="snap-cancel"),
    # The payment page behind redirect_url
    path("snap/v4/redirection/<str:token>", views.payment_page, name="payment-page"),
    path("snap/v4/redirection/<str:token>/method", views.payment_method, name="payment-method"),
    path("snap/v4/redirection/<str:token>/action", views.payment_action, name="payment-action"),
    # Core API (Midtrans host api.midtrans.com)
    path("v2/<str:identifier>/status", views.status, name="status"),
    path("v2/<str:identifier>/cancel", views.cancel, name="cancel"),
    path("v2/<str:identifier>/expire", views.expire, name="expire"),
    path("v2/<str:identifier>/refund", views.refund, name="refund"),
    path("v2/<str:identifier>/approve", views.approve, name="approve"),
    path("v2/<str:identifier>/deny", views.deny, name="deny"),
    # Fault injection, settable while the server runs
    path("_faults", views.fault_control, name="faults"),
    # Anything else under the prefix: a JSON 404 in Midtrans' shape, never Django's HTML page.
    path("", views.not_served, name="not-served-root"),
    path("<path:rest>", views.not_served, name="not-served"),
]
