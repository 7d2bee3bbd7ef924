"""WebSocket routes of the live dashboards (viewlb_site/asgi.py checks the Origin and loads the user)."""
from django.urls import path

from monitoring.live import consumers

websocket_urlpatterns = [
    path("ws/live/overview/", consumers.OverviewConsumer.as_asgi()),
    path("ws/live/sessions/", consumers.SessionsConsumer.as_asgi()),
    path("ws/live/drain/<int:pk>/", consumers.DrainConsumer.as_asgi()),
    path("ws/live/health/", consumers.HealthConsumer.as_asgi()),
]
