"""Reads for checkout, the order API and the pages. Writes live in payments/services/."""

from datetime import datetime

from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from entitlements.models import Entitlement
from payments.models import DiscountCode, Order, OrderStatus, Package, PaymentAttempt
from payments.states import PAID_ORDER_STATUSES, PAYABLE_ATTEMPT_STATUSES


def package_list_active() -> QuerySet[Package]:
    return Package.objects.filter(is_active=True).order_by("price", "id")


def package_seats_taken(*, package: Package, now: datetime | None = None) -> int:
    """Paid orders plus live open orders: the seats no one else may buy right now."""
    now = now or timezone.now()
    return Order.objects.filter(
        Q(status__in=PAID_ORDER_STATUSES) | Q(status__in=Order.OPEN_STATUSES, expires_at__gt=now),
        package=package,
    ).count()


def package_is_available(*, package: Package, now: datetime | None = None) -> bool:
    if not package.is_active:
        return False
    if package.capacity is None:
        return True
    return package_seats_taken(package=package, now=now) < package.capacity


def package_for_checkout(*, package_id: str, email: str) -> Package | None:
    """The package, annotated with what checkout decides first about this customer, in one query:

    - `open_order_id`: the customer's open order of this package (live or stale), or None;
    - `owned`: whether the customer already has active access to the package's course (read
      directly: payments -> entitlements is the allowed direction);
    - `checkout_email`: the email those two are about.
    """
    open_order = Order.objects.filter(
        customer_email=email, package=OuterRef("pk"), status__in=Order.OPEN_STATUSES
    ).values("pk")[:1]
    owned = Entitlement.objects.filter(
        email=email, course_code=OuterRef("course_code"), status=Entitlement.Status.ACTIVE
    )
    package = (
        Package.objects.annotate(open_order_id=Subquery(open_order), owned=Exists(owned)).filter(pk=package_id).first()
    )
    if package is not None:
        package.checkout_email = email
    return package


def order_open_for(*, email: str, package_id: str) -> Order | None:
    """The (at most one, by constraint) open order of this email for this package, live or stale."""
    return Order.objects.filter(customer_email=email, package_id=package_id, status__in=Order.OPEN_STATUSES).first()


def order_get(*, order_id: str) -> Order | None:
    return Order.objects.select_related("package").filter(id=order_id).first()


def attempt_payable(*, order: Order) -> PaymentAttempt | None:
    """The attempt whose Snap page the customer should use, while the order is payable."""
    if order.status != OrderStatus.PENDING_PAYMENT:
        return None
    return (
        PaymentAttempt.objects.filter(order=order, status__in=PAYABLE_ATTEMPT_STATUSES)
        .exclude(snap_token="")
        .order_by("-number")
        .first()
    )


def discount_get(*, code: str) -> DiscountCode | None:
    code = DiscountCode.code_normalize(code)
    if not code:
        return None
    return DiscountCode.objects.select_related("package").filter(code=code).first()
