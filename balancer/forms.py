"""ModelForms of the console. Validation lives on the models; forms only pick the fields.

The certificate forms add what only a browser needs: files as well as pasted
text, a key field that never shows its value, and the generate action.
"""
import ipaddress
import re

from django import forms
from django.core.exceptions import ValidationError

from proxyworker import tlsconf
from proxyworker.tlsconf import CertificateError

from . import certificates
from .choices import AdminState, Mode
from .models import Certificate, HealthCheck, PersistencePolicy, Pool, RealServer, VirtualService


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
    """The layer-7 fields are always shown (no JavaScript needed) and ignored for layer 4."""

    default_certificate = forms.ModelChoiceField(
        Certificate.objects.all(), required=False, label="Certificate",
        help_text="Layer 7: the certificate for clients that send no server name (SNI) or one no certificate has.",
    )
    more_certificates = forms.ModelMultipleChoiceField(
        Certificate.objects.all(), required=False, widget=forms.CheckboxSelectMultiple,
        label="More certificates (SNI)",
        help_text="Layer 7: presented to clients that ask for one of their names. When names overlap, "
                  "the certificate above wins, then these by name.",
    )

    class Meta:
        model = VirtualService
        fields = [
            "name", "enabled", "address", "port", "protocol", "mode", "pool", "scheduler", "persistence",
            "persistence_group", "connect_timeout", "idle_timeout", "max_connections",
            "default_certificate", "more_certificates", "backend_tls", "backend_verify", "backend_ca",
        ]
        widgets = {"backend_ca": forms.Textarea(attrs={"rows": 4, "spellcheck": "false"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        certs = self.instance.ordered_certificates()
        if certs:
            self.initial.setdefault("default_certificate", certs[0].pk)
            self.initial.setdefault("more_certificates", [cert.pk for cert in certs[1:]])

    def clean_backend_ca(self):
        text = self.cleaned_data["backend_ca"]
        if "PRIVATE KEY-----" in text:  # pasted by mistake: refused, and not sent back to the browser
            self.data = self.data.copy()
            self.data["backend_ca"] = ""
        return text

    def clean(self):
        data = super().clean()
        if data.get("mode") != Mode.L7:
            data["default_certificate"], data["more_certificates"] = None, []
        self.chosen = self.chosen_certificates(data)
        problem = VirtualService(mode=data.get("mode")).certificate_error(self.chosen)
        if problem and "mode" not in self.errors:
            self.add_error("default_certificate", problem)
        return data

    @staticmethod
    def chosen_certificates(data) -> list:
        default = data.get("default_certificate")
        more = sorted((c for c in data.get("more_certificates") or () if c != default), key=lambda c: c.name)
        return ([default] if default else []) + more

    def save(self, commit=True):
        service = super().save(commit)
        if commit:
            service.set_certificates(self.chosen)
        return service


class ApplyForm(forms.Form):
    comment = forms.CharField(max_length=500, required=False, help_text="Why: shown in the version list.")


class ServerStateForm(forms.Form):
    state = forms.ChoiceField(choices=AdminState.choices)


# --- certificates ------------------------------------------------------------


class SecretTextarea(forms.Textarea):
    """Never renders its value: a private key is not sent back to the browser, not even after an error."""

    def format_value(self, value):
        return None


PEM_ATTRS = {"rows": 6, "spellcheck": "false", "autocomplete": "off"}
FILE_HELP = "Instead of pasting: a PEM file (it wins over the text above)."


class CertificateForm(forms.ModelForm):
    """Upload: certificate, chain and key as pasted text or as files (a file wins over its text field).

    Checked by `tlsconf.check_certificate`; its errors land on the field they
    concern. On edit, an empty key keeps the stored one.
    """

    cert_file = forms.FileField(required=False, label="Certificate file", help_text=FILE_HELP)
    chain_file = forms.FileField(required=False, label="Chain file", help_text=FILE_HELP)
    key_pem = forms.CharField(
        required=False, strip=False, label="Private key", widget=SecretTextarea(attrs=PEM_ATTRS),
        help_text="PEM, without a passphrase. It is stored encrypted and never shown again.",
    )
    key_file = forms.FileField(required=False, label="Private key file", help_text=FILE_HELP)

    class Meta:
        model = Certificate
        fields = ["name", "cert_pem", "cert_file", "chain_pem", "chain_file", "key_pem", "key_file"]
        widgets = {"cert_pem": forms.Textarea(attrs=PEM_ATTRS), "chain_pem": forms.Textarea(attrs=PEM_ATTRS)}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cert_pem"].required = False  # or a file; checked in clean()
        self.report = None
        if self.instance.pk:
            self.fields["key_pem"].help_text = ("Leave blank to keep the current key (it is never shown again). "
                                                "A new certificate must match it, or upload its key here.")

    def clean(self):
        data = super().clean()
        texts = {name: self.text(name, name.replace("_pem", "_file")) for name in ("cert_pem", "chain_pem", "key_pem")}
        if any(name in self.errors for name in ("cert_file", "chain_file", "key_file")):
            return data
        if not texts["cert_pem"]:
            self.add_error("cert_pem", "paste the certificate or choose its file")
            return data
        try:
            self.report = self.instance.set_material(texts["cert_pem"], texts["chain_pem"], texts["key_pem"] or None)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, messages)
            return data
        # What the model keeps: the leaf and the chain, normalised (a pasted chain moves to its field).
        data["cert_pem"], data["chain_pem"] = self.instance.cert_pem, self.instance.chain_pem
        return data

    def text(self, field, file_field) -> str:
        upload = self.cleaned_data.get(file_field)
        if not upload:
            return self.cleaned_data.get(field) or ""
        try:
            return certificates.read_upload(upload)
        except CertificateError as exc:
            self.add_error(file_field, str(exc))
            return ""


DNS_NAME = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", re.I)


class GenerateCertificateForm(forms.ModelForm):
    """A self-signed certificate with a new EC key, made by `tlsconf.generate_self_signed`."""

    dns_names = forms.CharField(
        label="DNS names", help_text="The names clients connect to, separated by commas or spaces; the first is "
                                     "the common name. IP addresses are allowed.",
    )
    days = forms.IntegerField(min_value=1, max_value=3650, initial=825, help_text="Validity in days.")

    class Meta:
        model = Certificate
        fields = ["name"]

    def clean_dns_names(self):
        names = list(dict.fromkeys(re.split(r"[\s,]+", self.cleaned_data["dns_names"].strip().lower())))
        for name in names:
            if not (DNS_NAME.match(name) and len(name) <= 253) and not _is_address(name):
                raise ValidationError(f"{name!r} is not a DNS name or an IP address")
        return names

    def clean(self):
        data = super().clean()
        if not self.errors:
            names = data["dns_names"]
            cert_pem, key_pem = tlsconf.generate_self_signed(names[0], names[1:], data["days"])
            try:
                self.report = self.instance.set_material(cert_pem, "", key_pem)
            except ValidationError as exc:  # cannot happen with our own key, but never lose the reason
                self.add_error(None, exc.messages)
        return data


def _is_address(text) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False
