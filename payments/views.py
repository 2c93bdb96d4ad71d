"""The customer's pages: the landing page with the checkout form, and the order (finish) page.

Both are plain HTML with a little JavaScript that talks to the checkout API; they hold
no business rules.
"""

from django.http import Http404
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from common.money import rupiah_format
from payments import selectors


@require_GET
@never_cache
def landing(request):
    packages = [
        {
            "id": package.id,
            "name": package.name,
            "price": rupiah_format(package.price),
            "available": selectors.package_is_available(package=package),
        }
        for package in selectors.package_list_active()
    ]
    wanted = request.GET.get("package", "")
    selected = next((p for p in packages if p["id"] == wanted and p["available"]), None)
    selected = selected or next((p for p in packages if p["available"]), None)
    return render(
        request,
        "pages/landing.html",
        {"packages": packages, "selected_id": selected["id"] if selected else "", "any_available": bool(selected)},
    )


@require_GET
@never_cache
def order_page(request, order_id: str):
    # Midtrans appends ?order_id=&status_code=&transaction_status= to the finish URL; those
    # are untrusted and ignored: the page asks our API, which knows what really happened.
    order = selectors.order_get(order_id=order_id)
    if order is None:
        raise Http404("order not found")
    return render(
        request,
        "pages/order.html",
        {"order": order, "amount": rupiah_format(order.amount), "package": order.package},
    )
