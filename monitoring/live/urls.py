from django.urls import path

from . import views

app_name = "live"
urlpatterns = [
    path("", views.overview_page, name="live_overview"),
    path("sessions/", views.sessions_page, name="live_sessions"),
    path("horizon/", views.horizon_sessions_page, name="live_horizon_sessions"),
    path("horizon/kill/", views.horizon_kill, name="live_horizon_kill"),
    path("horizon/move/", views.horizon_move, name="live_horizon_move"),
    path("drain/", views.drain_list, name="live_drain_list"),
    path("drain/<int:pk>/", views.drain_page, name="live_drain"),
    path("health/", views.health_page, name="live_health"),
]
