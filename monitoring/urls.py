from django.urls import path

from . import views

app_name = "monitoring"
urlpatterns = [
    path("events/", views.HealthEventList.as_view(), name="events"),
    path("trace/", views.trace_page, name="trace"),
]
