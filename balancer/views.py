"""Console pages. Thin: fetch, check the role, call a model method or a service, render.

Every page needs a login (viewlb_site.middleware); changing the configuration
needs the admin role, server actions the operator role (roles.py).
"""
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, ProtectedError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse, reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.generic import CreateView, DeleteView, DetailView, FormView, ListView, UpdateView, View

from . import forms, services
from .audit import field_changes, record
from .choices import AuditAction
from .models import (
    AuditEntry,
    Certificate,
    ConfigVersion,
    HealthCheck,
    PersistencePolicy,
    Pool,
    RealServer,
    VirtualService,
)
from .roles import AdminRequiredMixin, OperatorRequiredMixin, can_change_config

DRAFT_NOTE = "It takes effect with the next apply."
LIST_URLS = {
    VirtualService: "balancer:service_list", Pool: "balancer:pool_list", RealServer: "balancer:server_list",
    PersistencePolicy: "balancer:persistence_list", HealthCheck: "balancer:healthcheck_list",
    Certificate: "balancer:certificate_list",
}


def show_warnings(request, obj):
    for warning in obj.warnings():
        messages.warning(request, warning)


# --- generic create / edit / delete with audit -------------------------------


class ConfigCreateView(AdminRequiredMixin, CreateView):
    template_name = "balancer/object_form.html"
    title = None

    def get_context_data(self, **kwargs):
        return super().get_context_data(
            title=self.title or f"New {self.model._meta.verbose_name}", cancel_url=reverse(LIST_URLS[self.model]),
            **kwargs,
        )

    def form_valid(self, form):
        self.object = form.save()
        record(self.request.user, AuditAction.CREATE, self.object, self.object.field_values())
        messages.success(self.request, f"Created {self.model._meta.verbose_name} {self.object}. {DRAFT_NOTE}")
        show_warnings(self.request, self.object)
        return redirect(self.get_success_url())


class ConfigUpdateView(AdminRequiredMixin, UpdateView):
    template_name = "balancer/object_form.html"

    def get_object(self, queryset=None):
        obj = super().get_object(queryset)
        self.before = obj.field_values()  # the form changes the instance while validating
        self.title = f"Edit {obj._meta.verbose_name} {obj}"
        return obj

    def get_context_data(self, **kwargs):
        return super().get_context_data(title=self.title, cancel_url=self.object.get_absolute_url(), **kwargs)

    def form_valid(self, form):
        self.object = form.save()
        changes = field_changes(self.before, self.object.field_values())
        if changes:
            record(self.request.user, AuditAction.UPDATE, self.object, changes)
            messages.success(self.request, f"Saved {self.model._meta.verbose_name} {self.object}. {DRAFT_NOTE}")
        else:
            messages.info(self.request, "Nothing changed.")
        show_warnings(self.request, self.object)
        return redirect(self.get_success_url())


class ConfigDeleteView(AdminRequiredMixin, DeleteView):
    template_name = "balancer/object_confirm_delete.html"

    def form_valid(self, form):
        obj = self.object
        values = obj.field_values()
        label = f"{obj._meta.verbose_name} {getattr(obj, 'server_id', obj)}"
        try:
            obj.delete()
        except ProtectedError as exc:
            users = ", ".join(sorted({f"{o._meta.verbose_name} {o}" for o in exc.protected_objects}))
            messages.error(self.request, f"Cannot delete {label}: it is used by {users}.")
            return redirect(obj.get_absolute_url())
        record(self.request.user, AuditAction.DELETE, obj, values)
        messages.success(self.request, f"Deleted {label}. {DRAFT_NOTE}")
        return redirect(self.get_success_url())


# --- virtual services --------------------------------------------------------


class ServiceList(ListView):
    queryset = VirtualService.objects.select_related("pool", "persistence")


class ServiceDetail(DetailView):
    queryset = VirtualService.objects.select_related("pool", "persistence").prefetch_related(
        "certificate_links__certificate")


class ServiceCreate(ConfigCreateView):
    model, form_class = VirtualService, forms.VirtualServiceForm


class ServiceUpdate(ConfigUpdateView):
    model, form_class = VirtualService, forms.VirtualServiceForm


class ServiceDelete(ConfigDeleteView):
    model, success_url = VirtualService, reverse_lazy("balancer:service_list")


# --- pools and real servers --------------------------------------------------


