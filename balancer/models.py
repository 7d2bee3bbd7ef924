"""The domain an administrator edits: the draft configuration, its versions and the audit trail.

Field names and choice values mirror `proxyworker.config`, so each model's
`to_schema()` is a plain mapping. Invariants live in `clean()` and name the
field they concern. Rules that look at *other* rows (listen conflicts, empty
pools, policies used by layer-4 services) sit in `clean_references()`; the
YAML loader switches them off while it rewrites several rows and then checks
the finished configuration as a whole.
"""
import dataclasses
import datetime
import ipaddress
import json

from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone

from proxyworker import config, tlsconf
from proxyworker.tlsconf import CertificateError

from . import certificates, choices, horizon
from .validators import Between, cookie_name_validator, http_path, name_validator, parse_status_codes, positive

PORT = [Between(1, 65535)]


class ConfigObject(models.Model):
    """Common behaviour of the objects that make up a configuration."""

    # False while the YAML loader rewrites the configuration; it checks references at the end.
    check_references = True

    class Meta:
        abstract = True

    def __str__(self):
        return self.name

    def clean(self):
        super().clean()
        if self.check_references:
            self.clean_references()

    def clean_references(self):
        pass

    def warnings(self) -> list[str]:
        return []

    def field_values(self) -> dict:
        """Plain values of the concrete fields (foreign keys by name), for audit diffs."""
        values = {}
        for field in self._meta.concrete_fields:
            if field.primary_key:
                continue
            if field.is_relation:
                related = getattr(self, field.name)
                values[field.name] = str(related) if related else None
            else:
                values[field.name] = field.value_from_object(self)
        return values


class PersistencePolicy(ConfigObject):
    name = models.CharField(max_length=100, unique=True, validators=[name_validator])
    method = models.CharField(
        max_length=20, choices=choices.PersistenceMethod.choices, default=choices.PersistenceMethod.SOURCE_IP
    )
    timeout = models.IntegerField(
        default=5400, validators=[Between(1, 7 * 86400)], help_text="Seconds a client keeps its server."
    )
    ipv4_mask = models.IntegerField(
        "IPv4 netmask", default=32, validators=[Between(0, 32)], help_text="Prefix length of the client key, e.g. 24."
    )
    ipv6_mask = models.IntegerField("IPv6 netmask", default=128, validators=[Between(0, 128)])
    cookie_name = models.CharField(
        max_length=100, blank=True, default="JSESSIONID", validators=[cookie_name_validator],
        help_text="Cookie that identifies a client (Horizon: JSESSIONID).",
    )

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "persistence policies"

    def get_absolute_url(self):
        return reverse("balancer:persistence_detail", args=[self.pk])

    @property
    def uses_cookie(self):
        return self.method.startswith("cookie")

    def clean(self):
        if self.uses_cookie and not self.cookie_name:
            raise ValidationError({"cookie_name": "is required for cookie persistence"})
        super().clean()

    def clean_references(self):
        if self.pk and self.uses_cookie:
            layer4 = [vs.name for vs in self.virtual_services.filter(mode=choices.Mode.L4)]
            if layer4:
                raise ValidationError({"method": (
                    f"cookie persistence needs layer 7, but layer-4 virtual services use this policy: "
                    f"{', '.join(layer4)}"
                )})

    def warnings(self):
        if self.method == choices.PersistenceMethod.NONE:
            return []
        return horizon.timeout_warnings(f"Persistence timeout of policy {self.name!r}", self.timeout)

    def to_schema(self) -> dict:
        return {
            "method": self.method, "timeout": self.timeout, "ipv4_mask": self.ipv4_mask,
            "ipv6_mask": self.ipv6_mask, "cookie_name": self.cookie_name,
        }


