"""package_for_checkout: the package, the customer's open order of it and whether they own the
course, read in one query (checkout's first read), and how the API hands it to the service."""

import sqlite3

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from entitlements.models import Entitlement
from payments.models import AuditEntry, Order, OrderStatus, Package, PaymentAttempt
from payments.selectors import package_for_checkout
from payments.services.checkout import AlreadyOwned, RequestMeta, open_order_conflict, order_create
from payments.tests.checkout_support import checkout_body, launch_package_ensure
from payments.tests.factories import OrderFactory, PackageFactory

pytestmark = pytest.mark.django_db

EMAIL = "budi@example.com"


def entitlement_create(*, email=EMAIL, course_code="kelas-film", status="active", order_id="BF-OLD-1"):
    revoked_at = timezone.now() if status == "revoked" else None
    return Entitlement.objects.create(
        email=email,
        course_code=course_code,
        order_id=order_id,
        granted_at=timezone.now(),
        status=status,
        revoked_at=revoked_at,
    )


def _budi_checks_out(*, package=None):
    return order_create(
        package_id="kelas-film", name="Budi", email=EMAIL, phone="+6281234567890", meta=RequestMeta(), package=package
    )


def test_package_comes_back_whole_with_nothing_open_and_nothing_owned():
    # given
    PackageFactory(id="kelas-film", name="Kelas Film", price=150000, capacity=3, course_code="kursus-film")

    # when
    with CaptureQueriesContext(connection) as queries:
        package = package_for_checkout(package_id="kelas-film", email=EMAIL)

    # then
    assert len(queries) == 1
    assert (package.id, package.name, package.price, package.currency, package.is_active) == (
        "kelas-film",
        "Kelas Film",
        150000,
        "IDR",
        True,
    )
    assert (package.capacity, package.course_code, package.created_at.tzinfo is not None) == (3, "kursus-film", True)
    assert (package.open_order_id, package.owned) == (None, False)


def test_package_is_the_instance_the_orm_reads():
    PackageFactory(id="kelas-film", capacity=None, is_active=False)
    ours = package_for_checkout(package_id="kelas-film", email=EMAIL)
    orm = Package.objects.get(id="kelas-film")
    fields = [f.attname for f in Package._meta.concrete_fields]
    assert [getattr(ours, name) for name in fields] == [getattr(orm, name) for name in fields]
    assert (ours._state.adding, ours._state.db) == (False, orm._state.db)


def test_unknown_package_is_none():
    assert package_for_checkout(package_id="tidak-ada", email=EMAIL) is None


@pytest.mark.parametrize("status", [OrderStatus.CREATED, OrderStatus.PENDING_PAYMENT])
def test_open_order_of_this_email_and_package_is_named(status):
    package = PackageFactory(id="kelas-film")
    order = OrderFactory(package=package, customer_email=EMAIL, status=status)

    assert package_for_checkout(package_id="kelas-film", email=EMAIL).open_order_id == order.id


@pytest.mark.parametrize("status", [OrderStatus.PAID, OrderStatus.EXPIRED, OrderStatus.FAILED, OrderStatus.CANCELLED])
def test_closed_orders_are_not_open_orders(status):
    package = PackageFactory(id="kelas-film")
    paid_at = timezone.now() if status == OrderStatus.PAID else None
    OrderFactory(package=package, customer_email=EMAIL, status=status, paid_at=paid_at)

    assert package_for_checkout(package_id="kelas-film", email=EMAIL).open_order_id is None


def test_open_orders_of_other_emails_or_packages_do_not_count():
    package = PackageFactory(id="kelas-film")
    OrderFactory(package=package, customer_email="siti@example.com", status=OrderStatus.PENDING_PAYMENT)
    OrderFactory(package=PackageFactory(id="kelas-lain"), customer_email=EMAIL, status=OrderStatus.PENDING_PAYMENT)

    assert package_for_checkout(package_id="kelas-film", email=EMAIL).open_order_id is None


def test_owned_means_an_active_entitlement_to_the_package_course():
    PackageFactory(id="kelas-film", course_code="kursus-film")
    entitlement_create(course_code="kursus-film")

    assert package_for_checkout(package_id="kelas-film", email=EMAIL).owned is True


def test_revoked_or_other_course_or_other_email_entitlements_do_not_count():
    PackageFactory(id="kelas-film", course_code="kursus-film")
    entitlement_create(course_code="kursus-film", status="revoked", order_id="BF-OLD-1")
    entitlement_create(course_code="kursus-lain", order_id="BF-OLD-2")
    entitlement_create(email="siti@example.com", course_code="kursus-film", order_id="BF-OLD-3")

    assert package_for_checkout(package_id="kelas-film", email=EMAIL).owned is False


# --- its answer, handed from the API's validation to the checkout service ----------------------------


def test_order_create_trusts_a_package_read_only_for_the_same_email():
    # given the package as validation read it for another customer, who owns the course
    PackageFactory(id="kelas-film", course_code="kursus-film")
    entitlement_create(email="siti@example.com", course_code="kursus-film")
    read_for_siti = package_for_checkout(package_id="kelas-film", email="siti@example.com")
    assert read_for_siti.owned

    # when Budi checks out with it
    order, attempt = _budi_checks_out(package=read_for_siti)

    # then Budi's own situation decided: he does not own the course
    assert (order.customer_email, attempt.number) == (EMAIL, 1)


