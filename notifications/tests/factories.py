import factory

from notifications.models import Notification


class NotificationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Notification

    channel = Notification.Channel.EMAIL
    template = "payment_received"
    recipient = factory.Sequence(lambda n: f"budi{n}@example.com")
    subject = "Pembayaran diterima"
    body_text = "Terima kasih, pembayaran Anda sudah kami terima."
    dedupe_key = factory.Sequence(lambda n: f"test:{n}:email")
