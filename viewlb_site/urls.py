from django.contrib.auth import views as auth_views
from django.http import HttpResponse
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", lambda request: HttpResponse("ok\n", content_type="text/plain"), name="healthz"),
    path("monitoring/", include("monitoring.urls")),
    path("live/", include("monitoring.live.urls")),
    path("", RedirectView.as_view(pattern_name="live:live_overview"), name="home"),  # the overview is home
    path("", include("balancer.urls")),
]