class HealthCheck(ConfigObject):
    name = models.CharField(max_length=100, unique=True, validators=[name_validator])
    type = models.CharField(max_length=10, choices=choices.CheckType.choices, default=choices.CheckType.HTTPS)
    method = models.CharField(max_length=4, choices=choices.HttpMethod.choices, default=choices.HttpMethod.GET)
    path = models.CharField(max_length=500, default="/favicon.ico", validators=[http_path])
    host = models.CharField("Host header", max_length=255, blank=True, help_text="Empty: the server's address.")
    sni = models.CharField("TLS server name (SNI)", max_length=255, blank=True, help_text="Empty: the Host header.")
    expect_up = models.CharField(
        "status codes for up", max_length=100, default="200", help_text="Comma-separated, e.g. 200."
    )
    expect_drain = models.CharField(
        "status codes for drain", max_length=100, default="503", blank=True,
        help_text="Horizon answers 503 when a server is quiesced: drain, not down.",
    )
    verify_certificate = models.BooleanField(default=False, help_text="Horizon servers often have internal certificates.")
    interval = models.FloatField(default=2.0, validators=[positive], help_text="Seconds between checks (VMware: 30).")
    timeout = models.FloatField(default=2.0, validators=[positive], help_text="Seconds to wait for an answer.")
    rise = models.IntegerField(default=2, validators=[Between(1, 100)], help_text="Good checks before a server is up.")
    fall = models.IntegerField(default=3, validators=[Between(1, 100)], help_text="Failed checks before it is down.")

    class Meta:
        ordering = ["name"]

    def get_absolute_url(self):
        return reverse("balancer:healthcheck_detail", args=[self.pk])

    def clean(self):
        errors = {}
        codes = {}
        for field in ("expect_up", "expect_drain"):
            try:
                codes[field] = parse_status_codes(getattr(self, field))
            except ValidationError as exc:
                errors[field] = exc.messages
        if not errors:
            if not codes["expect_up"]:
                errors["expect_up"] = "needs at least one status code"
            elif set(codes["expect_up"]) & set(codes["expect_drain"]):
                errors["expect_drain"] = "a status cannot mean both up and drain"
            else:  # store the normalised spelling so a YAML round trip is exact
                self.expect_up = ",".join(map(str, codes["expect_up"]))
                self.expect_drain = ",".join(map(str, codes["expect_drain"]))
        if errors:
            raise ValidationError(errors)
        super().clean()

    def codes(self, field) -> list[int]:
        return list(parse_status_codes(getattr(self, field)))

    def to_schema(self) -> dict:
        return {
            "type": self.type, "method": self.method, "path": self.path, "host": self.host, "sni": self.sni,
            "expect_up": self.codes("expect_up"), "expect_drain": self.codes("expect_drain"),
            "verify_certificate": self.verify_certificate, "interval": float(self.interval),
            "timeout": float(self.timeout),
            "rise": self.rise, "fall": self.fall,
        }


class Pool(ConfigObject):
    name = models.CharField(max_length=100, unique=True, validators=[name_validator])
    health_check = models.ForeignKey(
        HealthCheck, null=True, blank=True, on_delete=models.PROTECT, related_name="pools",
        help_text="Empty: servers are not checked (always up unless drained or disabled).",
    )

    class Meta:
        ordering = ["name"]

    def get_absolute_url(self):
        return reverse("balancer:pool_detail", args=[self.pk])

    def services_needing_servers(self):
        """Enabled virtual services that would be left without servers if this pool had none."""
        return [vs.name for vs in self.virtual_services.filter(enabled=True)]

    def to_schema(self) -> dict:
        return {
            "name": self.name,
            "servers": [server.to_schema() for server in self.servers.all()],
            "health_check": self.health_check.to_schema() if self.health_check else None,
        }


