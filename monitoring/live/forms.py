"""The sticky-sessions filter: VIP, server and client, checked against the running configuration."""
from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from proxyworker.config import Snapshot

from .horizon import HorizonFilter
from .sources import BadToken, Filter, decode_token

TABLES = [("connections", "Live connections"), ("persistence", "Persistence table")]

# Client keys are addresses, networks ("10.1.2.0/24") or cookie values: printable, no spaces.
client_text = RegexValidator(r"^[\x21-\x7e]*$", "use letters, digits and punctuation only, without spaces")


class SessionFilterForm(forms.Form):
    table = forms.ChoiceField(choices=TABLES, required=False)
    vs = forms.ChoiceField(label="VIP", required=False)
    server = forms.ChoiceField(label="Server", required=False)
    client = forms.CharField(
        label="Client", required=False, max_length=200, validators=[client_text],
        help_text="Start of the client address or key, e.g. 10.1.2.",
    )
    after = forms.CharField(required=False, widget=forms.HiddenInput, max_length=500)

    def __init__(self, data, snapshot: Snapshot | None):
        super().__init__(data)
        self.snapshot = snapshot
        services = [vs.name for vs in snapshot.virtual_services] if snapshot else []
        servers = [s.id for s in snapshot.servers()] if snapshot else []
        self.fields["vs"].choices = [("", "any VIP")] + [(n, n) for n in services]
        self.fields["server"].choices = [("", "any server")] + [(s, s) for s in servers]

    def clean_table(self):
        return self.cleaned_data["table"] or "connections"

    def clean_client(self):
        return self.cleaned_data["client"].strip()

    def clean_after(self):
        token = self.cleaned_data["after"]
        if token:
            try:
                decode_token(token)
            except BadToken as exc:
                raise ValidationError(f"{exc}; start again from the first page") from None
        return token or None

    def filter(self) -> Filter:
        data = self.cleaned_data
        return Filter.resolve(self.snapshot, vs=data["vs"], server=data["server"], client=data["client"])


class HorizonFilterForm(forms.Form):
    """The Horizon-sessions filter: client prefix, server, VIP and group of the running configuration."""

    group = forms.ChoiceField(label="Group", required=False)
    vs = forms.ChoiceField(label="VIP", required=False)
    server = forms.ChoiceField(label="Server", required=False)
    client = forms.CharField(
        label="Client", required=False, max_length=200, validators=[client_text],
        help_text="Start of the client address or key, e.g. 10.1.2.",
    )
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def __init__(self, data, snapshot: Snapshot | None):
        super().__init__(data)
        services = list(snapshot.virtual_services) if snapshot else []
        servers = [s.id for s in snapshot.servers()] if snapshot else []
        groups: dict[str, list[str]] = {}
        for vs in services:
            groups.setdefault(vs.group, []).append(vs.name)
        self.fields["group"].choices = [("", "any group")] + [
            (g, f"{g} ({', '.join(names)})" if names != [g] else g) for g, names in sorted(groups.items())]
        self.fields["vs"].choices = [("", "any VIP")] + [(vs.name, vs.name) for vs in services]
        self.fields["server"].choices = [("", "any server")] + [(s, s) for s in servers]

    def clean_client(self):
        return self.cleaned_data["client"].strip()

    def filter(self) -> HorizonFilter:
        data = self.cleaned_data
        return HorizonFilter(client=data["client"], server=data["server"], vs=data["vs"], group=data["group"])


class SessionActionForm(forms.Form):
    """Which Horizon session a kill or move is for (hidden fields of the row's buttons)."""

    group = forms.CharField(max_length=200, validators=[
        RegexValidator(r"^[^:\s]+$", "a persistence group name, without ':' or spaces")])
    client_key = forms.CharField(label="Client key", max_length=200, validators=[client_text])
    next = forms.CharField(required=False, max_length=2000)
