"""Dashboard pages. Each renders its current state from Redis and the database; the page's script
then opens the matching WebSocket (consumers.py) and applies live deltas."""
import functools
import time

import redis
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from balancer.models import RealServer
from balancer.roles import can_operate
from monitoring import published, services
from monitoring.models import HealthEvent

from . import control, drain, horizon, overview, present, sources, tables
from .forms import HorizonFilterForm, SessionActionForm, SessionFilterForm

RECENT_EVENTS = 50


def needs_redis(view):
    """Redis holds everything these pages show: without it, say so plainly (503) instead of a server error."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except redis.RedisError as exc:
            return render(request, "live/unavailable.html", {"error": exc, "redis_url": settings.REDIS_URL},
                          status=503)

    return wrapper


@needs_redis
def overview_page(request):
    return render(request, "live/overview.html", {"overview": overview.build()})


@needs_redis
def sessions_page(request):
    current = published.load()
    snapshot = current.snapshot if current else None
    form = SessionFilterForm(request.GET, snapshot)
    table = None
    if form.is_valid():
        data, flt = form.cleaned_data, form.filter()
        read = tables.persistence if data["table"] == "persistence" else tables.connections
        table = read(published.redis_client(), published.keys(), snapshot, flt, data["after"])
    return render(request, "live/sessions.html", {
        "form": form, "table": table, "published": snapshot is not None,
        "kind": form.cleaned_data.get("table", "connections") if form.is_valid() else "connections",
    })


@needs_redis
def drain_list(request):
    client, keys = published.redis_client(), published.keys()
    servers = list(RealServer.objects.select_related("pool").order_by("pool__name", "name"))
    health = services.server_health([s.server_id for s in servers])
    sessions = sources.session_totals(client, keys)
    sticky = sources.persist_totals(client, keys)
    rows = [{"server": s, "health": health.get(s.server_id, {}), "sessions": sessions.by_server.get(s.server_id, 0),
             "sticky": sticky.for_host(s.address)} for s in servers]
    return render(request, "live/drain_list.html", {"rows": rows})


@needs_redis
def drain_page(request, pk):
    server = get_object_or_404(RealServer.objects.select_related("pool"), pk=pk)
    verdict, sample = drain.status(server.server_id, server.address, server.admin_state)
    now = time.time()
    return render(request, "live/drain.html", {
        "server": server, "status": verdict, "can_operate": can_operate(request.user),
        "connections": [present.connection_row(s, now, None, None) for s in sample],
        "health": services.server_health([server.server_id]).get(server.server_id, {}),
    })


@needs_redis
def health_page(request):
    current = published.load()
    snapshot = current.snapshot if current else None
    servers = list(snapshot.servers()) if snapshot else []
    health = services.server_health([s.id for s in servers])
    admin = published.redis_client().hgetall(published.keys().admin)
    rows = [{"server": s, "health": health.get(s.id, {}), "admin": admin.get(s.id, s.admin_state)} for s in servers]
    return render(request, "live/health.html", {
        "rows": rows, "events": HealthEvent.objects.all()[:RECENT_EVENTS], "published": snapshot is not None,
    })


@needs_redis
def horizon_sessions_page(request):
    """One row per Horizon session (group, client key) over all workers; kill / move for operators."""
    current = published.load()
    snapshot = current.snapshot if current else None
    form = HorizonFilterForm(request.GET, snapshot)
    table = None
    if form.is_valid():
        grouped = horizon.aggregate(published.redis_client(), published.keys())
        table = horizon.page(grouped, form.filter(), form.cleaned_data["page"] or 1)
    persistent = {vs.group for vs in snapshot.virtual_services if vs.persistence.method != "none"} \
        if snapshot else set()
    return render(request, "live/horizon.html", {
        "form": form, "table": table, "published": snapshot is not None, "persistent_groups": persistent,
        "can_operate": can_operate(request.user),
    })


def _session_action(request, act):
    """POST only, operators only; runs `act(form data)` -> Outcome and says what happened."""
    if not can_operate(request.user):
        raise PermissionDenied("Only operators and administrators can kill or move sessions.")
    form = SessionActionForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(f"{name.replace('_', ' ')}: {e}" for name, errs in form.errors.items() for e in errs)
        messages.error(request, f"Nothing was done: {errors}")
    else:
        try:
            messages.success(request, act(form.cleaned_data).message())
        except control.ControlError as exc:
            messages.error(request, str(exc))
    back = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return redirect(back)
    return redirect(reverse("live:live_horizon_sessions"))


@require_POST
@needs_redis
def horizon_kill(request):
    client, keys = published.redis_client(), published.keys()
    return _session_action(request, lambda data: control.kill_session(
        client, keys, data["group"], data["client_key"], request.user))


@require_POST
@needs_redis
def horizon_move(request):
    client, keys = published.redis_client(), published.keys()

    def move(data):
        current = published.load(client, keys)
        states = control.states_from_redis(client, keys)
        return control.move_session(client, keys, current.snapshot if current else None, states, data["group"],
                                    data["client_key"], request.user)

    return _session_action(request, move)