class PoolList(ListView):
    queryset = Pool.objects.select_related("health_check").annotate(server_count=Count("servers", distinct=True))


class PoolDetail(DetailView):
    queryset = Pool.objects.select_related("health_check")


class PoolCreate(ConfigCreateView):
    model, form_class = Pool, forms.PoolForm


class PoolUpdate(ConfigUpdateView):
    model, form_class = Pool, forms.PoolForm


class PoolDelete(ConfigDeleteView):
    model, success_url = Pool, reverse_lazy("balancer:pool_list")


class ServerList(ListView):
    queryset = RealServer.objects.select_related("pool")


class ServerDetail(DetailView):
    queryset = RealServer.objects.select_related("pool")


class ServerCreate(ConfigCreateView):
    model, form_class = RealServer, forms.RealServerForm

    def dispatch(self, request, *args, **kwargs):
        self.pool = get_object_or_404(Pool, pk=kwargs["pool"])
        return super().dispatch(request, *args, **kwargs)

    def get_form_kwargs(self):
        # The pool is set before validation so that the model can check names within it.
        return {**super().get_form_kwargs(), "instance": RealServer(pool=self.pool)}

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "parent": self.pool, "cancel_url": self.pool.get_absolute_url()}

    def get_success_url(self):
        return self.pool.get_absolute_url()


class ServerUpdate(ConfigUpdateView):
    model, form_class = RealServer, forms.RealServerEditForm

    def get_success_url(self):
        return self.object.pool.get_absolute_url()


class ServerDelete(ConfigDeleteView):
    model = RealServer

    def form_valid(self, form):
        pool = self.object.pool
        needing = pool.services_needing_servers()
        if needing and pool.servers.count() == 1:
            messages.error(self.request, (
                f"Cannot delete {self.object.server_id}: it is the last server of pool {pool}, which enabled "
                f"virtual services use ({', '.join(needing)}). Add another server or disable them first."
            ))
            return redirect(pool.get_absolute_url())
        return super().form_valid(form)

    def get_success_url(self):
        return self.object.pool.get_absolute_url()


STATE_NEWS = {
    "enabled": "enabled", "drain": "draining: no new clients, existing sessions stay", "disabled": "disabled: no traffic",
}


class ServerState(OperatorRequiredMixin, View):
    """Enable / drain / disable a server at once (POST only)."""

    def post(self, request, pk):
        server = get_object_or_404(RealServer.objects.select_related("pool"), pk=pk)
        form = forms.ServerStateForm(request.POST)
        if not form.is_valid():
            messages.error(request, f"state: {form.errors['state'][0]}")
        else:
            try:
                services.set_admin_state(server, form.cleaned_data["state"], request.user)
                messages.success(request, f"{server.server_id} is now {STATE_NEWS[server.admin_state]}.")
            except services.PublishError as exc:
                messages.error(request, str(exc))
        back = request.POST.get("next", "")
        if url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
            return redirect(back)
        return redirect(server.pool.get_absolute_url())


# --- persistence policies and health checks ----------------------------------


class PersistenceList(ListView):
    queryset = PersistencePolicy.objects.annotate(service_count=Count("virtual_services"))


class PersistenceDetail(DetailView):
    model = PersistencePolicy


class PersistenceCreate(ConfigCreateView):
    model, form_class = PersistencePolicy, forms.PersistencePolicyForm


class PersistenceUpdate(ConfigUpdateView):
    model, form_class = PersistencePolicy, forms.PersistencePolicyForm


class PersistenceDelete(ConfigDeleteView):
    model, success_url = PersistencePolicy, reverse_lazy("balancer:persistence_list")


class HealthCheckList(ListView):
    queryset = HealthCheck.objects.annotate(pool_count=Count("pools"))


class HealthCheckDetail(DetailView):
    model = HealthCheck


class HealthCheckCreate(ConfigCreateView):
    model, form_class = HealthCheck, forms.HealthCheckForm


class HealthCheckUpdate(ConfigUpdateView):
    model, form_class = HealthCheck, forms.HealthCheckForm


class HealthCheckDelete(ConfigDeleteView):
    model, success_url = HealthCheck, reverse_lazy("balancer:healthcheck_list")


# --- certificates ------------------------------------------------------------


class CertificateList(ListView):
    queryset = Certificate.objects.annotate(service_count=Count("service_links", distinct=True))


