from django.shortcuts import render
from django.views.generic import ListView

from . import published, trace
from .forms import TraceForm
from .live.views import needs_redis
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


@needs_redis
def trace_page(request):
    """Where a client would land now on each VIP, and why (any logged-in user may ask)."""
    current = published.load()
    snapshot = current.snapshot if current else None
    asked = "client" in request.GET
    form = TraceForm(request.GET if asked else None, snapshot)
    result = None
    if asked and form.is_valid():
        data = form.cleaned_data
        result = trace.run(data["client"], data["cookie"], data["vs"])
    return render(request, "monitoring/trace.html", {"form": form, "trace": result, "published": snapshot})