class RealServer(ConfigObject):
    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="servers")
    name = models.CharField(max_length=100, validators=[name_validator])
    address = models.GenericIPAddressField(help_text="IPv4 or IPv6 address.")
    port = models.IntegerField(validators=PORT)
    weight = models.IntegerField(default=1, validators=[Between(0, 256)], help_text="0 = no new clients by weight.")
    backup = models.BooleanField(default=False, help_text="Used only when no primary server is available.")
    admin_state = models.CharField(
        max_length=10, choices=choices.AdminState.choices, default=choices.AdminState.ENABLED,
        help_text="Drain: no new clients, existing sessions stay. Disabled: no traffic.",
    )

    class Meta:
        ordering = ["pool__name", "name"]
        constraints = [models.UniqueConstraint(fields=["pool", "name"], name="unique_server_name_per_pool")]

    def get_absolute_url(self):
        return reverse("balancer:server_detail", args=[self.pk])

    @property
    def server_id(self) -> str:
        """The key of this server in Redis health/admin hashes."""
        return f"{self.pool.name}/{self.name}"

    def clean(self):
        # The form leaves `pool` out, so Django would skip the unique constraint: check it here.
        if self.pool_id and self.name:
            clash = RealServer.objects.filter(pool_id=self.pool_id, name=self.name).exclude(pk=self.pk)
            if clash.exists():
                raise ValidationError({"name": f"pool {self.pool.name!r} already has a server named {self.name!r}"})
        super().clean()

    def to_schema(self) -> dict:
        return {
            "id": self.server_id, "name": self.name, "address": self.address, "port": self.port,
            "weight": self.weight, "backup": self.backup, "admin_state": self.admin_state,
        }