class CertificateDetail(DetailView):
    model = Certificate


class CertificateCreate(ConfigCreateView):
    model, form_class, title = Certificate, forms.CertificateForm, "Upload a certificate"


class CertificateGenerate(ConfigCreateView):
    model, form_class, title = Certificate, forms.GenerateCertificateForm, "Generate a self-signed certificate"

    def form_valid(self, form):
        self.object = form.save()
        record(self.request.user, AuditAction.CREATE, self.object, self.object.field_values(), generated="self-signed")
        messages.success(self.request, (
            f"Generated the self-signed certificate {self.object}. Clients will warn about it unless they trust it; "
            f"{DRAFT_NOTE}"
        ))
        return redirect(self.get_success_url())


class CertificateUpdate(ConfigUpdateView):
    model, form_class = Certificate, forms.CertificateForm


class CertificateDelete(ConfigDeleteView):
    model, success_url = Certificate, reverse_lazy("balancer:certificate_list")

    def form_valid(self, form):
        users = self.object.service_names()
        if users:
            messages.error(self.request, (
                f"Cannot delete certificate {self.object}: virtual service{'s' if len(users) > 1 else ''} "
                f"{', '.join(users)} present{'' if len(users) > 1 else 's'} it. Give them another certificate first."
            ))
            return redirect(self.object.get_absolute_url())
        return super().form_valid(form)


# --- apply, versions, rollback, audit ----------------------------------------


class ApplyView(FormView):
    """GET: the pending changes against the running version. POST (admin): publish them."""

    template_name = "balancer/apply.html"
    form_class = forms.ApplyForm

    def get_context_data(self, **kwargs):
        diff = services.pending_diff()
        try:
            services.compile_snapshot()
            problem = None
        except services.PublishError as exc:
            problem = str(exc)
        return super().get_context_data(
            diff=diff, changes=services.pending_changes() if diff else [], problem=problem,
            running=services.running_version(), **kwargs,
        )

    def post(self, request, *args, **kwargs):
        if not can_change_config(request.user):
            raise PermissionDenied("Only administrators can apply the configuration.")
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        try:
            version = services.publish(self.request.user, form.cleaned_data["comment"])
        except services.PublishError as exc:
            messages.error(self.request, f"Not published: {exc}")
            return redirect("balancer:apply")
        if version is None:
            messages.info(self.request, "Nothing to publish: the draft is what is running.")
            return redirect("balancer:apply")
        messages.success(self.request, f"Published version {version.number}.")
        return redirect(version.get_absolute_url())


class VersionList(ListView):
    model = ConfigVersion
    paginate_by = 25


class VersionDetail(DetailView):
    model = ConfigVersion
    slug_field = slug_url_kwarg = "number"


class RollbackView(DetailView):
    """GET: what rolling back to this version would change. POST (admin): do it."""

    model = ConfigVersion
    slug_field = slug_url_kwarg = "number"
    template_name = "balancer/rollback.html"

    def get_context_data(self, **kwargs):
        return super().get_context_data(diff=services.rollback_diff(self.object.number), **kwargs)

    def post(self, request, number):
        if not can_change_config(request.user):
            raise PermissionDenied("Only administrators can roll back.")
        get_object_or_404(ConfigVersion, number=number)
        try:
            version = services.rollback(number, request.user)
        except services.PublishError as exc:
            messages.error(request, f"Rollback failed, nothing changed: {exc}")
            return redirect("balancer:version_rollback", number=number)
        if version is None:
            messages.info(request, f"Version {number} is what is running; the draft now matches it.")
            return redirect("balancer:version_list")
        messages.success(request, f"Rolled back: version {version.number} has the content of version {number}.")
        return redirect(version.get_absolute_url())


class AuditList(ListView):
    model = AuditEntry
    paginate_by = 50

    def get_queryset(self):
        entries = AuditEntry.objects.all()
        action = self.request.GET.get("action")
        return entries.filter(action=action) if action else entries

    def get_context_data(self, **kwargs):
        return super().get_context_data(actions=AuditAction.choices, action=self.request.GET.get("action", ""), **kwargs)


def export_yaml(request):
    """The whole draft configuration as a YAML download (the same text as `manage.py viewlb export`)."""
    response = HttpResponse(services.export_config(), content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="viewlb.yaml"'
    return response


def home(request):
    return redirect(reverse("balancer:service_list"))
