"""Project-level admin pieces (the apps' admin base classes are in common.admin)."""


class AdminLanguageMiddleware:
    """Activate settings.ADMIN_LANGUAGE for the admin, so Django's own admin text and ours are
    one language; the rest of the site keeps LANGUAGE_CODE (Bahasa Indonesia)."""

    def __init__(self, get_response):
        from django.conf import settings

        self.get_response = get_response
        self.prefix = "/admin/"
        self.language = settings.ADMIN_LANGUAGE

    def __call__(self, request):
        from django.utils import translation

        if not request.path.startswith(self.prefix):
            return self.get_response(request)
        with translation.override(self.language):
            response = self.get_response(request)
            response.headers.setdefault("Content-Language", self.language)
            return response
