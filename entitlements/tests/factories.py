import factory
from django.utils import timezone

from entitlements.models import Entitlement


class EntitlementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Entitlement

    email = factory.Sequence(lambda n: f"siswa{n}@example.com")
    course_code = "ai-movie-course"
    order_id = factory.Sequence(lambda n: f"BF-20261122-TEST{n:04d}")
    granted_at = factory.LazyFunction(timezone.now)
