"""A URLconf with only the simulator, at the same /sandbox/midtrans/ prefix.

For the simulator's own tests (so they do not depend on the rest of the project's
routes) and for serving the simulator as a separate process
(`ROOT_URLCONF=payments.simulator.standalone_urls`).
"""

from django.urls import include, path

urlpatterns = [path("sandbox/midtrans/", include("payments.simulator.urls"))]
