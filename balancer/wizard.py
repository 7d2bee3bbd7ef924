"""The Horizon setup wizard's domain: answers -> a plan of objects -> ordinary draft configuration + a checklist.

`build_plan` decides everything from the answers and the rules in `horizon.py` (ports per version and role,
timeouts per version, VMware's health check); `create_setup` makes the plan real in one transaction with the
usual models, each object validated by its own `full_clean()` and audited, and stores a `HorizonSetup`
with the checklist. Nothing is published: the administrator applies the draft as after any other edit.

The three affinity methods (HORIZON.md) plus the cookie, for the secondary channels (tunnel, Blast, PCoIP)
that must reach the server that authenticated the client:
- source_ip:  one VIP, standard ports, every channel follows the client's 443 server by source IP;
- port_group: the balanced 443, plus for server i its own ports (10<i>43, 10<i>72) to that server only;
- n_plus_one: the balanced 443, plus one VIP per server carrying its channels on the standard ports;
- cookie:     443 at layer 7 with JSESSIONID persistence (source IP until the cookie is known), the tunnel
              follows the cookie, Blast and PCoIP go to one VIP per server as in n_plus_one.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction

from proxyworker import tlsconf

from . import horizon
from .audit import record
from .choices import AuditAction, Mode, PersistenceMethod, Scheduler
from .horizon import CONNECTION_SERVER, DIRECT, UAG
from .models import Certificate, HealthCheck, HorizonSetup, PersistencePolicy, Pool, RealServer, VirtualService

SOURCE_IP, PORT_GROUP, N_PLUS_ONE, COOKIE = "source_ip", "port_group", "n_plus_one", "cookie"
METHODS = (SOURCE_IP, PORT_GROUP, N_PLUS_ONE, COOKIE)
PER_SERVER_VIPS = (N_PLUS_ONE, COOKIE)  # methods that need one extra VIP address per server
DISTINCT, NAT = "distinct", "nat"
GENERATE = "generate"  # the certificate answer that asks for a new self-signed certificate
HTTPS_PORT = 443
NAME = re.compile(r"^[^\s:/]{1,100}$")  # models.name_validator's rule
PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
ROLE_WORDS = {UAG: ("UAG / Security Server", "UAGs / Security Servers"),
              CONNECTION_SERVER: ("Connection Server", "Connection Servers")}


class WizardError(Exception):
    """Answers or a plan that cannot be carried out: {field or None: [messages]}."""

    def __init__(self, errors: dict):
        super().__init__("; ".join(m for messages in errors.values() for m in messages))
        self.errors = errors


# --- answers -----------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    port: int = HTTPS_PORT


def parse_servers(text: str) -> list[Server]:
    """'name address [port]' per line (blank lines and # comments skipped); WizardError names each bad line."""
    servers, problems = [], []
    for number, raw in enumerate((text or "").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            servers.append(_server_line(line))
        except ValueError as exc:
            problems.append(f"line {number} ({line!r}): {exc}")
    if problems:
        raise WizardError({"servers": problems})
    return servers


def _server_line(line: str) -> Server:
    parts = line.split()
    if len(parts) not in (2, 3):
        raise ValueError("write 'name address' or 'name address port'")
    name, address = parts[0], parts[1]
    if not NAME.match(name):
        raise ValueError(f"the name {name!r} must be 1-100 characters without ':' or '/'")
    address = normalise_address(address)
    port = HTTPS_PORT
    if len(parts) == 3:
        if not parts[2].isdigit() or not 1 <= int(parts[2]) <= 65535:
            raise ValueError(f"the port {parts[2]!r} must be a number from 1 to 65535")
        port = int(parts[2])
    return Server(name, address, port)


def normalise_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


def parse_addresses(text: str) -> list[str]:
    """One address per line (or separated by commas/spaces); WizardError on extra_vips names the bad ones."""
    addresses, problems = [], []
    for item in re.split(r"[\s,]+", (text or "").strip()):
        if not item:
            continue
        try:
            addresses.append(normalise_address(item))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise WizardError({"extra_vips": problems})
    return addresses


@dataclass(frozen=True)
class Answers:
    prefix: str
    role: str  # horizon.UAG or horizon.CONNECTION_SERVER
    servers: tuple[Server, ...]
    vip: str
    version: str  # a key of horizon.VERSIONS
    mode: str  # horizon.TUNNEL or horizon.DIRECT
    reach: str  # DISTINCT or NAT
    method: str  # one of METHODS
    extra_vips: tuple[str, ...] = ()
    public_name: str = ""  # the name clients use; empty: the VIP address
    certificate: str = ""  # an existing certificate's name, GENERATE, or empty

    @property
    def rules(self) -> horizon.Version:
        return horizon.VERSIONS[self.version]

    @property
    def host(self) -> str:
        """What the External URLs on the shared VIP name."""
        return self.public_name or _url_host(self.vip)

    def to_dict(self) -> dict:
        return asdict(self)


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def problems(answers: Answers) -> dict:
    """Rules across answers, by field: {field: [messages]} (empty when the answers can be carried out)."""
    found: dict[str, list[str]] = {}

    def add(name, message):
        found.setdefault(name, []).append(message)

    if not PREFIX.match(answers.prefix):
        add("prefix", "use 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit")
    _check_servers(answers, add)
    if answers.mode == DIRECT and answers.role != CONNECTION_SERVER:
        add("mode", "direct (bypass) mode exists only for internal Connection Servers; UAGs and Security "
                    "Servers always tunnel")
    if answers.mode == DIRECT and answers.method != SOURCE_IP:
        add("method", "in direct mode the desktop ports follow the 443 server by source IP; port groups, "
                      "per-server VIPs and the cookie work through External URLs, which only tunnel mode uses")
    if answers.method == PORT_GROUP and len(answers.servers) > horizon.PORT_GROUP_MAX_SERVERS:
        add("servers", f"port groups number servers 1-{horizon.PORT_GROUP_MAX_SERVERS} (ports 10143-19972)")
    if answers.method == COOKIE and not answers.certificate:
        add("certificate", "the cookie method terminates TLS (layer 7) to read JSESSIONID: choose a certificate "
                           "or generate a self-signed one")
    _check_extra_vips(answers, add)
    return found


def _check_servers(answers, add):
    if len(answers.servers) < 2:
        add("servers", f"give at least 2 servers (one per line), not {len(answers.servers)}: "
                       "a balancer in front of one server cannot fail over")
    names, hosts = {}, {}
    for server in answers.servers:
        if server.name in names:
            add("servers", f"the name {server.name!r} appears twice")
        names[server.name] = server
        if server.address in hosts:
            add("servers", f"{hosts[server.address]!r} and {server.name!r} share the address {server.address}: "
                           "persistence remembers the server address (so that a client's ports follow each "
                           "other), so each server needs its own address")
        hosts.setdefault(server.address, server.name)
        if server.address == answers.vip:
            add("servers", f"{server.name!r} has the VIP's own address {server.address}")


def _check_extra_vips(answers, add):
    if answers.method not in PER_SERVER_VIPS:
        return
    extra = answers.extra_vips
    if len(extra) != len(answers.servers):
        add("extra_vips", f"this method needs one extra VIP address per server, in the order of the servers: "
                          f"{len(answers.servers)}, not {len(extra)}")
    seen = {answers.vip: "the balanced VIP"}
    seen.update({s.address: f"server {s.name!r}" for s in answers.servers})
    for address in extra:
        if address in seen:
            add("extra_vips", f"{address} is already used by {seen[address]}")
        seen[address] = "another extra VIP"


# --- the plan ----------------------------------------------------------------


@dataclass
class PlannedPool:
    name: str
    servers: list[Server]
    checked: bool  # carries VMware's health check
    purpose: str


@dataclass
class PlannedService:
    name: str
    address: str
    port: int
    protocol: str
    pool: str
    policy: str
    purpose: str
    layer7: bool = False
    server: str = ""  # the one server this service reaches (per-server services)
    channel: str = ""  # horizon.Channel.key, "" for the balanced 443


@dataclass
class Plan:
    answers: Answers
    policies: list[dict]
    check: dict
    pools: list[PlannedPool] = field(default_factory=list)
    services: list[PlannedService] = field(default_factory=list)
    certificate: str = ""  # name of the certificate the 443 service presents ("" = layer 4)
    generate_certificate: bool = False
    urls: dict = field(default_factory=dict)  # server name -> {"tunnel": ..., "blast": ..., "pcoip": ...}
    warnings: list[str] = field(default_factory=list)

    @property
    def group(self) -> str:
        return self.answers.prefix

    def objects(self) -> list[tuple[str, str]]:
        """(kind, name) of everything the plan creates, in creation order."""
        found = [("persistence policy", p["name"]) for p in self.policies]
        found.append(("health check", self.check["name"]))
        if self.generate_certificate:
            found.append(("certificate", self.certificate))
        found += [("pool", p.name) for p in self.pools]
        found += [("virtual service", s.name) for s in self.services]
        return found


def build_plan(answers: Answers) -> Plan:
    """Everything the answers ask for; raises WizardError when they cannot be carried out."""
    found = problems(answers)
    if found:
        raise WizardError(found)
    rules, p = answers.rules, answers.prefix
    plan = Plan(answers, policies=[], check={"name": f"{p}-favicon", **horizon.FAVICON_CHECK})
    plan.policies.append({"name": f"{p}-source-ip", "method": PersistenceMethod.SOURCE_IP,
                          "timeout": rules.persistence_timeout})
    if answers.method == COOKIE:
        plan.policies.append({"name": f"{p}-jsessionid", "method": PersistenceMethod.COOKIE_SOURCE_IP,
                              "timeout": rules.persistence_timeout})
    _plan_certificate(plan)
    _plan_balanced(plan)
    channels = horizon.channels(answers.role, rules, answers.mode)
    if answers.method == SOURCE_IP:
        _plan_shared_channels(plan, [c for c in channels if c is not horizon.TUNNEL_CHANNEL])
    else:
        for index, server in enumerate(answers.servers, 1):
            _plan_server_channels(plan, index, server, channels)
    _plan_urls(plan, channels)
    if answers.reach == NAT and answers.method == SOURCE_IP:
        plan.warnings.append(
            "Clients reach the VIP from one NAT address: source-IP affinity then sends all of them to the same "
            "server (no load spreading, and a failover moves everyone). Prefer a port group per server, "
            "per-server VIPs (N+1) or the JSESSIONID cookie.")
    return plan


def _plan_certificate(plan):
    answers = plan.answers
    if answers.certificate == GENERATE:
        plan.certificate, plan.generate_certificate = f"{answers.prefix}-self-signed", True
    else:
        plan.certificate = answers.certificate


def _plan_balanced(plan):
    answers, p = plan.answers, plan.answers.prefix
    plan.pools.append(PlannedPool(f"{p}-https", list(answers.servers), True,
                                  "phase 1 (XML API) and the tunnel: every server, checked the VMware way"))
    layer7 = bool(plan.certificate)
    policy = f"{p}-jsessionid" if answers.method == COOKIE else f"{p}-source-ip"
    how = ("layer 7: TLS terminated, JSESSIONID cookie, source IP until the cookie is known"
           if answers.method == COOKIE else
           "layer 7: TLS terminated, source-IP persistence" if layer7 else
           "layer 4: TLS passes through to the servers, source-IP persistence")
    plan.services.append(PlannedService(f"{p}-https", answers.vip, HTTPS_PORT, "tcp", f"{p}-https", policy,
                                        f"balanced HTTPS ({how})", layer7=layer7))


def _plan_shared_channels(plan, channels):
    """Method 1: every channel on the VIP's standard port, to every server, following by source IP."""
    answers, p = plan.answers, plan.answers.prefix
    for port in dict.fromkeys(c.server_port for c in channels):
        servers = [Server(s.name, s.address, port) for s in answers.servers]
        plan.pools.append(PlannedPool(f"{p}-{port}", servers, False, f"port {port} of every server"))
    for channel in channels:
        plan.services.append(PlannedService(
            f"{p}-{channel.key}", answers.vip, channel.server_port, channel.protocol, f"{p}-{channel.server_port}",
            f"{p}-source-ip", f"{channel.label}: follows the client's 443 server", channel=channel.key))


def _plan_server_channels(plan, index, server, channels):
    """Methods 2, 3 and cookie: this server's channels reach this server only."""
    answers, p = plan.answers, plan.answers.prefix
    method = answers.method
    if method == COOKIE:  # the tunnel rides on the layer-7 443 and follows the cookie
        channels = [c for c in channels if c is not horizon.TUNNEL_CHANNEL]
    if method == PORT_GROUP:  # channels the port group carries on another channel's port are left out
        channels = [c for c in channels if c.group_suffix is not None]
    address = answers.vip if method == PORT_GROUP else answers.extra_vips[index - 1]
    pools = {}  # one single-server pool per server port: "https" (the server's own port) or the number
    for channel in channels:
        label = "https" if channel.server_port is None else str(channel.server_port)
        if label not in pools:
            port = channel.port_on(server.port)
            pools[label] = PlannedPool(f"{p}-{server.name}-{label}", [Server(server.name, server.address, port)],
                                       False, f"{server.name} only, port {port}")
            plan.pools.append(pools[label])
        listen = horizon.port_group_port(index, channel) if method == PORT_GROUP else channel.port_on(HTTPS_PORT)
        plan.services.append(PlannedService(
            f"{p}-{server.name}-{channel.key}", address, listen, channel.protocol, pools[label].name,
            f"{p}-source-ip", f"{channel.label} of {server.name} only", server=server.name, channel=channel.key))


def _plan_urls(plan, channels):
    """Each server's External URLs: where the plan's services carry its tunnel, Blast and PCoIP."""
    answers = plan.answers
    if answers.mode == DIRECT:
        return
    shared = {s.channel: s for s in plan.services if not s.server}
    has_blast = any(c.key == "blast-tcp" for c in channels)
    for server in answers.servers:
        mine = {s.channel: s for s in plan.services if s.server == server.name}
        carriers = {**shared, **mine}
        # The balanced 443 carries what no channel service does (the tunnel in methods 1 and cookie); a
        # UAG's port group carries Blast TCP on its tunnel port.
        tunnel = carriers.get("tunnel", plan.services[0])
        urls = {"tunnel": f"https://{_host_of(plan, tunnel)}:{tunnel.port}"}
        if has_blast:
            blast = carriers.get("blast-tcp", tunnel)
            urls["blast"] = f"https://{_host_of(plan, blast)}:{blast.port}"
        pcoip = carriers["pcoip-tcp"]
        urls["pcoip"] = f"{_url_host(pcoip.address)}:{pcoip.port}"  # PCoIP External URL takes an IP address
        plan.urls[server.name] = urls


def _host_of(plan, service) -> str:
    return plan.answers.host if service.address == plan.answers.vip else _url_host(service.address)


# --- the checklist -----------------------------------------------------------


def checklist(plan: Plan, apply_url: str) -> list[dict]:
    """What to set on each Horizon server and what to do next, from what the plan creates."""
    answers = plan.answers
    sections = [_server_section(plan, server) for server in answers.servers]
    sections.append(_section("Health checks", [
        f"Every server is checked with GET /favicon.ico over HTTPS every {plan.check['interval']:g} s, its "
        "certificate not verified (VMware's only supported check). 200 = up. 503 = quiesced = drain: no new "
        "clients, existing sessions stay (a quiesced UAG keeps them up to 10 hours). A server is down after "
        f"{plan.check['fall']} failed checks (about a minute; refused connections are redispatched at once) and "
        f"back after {plan.check['rise']} good ones.",
        "To patch a server without cutting its users: quiesce it on the server (it answers 503) or drain it on "
        "the Drain page, and wait until it is empty.",
        f"Allow HTTPS from the balancer to each server's port (pool {plan.pools[0].name}).",
    ]))
    sections.append(_section("Clients and the firewall", _reach_items(plan)))
    sections.append(_section("Certificate", [_certificate_item(plan)]))
    sections.append({"title": "Apply the configuration", "items": [
        {"text": "The wizard created draft objects only and published nothing: nothing listens yet. Review the "
                 "pending changes and apply them.", "link": apply_url, "link_text": "Apply the configuration"},
    ]})
    return sections


def _section(title, texts) -> dict:
    return {"title": title, "items": [{"text": text, "link": ""} for text in texts]}


WHERE_TO_SET = {
    (UAG, "view5"): "View Administrator → View Configuration → Servers → Security Servers → Edit",
    (UAG, "horizon7"): "UAG admin console → Edge Service Settings → Horizon Settings",
    (UAG, "horizon8"): "UAG admin console → Edge Service Settings → Horizon Settings",
    (CONNECTION_SERVER, "view5"): "View Administrator → View Configuration → Servers → Connection Servers → Edit",
    (CONNECTION_SERVER, "horizon7"): "Horizon Console → Settings → Servers → Connection Servers → Edit",
    (CONNECTION_SERVER, "horizon8"): "Horizon Console → Settings → Servers → Connection Servers → Edit",
}
URL_LABELS = {"tunnel": "Tunnel (HTTP(S) Secure Tunnel) External URL", "blast": "Blast External URL",
              "pcoip": "PCoIP External URL"}


def _server_section(plan, server) -> dict:
    answers = plan.answers
    title = f"{ROLE_WORDS[answers.role][0]} {server.name} ({server.address})"
    where = WHERE_TO_SET[(answers.role, answers.version)]
    if answers.mode == DIRECT:
        return _section(title, [
            f"{where}: clear 'Use Secure Tunnel connection', 'Use PCoIP Secure Gateway' and 'Use Blast Secure "
            "Gateway' (direct mode).",
            f"Clients connect to {answers.host}:443; RDP 3389, USB 32111 and MMR 9427 on {answers.vip} follow the "
            "server that authenticated them (one persistence group).",
        ])
    items = [f"{where}:"]
    for key, url in plan.urls[server.name].items():
        items.append(f"{URL_LABELS[key]}: {url}")
    if any(s.server == server.name for s in plan.services):
        ports = ", ".join(f"{s.port}/{s.protocol}" for s in plan.services if s.server == server.name)
        items.append(f"Those ports ({ports}) on {_server_address(plan, server)} reach {server.name} only.")
    return _section(title, items)


def _server_address(plan, server):
    return next(s.address for s in plan.services if s.server == server.name)


def _reach_items(plan) -> list[str]:
    answers, rules = plan.answers, plan.answers.rules
    listen = sorted({(s.address, s.port, s.protocol) for s in plan.services},
                    key=lambda x: (x[0] != answers.vip, x[0], x[1], x[2]))
    items = [
        "Let clients reach: " + ", ".join(f"{_url_host(a)}:{port}/{proto}" for a, port, proto in listen) + ".",
        f"All {len(plan.services)} virtual services share the persistence group {plan.group!r}, so a client's "
        f"connections on every port follow each other; persistence {rules.persistence_timeout} s and idle "
        f"timeout {rules.idle_timeout} s for {rules.label} ({rules.source}).",
    ]
    if answers.public_name:
        items.append(f"DNS: {answers.public_name} must resolve (for clients) to the address that reaches "
                     f"{answers.vip}.")
    items.append("If a firewall translates these addresses, set the External URLs above to the public "
                 "addresses and ports that lead to them.")
    items += plan.warnings
    return items


def _certificate_item(plan) -> str:
    if not plan.certificate:
        return ("None on the balancer: layer 4 passes TLS through, so clients see each server's own certificate; "
                f"give every server a certificate for {plan.answers.host}.")
    made = "a self-signed certificate the wizard generated" if plan.generate_certificate else "the certificate"
    note = (" Clients warn about it unless they trust it: upload a CA-signed one under Certificates and put it "
            "on the service." if plan.generate_certificate else "")
    return (f"The balancer terminates TLS on {plan.services[0].name} with {made} {plan.certificate!r} and "
            f"re-encrypts to the servers (their certificates are not verified).{note}")


# --- creating it -------------------------------------------------------------


MODELS = {"persistence policy": PersistencePolicy, "health check": HealthCheck, "certificate": Certificate,
          "pool": Pool, "virtual service": VirtualService}


def clashes(plan: Plan) -> list[str]:
    """Objects of the plan whose names exist already, as messages naming them."""
    found = []
    for kind, name in plan.objects():
        if MODELS[kind].objects.filter(name=name).exists():
            found.append(f"a {kind} named {name!r} exists already")
    return found


def create_setup(plan: Plan, user, apply_url: str) -> HorizonSetup:
    """Create the plan's objects and the HorizonSetup record in one transaction, each audited.

    Raises WizardError (nothing created) on a name clash or when a model refuses an object (e.g. a VIP
    that another service already listens on), naming the object and the field.
    """
    found = clashes(plan)
    if found:
        raise WizardError({"prefix": [f"{message}; choose another name prefix" for message in found]})
    with transaction.atomic():
        created = _Creator(plan, user)
        created.run()
        setup = HorizonSetup.objects.create(
            prefix=plan.answers.prefix, created_by=user if user and user.is_authenticated else None,
            username=user.get_username() if user and user.is_authenticated else "",
            answers=plan.answers.to_dict(), created_objects=created.log, checklist=checklist(plan, apply_url),
        )
        record(user, AuditAction.CREATE, setup, objects=len(created.log), method=plan.answers.method)
    return setup


class _Creator:
    """Saves the plan's objects in dependency order; every one validated and audited."""

    def __init__(self, plan: Plan, user):
        self.plan, self.user, self.log = plan, user, []
        self.policies, self.pools = {}, {}

    def run(self):
        plan = self.plan
        for values in plan.policies:
            self.policies[values["name"]] = self.save(PersistencePolicy(**values))
        check = self.save(HealthCheck(**plan.check))
        certificate = self.certificate()
        for planned in plan.pools:
            pool = self.save(Pool(name=planned.name, health_check=check if planned.checked else None))
            for server in planned.servers:
                self.save(RealServer(pool=pool, name=server.name, address=server.address, port=server.port))
            self.pools[planned.name] = pool
        for planned in plan.services:
            self.service(planned, certificate)

    def certificate(self) -> Certificate | None:
        plan = self.plan
        if not plan.certificate:
            return None
        if not plan.generate_certificate:
            return Certificate.objects.get(name=plan.certificate)
        names = [plan.answers.public_name] if plan.answers.public_name else []
        cert_pem, key_pem = tlsconf.generate_self_signed((names or [plan.answers.vip])[0], [plan.answers.vip])
        cert = Certificate(name=plan.certificate)
        cert.set_material(cert_pem, "", key_pem)
        return self.save(cert, generated="self-signed")

    def service(self, planned: PlannedService, certificate):
        rules = self.plan.answers.rules
        service = VirtualService(
            name=planned.name, address=planned.address, port=planned.port, protocol=planned.protocol,
            mode=Mode.L7 if planned.layer7 else Mode.L4, pool=self.pools[planned.pool],
            scheduler=Scheduler.LEAST_CONNECTIONS if not planned.server else Scheduler.ROUND_ROBIN,
            persistence=self.policies[planned.policy], persistence_group=self.plan.group,
            idle_timeout=float(rules.idle_timeout),
        )
        self.validate(service)
        service.save()
        if planned.layer7:
            service.set_certificates([certificate])
        self.audit(service)

    def save(self, obj, **details):
        self.validate(obj)
        obj.save()
        self.audit(obj, **details)
        return obj

    def validate(self, obj):
        try:
            obj.full_clean()
        except ValidationError as exc:
            kind = obj._meta.verbose_name
            label = getattr(obj, "server_id", None) if isinstance(obj, RealServer) else obj.name
            messages = [f"{kind} {label!r}: {name + ': ' if name != '__all__' else ''}{message}"
                        for name, found in exc.message_dict.items() for message in found]
            raise WizardError({None: messages}) from None

    def audit(self, obj, **details):
        record(self.user, AuditAction.CREATE, obj, obj.field_values(), wizard=self.plan.answers.prefix, **details)
        self.log.append({"type": obj._meta.verbose_name, "name": getattr(obj, "server_id", None) or obj.name})
