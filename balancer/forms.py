"""ModelForms of the console. Validation lives on the models; forms only pick the fields."""
from django import forms

from .choices import AdminState
from .models import HealthCheck, PersistencePolicy, Pool, RealServer, VirtualService


class PersistencePolicyForm(forms.ModelForm):
    class Meta:
        model = PersistencePolicy
        fields = ["name", "method", "timeout", "ipv4_mask", "ipv6_mask", "cookie_name"]


class HealthCheckForm(forms.ModelForm):
    class Meta:
        model = HealthCheck
        fields = [
            "name", "type", "method", "path", "host", "sni", "expect_up", "expect_drain", "verify_certificate",
            "interval", "timeout", "rise", "fall",
        ]


class PoolForm(forms.ModelForm):
    class Meta:
        model = Pool
        fields = ["name", "health_check"]


class RealServerForm(forms.ModelForm):
    """For a new server; its admin state becomes live with the next apply."""

    class Meta:
        model = RealServer
        fields = ["name", "address", "port", "weight", "backup", "admin_state"]


class RealServerEditForm(forms.ModelForm):
    """Without admin_state: that changes at once through the enable / drain / disable buttons,
    and a stale form must not undo an operator's drain."""

    class Meta:
        model = RealServer
        fields = ["name", "address", "port", "weight", "backup"]


class VirtualServiceForm(forms.ModelForm):
    class Meta:
        model = VirtualService
        fields = [
            "name", "enabled", "address", "port", "protocol", "mode", "pool", "scheduler", "persistence",
            "persistence_group", "connect_timeout", "idle_timeout", "max_connections",
        ]


class ApplyForm(forms.Form):
    comment = forms.CharField(max_length=500, required=False, help_text="Why: shown in the version list.")


class ServerStateForm(forms.Form):
    state = forms.ChoiceField(choices=AdminState.choices)
