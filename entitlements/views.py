"""The demo's course page: where the default COURSE_ACCESS_URL leads (the local demo only;
production sets COURSE_ACCESS_URL to the course platform, a start-up check requires it)."""

from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from entitlements.selectors import access_token_email, entitlement_for


@require_GET
@never_cache
def demo_course_page(request, course: str):
    email = access_token_email(token=request.GET.get("token", ""))
    entitlement = entitlement_for(email=email, course_code=course) if email else None
    active = entitlement is not None and entitlement.status == entitlement.Status.ACTIVE
    return render(request, "pages/course.html", {"course": course, "active": active}, status=200 if active else 403)