class Certificate(ConfigObject):
    """A server certificate with its chain and private key, presented by layer-7 services.

    The private key is stored only as a Fernet token (VIEWLB_CERT_KEY) and is
    never shown or exported in clear again. Subject, names, dates and the
    fingerprint are read from the certificate when it is uploaded.
    """

    name = models.CharField(max_length=100, unique=True, validators=[name_validator])
    cert_pem = models.TextField(
        "certificate", help_text="PEM: the server's own certificate (a chain pasted after it is moved to the chain)."
    )
    chain_pem = models.TextField(
        "chain", blank=True,
        help_text="PEM: the intermediate certificates, each followed by the one that issued it. Empty for self-signed.",
    )
    key_encrypted = models.TextField(editable=False)  # Fernet token of the private key PEM; never the PEM itself
    subject = models.CharField(max_length=500, blank=True, editable=False)
    issuer = models.CharField(max_length=500, blank=True, editable=False)
    names = models.JSONField("SAN names", default=list, blank=True, editable=False)
    not_before = models.DateTimeField(null=True, blank=True, editable=False)
    not_after = models.DateTimeField("expires", null=True, blank=True, editable=False)
    fingerprint = models.CharField("SHA-256 fingerprint", max_length=95, blank=True, editable=False)
    self_signed = models.BooleanField(default=False, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def get_absolute_url(self):
        return reverse("balancer:certificate_detail", args=[self.pk])

    # -- upload ------------------------------------------------------------------------------

    def set_material(self, cert_text: str, chain_text: str = "", key_pem: str | None = None, now=None, token=None):
        """Checks an upload with `tlsconf.check_certificate` and takes it; `key_pem=None` keeps the stored key.

        `token` is the encrypted form of `key_pem` when the key came encrypted
        (YAML, rollback): it is stored as it is, so the document keeps its text.
        Raises ValidationError on the fields cert_pem, chain_pem and key_pem.
        Returns the check's report, or None when nothing new was given (no
        check then, so that an expired certificate can still be renamed).
        """
        cert_text, chain_text = _pem_text(cert_text), _pem_text(chain_text)
        if key_pem is None:
            if not self.key_encrypted:
                raise ValidationError({"key_pem": "the private key is required"})
            if (cert_text, chain_text) == (_pem_text(self.cert_pem), _pem_text(self.chain_pem)):
                return None
            key_pem = self.private_key_pem()
        report = tlsconf.check_certificate(cert_text, _pem_text(key_pem), chain_text, now=now)
        if not report.ok:
            errors = {}
            for field, message in report.errors:
                errors.setdefault(field, []).append(message)
            raise ValidationError(errors)
        self._take(report, _pem_text(key_pem), token)
        return report

    def _take(self, report, key_pem, token):
        same_key = bool(self.key_encrypted) and _public_key(self.cert_pem) == _public_key(report.cert_pem)
        if not same_key:  # a fresh token for the same key would show up as a change on every upload
            self.key_encrypted = token or certificates.encrypt_key(key_pem)
        self.cert_pem, self.chain_pem = certificates.split_pem(report.cert_pem)
        self.subject, self.issuer = report.subject[:500], report.issuer[:500]
        self.names = list(report.names)
        self.not_before, self.not_after = report.not_before, report.not_after
        self.fingerprint, self.self_signed = report.fingerprint_sha256, report.self_signed

    def private_key_pem(self) -> str:
        """The clear key, for the checks of a new certificate only; raises ValidationError on key_pem."""
        try:
            return certificates.decrypt_key(self.key_encrypted)
        except CertificateError as exc:
            raise ValidationError({"key_pem": f"{exc}; upload the private key again"}) from None

    # -- state -------------------------------------------------------------------------------

    @property
    def days_left(self) -> int | None:
        return (self.not_after - timezone.now()).days if self.not_after else None

    @property
    def expiry_state(self) -> str:
        """'expired', 'soon' (within tlsconf.WARN_DAYS) or 'ok', for the badges."""
        if self.not_after is None:
            return "ok"
        if self.not_after <= timezone.now():
            return "expired"
        return "soon" if self.days_left < tlsconf.WARN_DAYS else "ok"

    def warnings(self):
        """Dates of the leaf and the chain, missing subjectAltName: the upload check without the key."""
        report = tlsconf.check_certificate(self.cert_pem, "", self.chain_pem)
        problems = [message for field, message in report.errors if field != "key_pem"]
        return [f"Certificate {self.name!r}: {message}" for message in problems + report.warnings]

    def service_names(self) -> list[str]:
        return sorted(self.virtual_services.values_list("name", flat=True))

    def field_values(self) -> dict:
        """What the audit trail records: facts about the certificate, never the key, not even encrypted."""
        return {
            "name": self.name, "subject": self.subject, "issuer": self.issuer, "names": list(self.names),
            "not_before": _iso(self.not_before), "not_after": _iso(self.not_after), "fingerprint": self.fingerprint,
            "chain": certificates.fingerprints(self.chain_pem) if self.chain_pem.strip() else [],
        }

    def to_schema(self) -> dict:
        return {
            "name": self.name, "cert_pem": self.cert_pem + self.chain_pem, "key_pem_encrypted": self.key_encrypted,
            "server_names": list(self.names),
        }


def _pem_text(text) -> str:
    """PEM as browsers send it (CRLF, stray blanks) made comparable."""
    text = (text or "").replace("\r\n", "\n").strip()
    return text + "\n" if text else ""


def _public_key(cert_pem: str) -> bytes | None:
    try:
        leaf = certificates.read_certificates(cert_pem)[0]
    except (ValueError, IndexError):
        return None
    return leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _iso(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value else None


class VirtualService(ConfigObject):
    name = models.CharField(max_length=100, unique=True, validators=[name_validator])
    address = models.GenericIPAddressField("listen address", help_text="IPv4 or IPv6 address the service listens on.")
    port = models.IntegerField(validators=PORT)
    protocol = models.CharField(max_length=3, choices=choices.Protocol.choices, default=choices.Protocol.TCP)
    mode = models.CharField(max_length=2, choices=choices.Mode.choices, default=choices.Mode.L4)
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="virtual_services")
    scheduler = models.CharField(
        max_length=24, choices=choices.Scheduler.choices, default=choices.Scheduler.ROUND_ROBIN
    )
    persistence = models.ForeignKey(
        PersistencePolicy, null=True, blank=True, on_delete=models.PROTECT, related_name="virtual_services",
        help_text="Empty: no persistence.",
    )
    persistence_group = models.CharField(
        max_length=100, blank=True, validators=[name_validator],
        help_text="Services in one group share affinity (port following). Empty: the service's own name.",
    )
    connect_timeout = models.FloatField(default=5.0, validators=[positive], help_text="Seconds.")
    idle_timeout = models.FloatField(default=3600.0, validators=[positive], help_text="Seconds.")
    max_connections = models.IntegerField(default=0, validators=[Between(0, 10_000_000)], help_text="0 = unlimited.")
    enabled = models.BooleanField(default=True)
    # Layer 7 only (ignored and reset to the defaults for layer 4).
    certificates = models.ManyToManyField(
        Certificate, through="ServiceCertificate", related_name="virtual_services", blank=True,
    )
    backend_tls = models.BooleanField(
        "re-encrypt to the servers", default=True,
        help_text="Layer 7: HTTPS towards the real servers (Horizon servers expect it). Off: plain HTTP.",
    )
    backend_verify = models.BooleanField(
        "verify the servers' certificates", default=False,
        help_text="Layer 7 with re-encryption: check the servers' certificates against the CA bundle below "
                  "(or the system's CAs when it is empty). Horizon servers often have internal certificates.",
    )
    backend_ca = models.TextField(
        "CA bundle for the servers", blank=True,
        help_text="Layer 7: PEM certificates of the CAs that issued the real servers' certificates.",
    )

    class Meta:
        ordering = ["name"]

    TLS_FIELDS = ("backend_tls", "backend_verify", "backend_ca")

    def get_absolute_url(self):
        return reverse("balancer:service_detail", args=[self.pk])

    @property
    def is_layer7(self):
        return self.mode == choices.Mode.L7

    @property
    def group(self):
        return self.persistence_group or self.name

    def clean(self):
        if self.mode == choices.Mode.L7 and self.protocol != choices.Protocol.TCP:
            raise ValidationError({"mode": "layer 7 (HTTPS) needs protocol TCP"})
        self.clean_tls()
        if self.mode != choices.Mode.L7 and self.persistence_id and self.persistence.uses_cookie:
            raise ValidationError({"persistence": (
                f"policy {self.persistence.name!r} uses cookie persistence, which needs layer-7 mode; "
                "use a source-IP policy for layer 4"
            )})
        super().clean()

    def clean_references(self):
        if not self.enabled:
            return
        clash = self.listen_conflict()
        if clash:
            raise ValidationError({"port": (
                f"virtual service {clash.name!r} already listens on {self.address} port {self.port}/{self.protocol}; "
                "change the address, port or protocol, or disable one of them"
            )})
        if self.pool_id and not self.pool.servers.exists():
            raise ValidationError({"pool": (
                f"pool {self.pool.name!r} has no real servers; add one first or leave this service disabled"
            )})

    def clean_tls(self):
        if not self.is_layer7:  # layer 4 passes TLS through: these settings mean nothing there
            self.backend_tls, self.backend_verify, self.backend_ca = True, False, ""
            return
        if self.backend_verify and not self.backend_tls:
            raise ValidationError({"backend_verify": (
                "verifying the servers' certificates needs re-encryption; turn on re-encryption or verification off"
            )})
        try:
            self.backend_ca = certificates.normalise_ca_bundle(self.backend_ca)
        except CertificateError as exc:
            raise ValidationError({"backend_ca": str(exc)}) from None

    def certificate_error(self, certs) -> str | None:
        """Why this service cannot present `certs` (in order), or None."""
        if self.is_layer7 and not certs:
            return "a layer-7 service needs at least one certificate; upload or generate one under Certificates"
        if not self.is_layer7 and certs:
            return "only layer-7 services present certificates; set the mode to layer 7 or remove them"
        return None

    def ordered_certificates(self) -> list:
        """The certificates in order; the first is the default, SNI looks at them in this order."""
        return [link.certificate for link in self.certificate_links.all()] if self.pk else []

    def set_certificates(self, certs):
        ServiceCertificate.objects.filter(service=self).delete()
        ServiceCertificate.objects.bulk_create(
            ServiceCertificate(service=self, certificate=cert, position=i) for i, cert in enumerate(certs)
        )

    def field_values(self) -> dict:
        return {**super().field_values(), "certificates": [c.name for c in self.ordered_certificates()]}

    def listen_conflict(self):
        """Another enabled service on the same address (IPv6 normalised), port and protocol."""
        try:
            mine = ipaddress.ip_address(self.address)
        except ValueError:
            return None  # the address field reports its own error
        others = VirtualService.objects.filter(enabled=True, port=self.port, protocol=self.protocol).exclude(pk=self.pk)
        return next((vs for vs in others if ipaddress.ip_address(vs.address) == mine), None)

    def warnings(self):
        found = horizon.timeout_warnings(f"Idle timeout of virtual service {self.name!r}", self.idle_timeout)
        return found + self.certificate_warnings() if self.is_layer7 else found

    def certificate_warnings(self) -> list[str]:
        found, claimed = [], set()
        for cert in self.ordered_certificates():
            if cert.expiry_state != "ok":
                when = "has expired" if cert.expiry_state == "expired" else f"expires in {cert.days_left} days"
                found.append(f"Certificate {cert.name!r} of virtual service {self.name!r} {when}.")
            if claimed and set(cert.names) <= claimed:
                found.append(f"Certificate {cert.name!r} of virtual service {self.name!r} is never chosen: "
                             "certificates before it already answer all its names.")
            claimed |= set(cert.names)
        return found

    def tls_schema(self) -> dict | None:
        if not self.is_layer7:
            return None
        return {
            "certificates": [cert.name for cert in self.ordered_certificates()], "backend_tls": self.backend_tls,
            "backend_verify": self.backend_verify, "backend_ca": self.backend_ca,
        }

    def to_schema(self) -> dict:
        persistence = self.persistence.to_schema() if self.persistence else dataclasses.asdict(config.Persistence())
        return {
            "name": self.name, "address": self.address, "port": self.port, "pool": self.pool.name,
            "protocol": self.protocol, "mode": self.mode, "scheduler": self.scheduler,
            "persistence": persistence, "persistence_group": self.persistence_group,
            "connect_timeout": float(self.connect_timeout), "idle_timeout": float(self.idle_timeout),
            "max_connections": self.max_connections, "enabled": self.enabled, "tls": self.tls_schema(),
        }


class ServiceCertificate(models.Model):
    """A virtual service's certificate at a position: 0 is the default, SNI looks in this order."""

    service = models.ForeignKey(VirtualService, on_delete=models.CASCADE, related_name="certificate_links")
    # PROTECT: a certificate in use cannot disappear under a running service.
    certificate = models.ForeignKey(Certificate, on_delete=models.PROTECT, related_name="service_links")
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["service", "certificate"], name="unique_certificate_per_service"),
        ]

    def __str__(self):
        return f"{self.service} #{self.position}: {self.certificate}"


