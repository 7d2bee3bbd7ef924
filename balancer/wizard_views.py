"""The Horizon setup wizard's pages: the questions (admins only), and the setups it made with their checklists.

Thin: the form turns answers into `wizard.Answers`, `wizard.build_plan` decides, `wizard.create_setup` creates.
"""
from django.contrib import messages
from django.shortcuts import redirect
from django.urls import reverse
from django.views.generic import DetailView, FormView, ListView

from . import horizon, wizard
from .models import HorizonSetup
from .roles import AdminRequiredMixin
from .wizard_forms import HorizonWizardForm

FIELDSETS = (
    ("What is balanced", ("prefix", "role", "servers")),
    ("Where clients connect", ("vip", "public_name", "reach")),
    ("Horizon", ("version", "mode")),
    ("Affinity: how a client's connections stay on one server", ("method", "extra_vips")),
    ("TLS", ("certificate",)),
)


class HorizonWizard(AdminRequiredMixin, FormView):
    """GET: the questions (prefilled from the query). POST 'preview': the plan. POST 'create': create it."""

    template_name = "balancer/wizard.html"
    form_class = HorizonWizardForm

    def get_initial(self):
        return HorizonWizardForm.initial_from(self.request.GET)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        form = context["form"]
        context["fieldsets"] = [(title, [form[name] for name in names]) for title, names in FIELDSETS]
        context["versions"] = horizon.VERSIONS.values()
        context["check"] = horizon.FAVICON_CHECK
        return context

    def form_valid(self, form):
        try:
            plan = wizard.build_plan(form.answers)
            if self.request.POST.get("action") != "create":
                return self.render_to_response(self.get_context_data(
                    form=form, plan=plan, clashes=wizard.clashes(plan),
                    checklist=wizard.checklist(plan, reverse("balancer:apply"))))
            setup = wizard.create_setup(plan, self.request.user, reverse("balancer:apply"))
        except wizard.WizardError as exc:
            form.add_wizard_errors(exc)
            return self.form_invalid(form)
        messages.success(self.request, (
            f"Created {len(setup.created_objects)} objects named {setup.prefix}-…: ordinary draft configuration. "
            "Nothing is live until you apply it."))
        for warning in plan.warnings:
            messages.warning(self.request, warning)
        return redirect(setup.get_absolute_url())


class HorizonSetupList(ListView):
    model = HorizonSetup
    template_name = "balancer/wizard_setup_list.html"
    paginate_by = 25


class HorizonSetupDetail(DetailView):
    model = HorizonSetup
    template_name = "balancer/wizard_setup_detail.html"
