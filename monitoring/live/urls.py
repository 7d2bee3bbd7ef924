from django.urls import path

from . import views

app_name = "live"
urlpatterns = [
    path("", views.overview_page, name="live_overview"),
    path("sessions/", views.sessions_page, name="live_sessions"),
    path("drain/", views.drain_list, name="live_drain_list"),
    path("drain/<int:pk>/", views.drain_page, name="live_drain"),
    path("health/", views.health_page, name="live_health"),
]