def test_order_create_uses_a_package_read_for_this_email_without_reading_it_again():
    PackageFactory(id="kelas-film", course_code="kursus-film")
    entitlement_create(course_code="kursus-film")
    read_for_budi = package_for_checkout(package_id="kelas-film", email=EMAIL)

    with CaptureQueriesContext(connection) as queries, pytest.raises(AlreadyOwned):
        order_create(
            package_id="kelas-film",
            name="Budi",
            email="  Budi@Example.com ",
            phone="+6281234567890",
            meta=RequestMeta(),
            package=read_for_budi,
        )

    assert not [q for q in queries if '"payments_package"' in q["sql"]]


@pytest.mark.django_db(transaction=True)  # the simulator answers Snap from the live server's thread
def test_api_checkout_reads_the_package_once(midtrans_sim, client):
    # given
    launch_package_ensure()

    # when
    with CaptureQueriesContext(connection) as queries:
        response = client.post("/api/checkout/", checkout_body(), content_type="application/json")

    # then
    assert response.status_code == 201, response.content
    assert len([q for q in queries if 'FROM "payments_package"' in q["sql"]]) == 1


def test_open_order_committed_after_the_package_was_read_is_reused_not_duplicated(caplog):
    # given the package read before a concurrent request (a double click) made the open order
    PackageFactory(id="kelas-film")
    read_before = package_for_checkout(package_id="kelas-film", email=EMAIL)
    first, _ = _budi_checks_out()

    # when this request inserts its order (the open-order constraint refuses it)
    order, attempt = _budi_checks_out(package=read_before)

    # then the other request's order is the answer, and nothing else was written
    assert "checkout_open_order_race" in caplog.messages
    assert (order.id, attempt) == (first.id, None)
    assert Order.objects.count() == 1 and PaymentAttempt.objects.count() == 1
    assert AuditEntry.objects.filter(action__in=["order_created", "attempt_created"]).count() == 2


def test_open_order_paid_after_the_package_was_read_makes_the_customer_an_owner():
    # given the API's read saw an open order, not yet paid
    package = PackageFactory(id="kelas-film", course_code="kursus-film", capacity=None)
    pending = OrderFactory(package=package, customer_email=EMAIL, status=OrderStatus.PENDING_PAYMENT)
    snapshot = package_for_checkout(package_id="kelas-film", email=EMAIL)
    assert snapshot.open_order_id == pending.id and not snapshot.owned
    # and the webhook then committed its payment and the entitlement
    Order.objects.filter(pk=pending.pk).update(status=OrderStatus.PAID, paid_at=timezone.now())
    entitlement_create(course_code="kursus-film", order_id=pending.id)

    # when the checkout goes on with the package it read
    with pytest.raises(AlreadyOwned):
        _budi_checks_out(package=snapshot)

    # then no second order was sold
    assert list(Order.objects.values_list("id", flat=True)) == [pending.id]


@pytest.mark.parametrize("email", ["budi\x00@example.com", "b" * 250 + "@example.com"])
def test_api_checkout_with_a_nul_or_overlong_email_is_a_400_that_changes_nothing(client, email):
    # given
    launch_package_ensure()

    # when
    response = client.post(
        "/api/checkout/", checkout_body() | {"email": email}, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k1"
    )

    # then
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert "email" in response.json()["error"]["fields"]
    assert not Order.objects.exists()
    assert not PaymentAttempt.objects.exists()
    assert not AuditEntry.objects.exists()


def _insert_error(**fields) -> IntegrityError:
    with pytest.raises(IntegrityError) as error, transaction.atomic():
        OrderFactory(**fields)
    return error.value


def test_open_order_conflict_is_the_constraint_postgresql_names_not_words_in_its_message():
    # given a customer's open order, and a name that spells the constraint's name
    package = PackageFactory(id="kelas-film")
    sneaky = "order_one_open_per_email_package"
    OrderFactory(package=package, customer_email=EMAIL, status=OrderStatus.PENDING_PAYMENT)

    # when PostgreSQL refuses a second open order, and an order that breaks another rule
    second_open = _insert_error(package=package, customer_email=EMAIL, status=OrderStatus.CREATED)
    bad_amount = _insert_error(package=package, customer_email="siti@example.com", customer_name=sneaky, amount=0)

    # then only the first is the open-order race (the other's message quotes the name)
    assert sneaky in str(bad_amount)
    assert open_order_conflict(second_open)
    assert not open_order_conflict(bad_amount)


def test_open_order_conflict_is_recognised_in_sqlite_words():
    # given the same partial unique index in SQLite (the demo's database), refusing a second open order
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE payments_order (id TEXT UNIQUE, customer_email TEXT, package_id TEXT, status TEXT)")
    db.execute(
        "CREATE UNIQUE INDEX order_one_open_per_email_package ON payments_order (customer_email, package_id) "
        "WHERE status IN ('CREATED', 'PENDING_PAYMENT')"
    )
    db.execute("INSERT INTO payments_order VALUES ('A', 'budi@example.com', 'kelas-film', 'PENDING_PAYMENT')")
    with pytest.raises(sqlite3.IntegrityError) as open_twice:
        db.execute("INSERT INTO payments_order VALUES ('B', 'budi@example.com', 'kelas-film', 'CREATED')")
    with pytest.raises(sqlite3.IntegrityError) as same_id:
        db.execute("INSERT INTO payments_order VALUES ('A', 'siti@example.com', 'kelas-film', 'CREATED')")

    # then SQLite's words for the open-order index are the race, and another unique key's are not
    assert open_order_conflict(IntegrityError(str(open_twice.value)))
    assert not open_order_conflict(IntegrityError(str(same_id.value)))
