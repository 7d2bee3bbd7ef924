from django.contrib.auth import views as auth_views
from django.http import HttpResponse
from django.urls import include, path

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", lambda request: HttpResponse("ok\n", content_type="text/plain"), name="healthz"),
    path("monitoring/", include("monitoring.urls")),
    path("", include("balancer.urls")),
]
