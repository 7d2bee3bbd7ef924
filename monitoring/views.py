from django.views.generic import ListView

from .models import HealthEvent


class HealthEventList(ListView):
    """The health events timeline, newest first; ?pool= and ?server= narrow it down."""

    model = HealthEvent
    paginate_by = 50
    template_name = "monitoring/event_list.html"
    context_object_name = "events"

    def get_queryset(self):
        events = HealthEvent.objects.all()
        for field, param in (("pool", "pool"), ("server_id", "server")):
            value = self.request.GET.get(param, "").strip()
            if value:
                events = events.filter(**{field: value})
        return events

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["pool"] = self.request.GET.get("pool", "").strip()
        context["server"] = self.request.GET.get("server", "").strip()
        context["filter_query"] = self.request.GET.copy()
        context["filter_query"].pop("page", None)
        return context
