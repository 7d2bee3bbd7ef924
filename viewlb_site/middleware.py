"""Every page needs a login; the login page and static files are the only exceptions."""
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.urls import reverse

PUBLIC_PATHS = ("/accounts/login/", "/healthz")


class LoginRequiredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info
        public = path.startswith(PUBLIC_PATHS) or path.startswith(settings.STATIC_URL)
        if not public and not request.user.is_authenticated:
            if path.startswith("/api/"):
                from django.http import JsonResponse

                return JsonResponse({"error": "authentication required"}, status=401)
            return redirect_to_login(request.get_full_path(), reverse(settings.LOGIN_URL))
        return self.get_response(request)
