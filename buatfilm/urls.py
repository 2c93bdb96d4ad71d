from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from buatfilm import health, metrics
from entitlements.views import demo_course_page

urlpatterns = [
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("health", health.details, name="health"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("", include("payments.urls")),
    path("", include("entitlements.urls")),
]

if settings.MIDTRANS_SIMULATOR:
    # The local Midtrans stand-in; never mounted in production (start-up checks refuse it there).
    urlpatterns.append(path("sandbox/midtrans/", include("payments.simulator.urls")))
    # Where the demo's default COURSE_ACCESS_URL leads, so the "paid" message's link works.
    urlpatterns.append(path("course/<slug:course>", demo_course_page, name="demo-course"))

# Indonesian pages for people, the contract's JSON for machines; a database outage is a 503.
handler404 = "buatfilm.errors.page_not_found"
handler500 = "buatfilm.errors.server_error"
