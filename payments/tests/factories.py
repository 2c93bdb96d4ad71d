import factory
from django.utils import timezone

from payments.models import DiscountCode, Order, Package, PaymentAttempt


class PackageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Package
        django_get_or_create = ["id"]

    id = factory.Sequence(lambda n: f"package-{n}")
    name = factory.Sequence(lambda n: f"Paket {n}")
    price = 99000


class DiscountCodeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DiscountCode

    code = factory.Sequence(lambda n: f"HEMAT{n}")
    kind = DiscountCode.Kind.PERCENT
    value = 10


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Order

    package = factory.SubFactory(PackageFactory)
    customer_name = "Budi Santoso"
    customer_email = factory.Sequence(lambda n: f"budi{n}@example.com")
    customer_phone = "+6281234567890"
    list_price = factory.LazyAttribute(lambda o: o.package.price)
    discount_amount = 0
    amount = factory.LazyAttribute(lambda o: o.list_price - o.discount_amount)
    expires_at = factory.LazyFunction(lambda: timezone.now() + timezone.timedelta(days=1))


class PaymentAttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PaymentAttempt

    order = factory.SubFactory(OrderFactory)
    number = 1
    midtrans_order_id = factory.LazyAttribute(lambda a: f"{a.order.id}-{a.number}")
    amount = factory.LazyAttribute(lambda a: a.order.amount)
