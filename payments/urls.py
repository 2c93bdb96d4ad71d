from django.urls import path

from payments import webhooks

urlpatterns: list = [
    # Both spellings route to the view: a redirect (APPEND_SLASH) would lose the notification.
    path("webhooks/midtrans", webhooks.midtrans_notification, name="midtrans-webhook"),
    path("webhooks/midtrans/", webhooks.midtrans_notification, name="midtrans-webhook-slash"),
]
