"""Console forms of the monitoring app."""
from __future__ import annotations

from django import forms
from django.core.validators import RegexValidator

from proxyworker.config import Snapshot
from proxyworker.l7.cookies import MAX_COOKIE_VALUE

from .trace import client_address

# A cookie value or a whole Cookie header: printable characters, no control characters.
cookie_text = RegexValidator(r"^[\x20-\x7e]*$", "use printable characters only")


class TraceForm(forms.Form):
    client = forms.CharField(label="Client address", max_length=100,
                             help_text="The client's IP address as the VIP sees it, e.g. 203.0.113.7")
    vs = forms.ChoiceField(label="VIP", required=False)
    cookie = forms.CharField(
        label="Cookie", required=False, max_length=MAX_COOKIE_VALUE, validators=[cookie_text],
        help_text="Optional, for layer-7 VIPs: the session cookie's value (JSESSIONID, or VIEWLBSRV "
                  "for cookie insert), or a whole Cookie header",
    )

    def __init__(self, data, snapshot: Snapshot | None):
        super().__init__(data)
        names = [vs.name for vs in snapshot.virtual_services] if snapshot else []
        self.fields["vs"].choices = [("", "every VIP")] + [(n, n) for n in names]

    def clean_client(self):
        try:
            return client_address(self.cleaned_data["client"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_cookie(self):
        return self.cleaned_data["cookie"].strip()
