from django.urls import path, re_path

from payments import api, views, webhooks

urlpatterns: list = [
    # Customer pages.
    path("", views.landing, name="landing"),
    path("orders/<str:order_id>/", views.order_page, name="order-page"),
    # Checkout API; the trailing slash is optional so a client never gets a redirect.
    re_path(r"^api/packages/?$", api.PackageListApi.as_view(), name="api-packages"),
    re_path(r"^api/checkout/?$", api.CheckoutApi.as_view(), name="api-checkout"),
    re_path(r"^api/orders/(?P<order_id>[A-Za-z0-9-]{1,32})/?$", api.OrderDetailApi.as_view(), name="api-order"),
    re_path(r"^api/orders/(?P<order_id>[A-Za-z0-9-]{1,32})/pay/?$", api.OrderPayApi.as_view(), name="api-order-pay"),
    # Both spellings route to the view: a redirect (APPEND_SLASH) would lose the notification.
    path("webhooks/midtrans", webhooks.midtrans_notification, name="midtrans-webhook"),
    path("webhooks/midtrans/", webhooks.midtrans_notification, name="midtrans-webhook-slash"),
]