class ConfigVersion(models.Model):
    """A published snapshot. Immutable; a rollback publishes an old one as a new number."""

    number = models.PositiveIntegerField(unique=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    author_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    comment = models.CharField(max_length=500, blank=True)
    snapshot = models.TextField(help_text="The published snapshot JSON (proxyworker.config.Snapshot).")
    # The same configuration as edited (objects by name), so a rollback can restore the draft exactly.
    document = models.JSONField(default=dict)
    rollback_of = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-number"]

    def __str__(self):
        return f"version {self.number}"

    def get_absolute_url(self):
        return reverse("balancer:version_detail", args=[self.number])

    def snapshot_dict(self) -> dict:
        return json.loads(self.snapshot)

    def snapshot_pretty(self) -> str:
        """The snapshot for reading; private keys, even encrypted, are not shown."""
        data = self.snapshot_dict()
        for cert in data.get("certificates", []):
            cert["key_pem_encrypted"] = "(encrypted private key, not shown)"
        return json.dumps(data, indent=2, sort_keys=True)

    def to_snapshot(self) -> config.Snapshot:
        return config.Snapshot.from_json(self.snapshot)


class AuditEntry(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True)  # kept when the user is deleted
    at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=20, choices=choices.AuditAction.choices)
    object_type = models.CharField(max_length=50, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.object_type} {self.object_repr}"


class HorizonSetup(models.Model):
    """A run of the Horizon setup wizard: the answers, what it created and the checklist it generated.

    A record, not configuration: the objects it created are ordinary draft objects (edited, exported and
    versioned like any other), named here by name only, so editing or deleting them later is not hindered.
    """

    prefix = models.CharField("name prefix", max_length=60)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True)  # kept when the user is deleted
    answers = models.JSONField(default=dict)
    created_objects = models.JSONField(default=list)  # [{"type": "pool", "name": "horizon-https"}, ...]
    checklist = models.JSONField(default=list)  # [{"title": ..., "items": [{"text": ..., "link": ...}]}]

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"Horizon setup {self.prefix} ({self.created_at:%Y-%m-%d %H:%M})"

    def get_absolute_url(self):
        return reverse("balancer:horizon_setup", args=[self.pk])
