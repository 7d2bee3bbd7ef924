"""The Horizon setup wizard's questions: one form, grouped in fieldsets on the page, no JavaScript needed.

The rules live in `wizard.py`; this form turns the posted text into `wizard.Answers` and puts each
problem on the field it concerns. GET parameters prefill it (contract7.md: reach, method, vip, servers, role).
"""
from django import forms

from . import horizon, wizard
from .models import Certificate

ROLE_CHOICES = [
    (horizon.UAG, "Unified Access Gateways / Security Servers (external: clients from the Internet)"),
    (horizon.CONNECTION_SERVER, "Connection Servers (internal clients)"),
]
VERSION_CHOICES = [(v.key, v.label) for v in horizon.VERSIONS.values()]
MODE_CHOICES = [
    (horizon.TUNNEL, "Tunnel: everything through the servers (HTTPS 443 plus the Blast and PCoIP gateways)"),
    (horizon.DIRECT, "Direct (bypass, internal Connection Servers only): after logging in the client connects "
                     "to its desktop; RDP 3389, USB 32111 and MMR 9427 follow the 443 server"),
]
REACH_CHOICES = [
    (wizard.DISTINCT, "Each client from its own address"),
    (wizard.NAT, "Many clients behind one NAT address (source NAT on the firewall, a proxy, a shared site link)"),
]
METHOD_CHOICES = [
    (wizard.SOURCE_IP, "(1) Source-IP affinity on one VIP, standard ports — recommended: every port follows the "
                       "client's 443 server by its address; behind NAT all clients land on one server"),
    (wizard.PORT_GROUP, "(2) A port group per server — server i gets its own ports on the VIP (10143/10172 for "
                        "the first, 10243/10272 for the second …) and its External URLs name them"),
    (wizard.N_PLUS_ONE, "(3) N+1 VIPs — the balanced VIP plus one VIP per server that carries that server's "
                        "tunnel, Blast and PCoIP; its External URLs name its own VIP"),
    (wizard.COOKIE, "Cookie — layer 7 on 443: the balancer terminates TLS and follows JSESSIONID (source IP "
                    "until the cookie is known); Blast and PCoIP go to one VIP per server as in (3), because a "
                    "cookie cannot follow a client to UDP"),
]
PREFILL = ("reach", "method", "vip", "role")


class HorizonWizardForm(forms.Form):
    prefix = forms.CharField(
        label="Name prefix", initial="horizon", max_length=40,
        help_text="Every object the wizard creates is named with it (horizon-https, horizon-favicon …), and it "
                  "is the persistence group of all its virtual services.",
    )
    role = forms.ChoiceField(label="What is balanced", choices=ROLE_CHOICES, initial=horizon.UAG,
                             widget=forms.RadioSelect)
    servers = forms.CharField(
        label="Servers", widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text="One per line: name address [port], e.g. 'uag1 10.0.0.11' (port 443 when left out). At least 2.",
    )
    vip = forms.GenericIPAddressField(
        label="VIP listen address", help_text="The address the balanced HTTPS 443 listens on (an address of this "
                                              "appliance).",
    )
    public_name = forms.CharField(
        label="Name clients use", required=False, max_length=253,
        help_text="Optional, e.g. horizon.example.com: the External URLs on this VIP name it (empty: the VIP "
                  "address), and a generated certificate is made for it.",
    )
    version = forms.ChoiceField(label="Horizon version", choices=VERSION_CHOICES, initial="horizon8",
                                widget=forms.RadioSelect)
    mode = forms.ChoiceField(label="Tunnel mode", choices=MODE_CHOICES, initial=horizon.TUNNEL,
                             widget=forms.RadioSelect)
    reach = forms.ChoiceField(label="How clients reach it", choices=REACH_CHOICES, initial=wizard.DISTINCT,
                              widget=forms.RadioSelect)
    method = forms.ChoiceField(label="Affinity method", choices=METHOD_CHOICES, initial=wizard.SOURCE_IP,
                               widget=forms.RadioSelect)
    extra_vips = forms.CharField(
        label="Per-server VIP addresses", required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text="For (3) N+1 VIPs and the cookie only: one address per line, in the order of the servers above.",
    )
    certificate = forms.ChoiceField(
        label="Certificate", required=False,
        help_text="Needed for the cookie method (layer 7 reads JSESSIONID inside TLS). For the other methods it is "
                  "optional: with one, the balanced 443 terminates TLS (layer 7, source-IP persistence) and "
                  "re-encrypts to the servers; without, layer 4 passes TLS through and each server presents its "
                  "own certificate.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        existing = [(cert.name, f"{cert.name} ({', '.join(cert.names) or cert.subject})")
                    for cert in Certificate.objects.order_by("name")]
        self.fields["certificate"].choices = [
            ("", "None (layer 4, TLS passes through)"),
            (wizard.GENERATE, "Generate a self-signed one for the name clients use (or the VIP address)"),
            *existing,
        ]
        self.answers = None

    @classmethod
    def initial_from(cls, query) -> dict:
        """Prefill from GET parameters; values that are not choices are ignored (the form says what is valid)."""
        initial = {}
        for name in PREFILL:
            value = query.get(name, "").strip()
            field = cls.base_fields[name]
            choices = {key for key, _ in getattr(field, "choices", ())}
            if value and (not choices or value in choices):
                initial[name] = value
        addresses = [a.strip() for a in query.get("servers", "").split(",") if a.strip()]
        if addresses:
            word = "cs" if initial.get("role") == horizon.CONNECTION_SERVER else "uag"
            initial["servers"] = "\n".join(f"{word}{i} {address}" for i, address in enumerate(addresses, 1))
        return initial

    def clean_prefix(self):
        prefix = self.cleaned_data["prefix"].strip()
        if not wizard.PREFIX.match(prefix):
            raise forms.ValidationError("use 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return prefix

    def clean_servers(self):
        try:
            return wizard.parse_servers(self.cleaned_data["servers"])
        except wizard.WizardError as exc:
            raise forms.ValidationError(exc.errors["servers"]) from None

    def clean_extra_vips(self):
        try:
            return wizard.parse_addresses(self.cleaned_data["extra_vips"])
        except wizard.WizardError as exc:
            raise forms.ValidationError(exc.errors["extra_vips"]) from None

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        self.answers = wizard.Answers(
            prefix=data["prefix"], role=data["role"], servers=tuple(data["servers"]),
            vip=wizard.normalise_address(data["vip"]),
            version=data["version"], mode=data["mode"], reach=data["reach"], method=data["method"],
            extra_vips=tuple(data["extra_vips"]), public_name=data["public_name"].strip(),
            certificate=data["certificate"],
        )
        for field, messages in wizard.problems(self.answers).items():
            self.add_error(field, messages)
        return data

    def add_wizard_errors(self, exc: "wizard.WizardError"):
        for field, messages in exc.errors.items():
            self.add_error(field if field in self.fields else None, messages)
