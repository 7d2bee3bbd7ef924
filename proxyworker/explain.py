"""Tracing a client: which server it would reach now on each virtual service, and why.

Pure (sans-io). It decides nothing of its own: every decision is the data
plane's function applied to the same inputs a worker has (`client_key`,
`L7Persistence.route` and `cookie_key`, `ServerStates.accepts_new` /
`accepts_stuck`, `scheduler.candidates`, the schedulers, and
`Dispatcher.stuck_server` / `pick_new`), in the order `Dispatcher.choose_sticky`
and `l7.routing.Router.choose` apply them. This module only narrates, so a
trace cannot drift from what the workers do.

Two steps, so that the caller's I/O is one Redis pipeline: `lookups` names the
persistence entries a trace reads, `explain` takes what Redis held for them
(host and remaining TTL), the health and admin hashes and, for least
connections, the live connection counts per server summed over the workers.

What a trace cannot see is worker-local: a server held down for
`HOLD_DOWN_SECONDS` after a failed connect, the rotation position of each
worker's round robin, and each worker's own least-connections counts.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from .config import RealServer, Snapshot, VirtualService
from .dispatch import Counters, Dispatcher, Service
from .l7.cookies import INSERT_COOKIE, InsertCookie, L7Persistence, Route, insert_secret
from .l7.routing import COOKIE_KEY, NEEDS_SOURCE
from .persistence import PersistenceTable
from .scheduler import candidates, make_scheduler
from .state import HOLD_DOWN_SECONDS, UP, ServerStates

NOW = 0.0  # nothing is held down in a trace's own ServerStates: hold-downs are worker-local

WORKER_LOCAL = (
    f"A server whose connect just failed is avoided for {HOLD_DOWN_SECONDS:g} s by that worker only "
    "(hold-down); that is not visible here."
)

SKIP = {"down": "skip_down", "drain": "skip_drain", "disabled": "skip_disabled", "weight": "skip_weight",
        "held": "skip_held"}
SKIP_TEXT = {
    "down": "is down (health check): no traffic",
    "drain": "is in drain: it takes no new clients",
    "disabled": "is disabled by an administrator: no traffic",
    "weight": "has weight 0: it takes no new clients",
    "held": "is held down after a failed connect",
}
SCHEDULER_TEXT = {
    "first_available": "first_available: every new client goes to the first usable server in pool order",
    "round_robin": "round robin: each worker hands new clients to these in turn (the rotation is per worker)",
    "weighted_round_robin": "weighted round robin: each worker hands new clients to these in proportion to "
                            "their weights (the rotation is per worker)",
    "least_connections": "least connections: the fewest active connections per unit of weight",
}


# --- results -----------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A persistence entry as Redis holds it."""

    host: str
    ttl: int | None  # seconds left (None: Redis reported no expiry)


@dataclass(frozen=True)
class Reason:
    kind: str  # a code: "persist_entry", "stuck_drain", "skip_backup", "scheduler", ...
    text: str  # the same, as a sentence
    server: str = ""  # the real server id it is about, if any


@dataclass
class ServiceTrace:
    vs: VirtualService
    reasons: list[Reason] = field(default_factory=list)
    server: RealServer | None = None  # where the client lands, when that is decided now
    one_of: tuple[RealServer, ...] = ()  # else: the scheduler picks one of these
    why_none: str = ""  # neither: why no server would take the client
    client_key: str = ""  # the persistence key that decided ("" when none did)
    entry: Entry | None = None  # the entry behind it, as Redis holds it now

    def kinds(self) -> list[str]:
        return [reason.kind for reason in self.reasons]

    def as_dict(self) -> dict:
        vs = self.vs
        return {
            "vs": vs.name, "address": vs.address, "port": vs.port, "protocol": vs.protocol, "mode": vs.mode,
            "group": vs.group, "persistence": vs.persistence.method, "scheduler": vs.scheduler,
            "client_key": self.client_key,
            "entry": {"host": self.entry.host, "ttl": self.entry.ttl} if self.entry else None,
            "server": _server_dict(self.server) if self.server else None,
            "one_of": [_server_dict(s) for s in self.one_of],
            "why_none": self.why_none,
            "reasons": [{"kind": r.kind, "text": r.text, "server": r.server} for r in self.reasons],
        }


@dataclass
class Trace:
    client: str
    cookie: str = ""
    version: int | None = None  # the running configuration version traced against
    services: list[ServiceTrace] = field(default_factory=list)
    problem: str = ""  # set when nothing could be traced (no configuration, unknown VIP)
    notes: tuple[str, ...] = (WORKER_LOCAL,)

    def service(self, name: str) -> ServiceTrace:
        return next(t for t in self.services if t.vs.name == name)

    def as_dict(self) -> dict:
        return {"client": self.client, "cookie": bool(self.cookie), "version": self.version,
                "problem": self.problem, "notes": list(self.notes),
                "services": [t.as_dict() for t in self.services]}


def _server_dict(server: RealServer) -> dict:
    return {"id": server.id, "name": server.name, "address": server.address, "port": server.port}


def describe(server: RealServer) -> str:
    return f"{server.id} ({_hostport(server)})"


def _hostport(server: RealServer) -> str:
    return f"[{server.address}]:{server.port}" if ":" in server.address else f"{server.address}:{server.port}"


# --- step 1: which entries to read --------------------------------------------------


def lookups(snapshot: Snapshot, client: str, cookie: str = "", vs_name: str = "",
            cert_key: str | bytes | None = None) -> list[tuple[str, str]]:
    """The (persistence group, client key) pairs whose Redis entries `explain` needs."""
    pairs = []
    for vs in _traced(snapshot, vs_name):
        if not vs.enabled:
            continue
        service = _service(snapshot, vs)
        route, _ = _route(service, client, cookie, cert_key)
        pairs += [(vs.group, key) for key in route.keys]
    return list(dict.fromkeys(pairs))


# --- step 2: the explanation --------------------------------------------------------


def explain(snapshot: Snapshot | None, client: str, health: Mapping[str, str], admin: Mapping[str, str],
            entries: Mapping[tuple[str, str], Entry | None], active: Mapping[str, int] | None = None,
            cookie: str = "", vs_name: str = "", cert_key: str | bytes | None = None) -> Trace:
    """Per virtual service (or only `vs_name`): where `client` (an IP address) would land now, and why.

    `entries` maps the pairs of `lookups` to what Redis holds (None or absent: no entry);
    `active` is server id -> live connections over all workers (None: not known).
    """
    trace = Trace(client=client, cookie=cookie)
    if snapshot is None:
        trace.problem = ("No configuration has been published yet: no worker listens on any VIP, "
                         "so this client reaches no server.")
        return trace
    trace.version = snapshot.version
    if vs_name and not any(vs.name == vs_name for vs in snapshot.virtual_services):
        trace.problem = f"The running configuration (version {snapshot.version}) has no virtual service {vs_name!r}."
        return trace
    states = ServerStates()
    states.update(health, admin)
    counts = dict(active or {})
    dispatcher = Dispatcher(states, PersistenceTable(), None, counts, clock=lambda: NOW)
    for vs in _traced(snapshot, vs_name):
        service = _service(snapshot, vs)
        tracer = _Tracer(dispatcher, service, entries, active is not None)
        trace.services.append(tracer.run(client, cookie, cert_key))
    return trace


def _traced(snapshot: Snapshot, vs_name: str) -> list[VirtualService]:
    return [vs for vs in snapshot.virtual_services if not vs_name or vs.name == vs_name]


def _service(snapshot: Snapshot, vs: VirtualService) -> Service:
    """The virtual service as a worker applies it (a fresh scheduler: rotation is per worker anyway)."""
    return Service(vs, snapshot.pool(vs.pool), make_scheduler(vs.scheduler), Counters())


def _route(service: Service, client: str, cookie: str, cert_key) -> tuple[Route, L7Persistence | None]:
    """The keys a worker would look up for this client, in its order (`Router.route` at layer 7)."""
    vs = service.vs
    if vs.mode != "l7":
        return (Route(keys=(service.key_for(client),)) if service.sticky else Route()), None
    insert = None
    if vs.persistence.method == "cookie_insert":
        if not cert_key:
            return Route(), None  # cannot read the appliance's cookie without the shared secret
        insert = InsertCookie(insert_secret(cert_key))
    l7 = L7Persistence(vs.persistence, vs.group, insert)
    source_key = service.key_for(client) if l7.method in NEEDS_SOURCE else None
    return l7.route(_cookie_headers(l7, cookie), source_key, tuple(service.by_host)), l7


def _cookie_headers(l7: L7Persistence, cookie: str) -> list[tuple[bytes, bytes]]:
    """`cookie` is a whole Cookie header when it holds '=', else the value of the VIP's cookie."""
    if not cookie:
        return []
    if "=" in cookie:
        return [(b"cookie", cookie.encode())]
    name = l7.insert.name if l7.insert is not None else l7.cookie_name
    return [(b"cookie", name + b"=" + cookie.encode())]


class _Tracer:
    """One virtual service: the steps of `Router.choose` / `Dispatcher.choose_sticky`, narrated."""

    def __init__(self, dispatcher: Dispatcher, service: Service, entries, counts_known: bool):
        self.dispatcher, self.service, self.entries = dispatcher, service, entries
        self.states = dispatcher.states
        self.counts_known = counts_known
        self.vs = service.vs
        self.result = ServiceTrace(self.vs)

    def say(self, kind: str, text: str, server: RealServer | None = None) -> None:
        self.result.reasons.append(Reason(kind, text, server.id if server else ""))

    def run(self, client: str, cookie: str, cert_key) -> ServiceTrace:
        vs = self.vs
        if not vs.enabled:
            self.result.why_none = "This virtual service is disabled: no worker listens on it."
            self.say("vip_disabled", self.result.why_none)
            return self.result
        route, l7 = _route(self.service, client, cookie, cert_key)
        method = vs.persistence.method
        if method == "none":
            self.say("no_persistence", "No persistence on this VIP: every "
                     + ("request" if vs.mode == "l7" else "connection") + " is balanced on its own.")
        elif method == "cookie_insert":
            return self._insert(route, cookie, cert_key)
        elif l7 is not None and l7.uses_cookie and not any(k.startswith(COOKIE_KEY) for k in route.keys):
            self.say("cookie_none", f"No usable {vs.persistence.cookie_name} cookie given: "
                     + ("the source address decides until the server sets one." if method == "cookie_source_ip"
                        else "the scheduler decides; the server's Set-Cookie then pins the client."))
        for key in route.keys:
            if key.startswith(COOKIE_KEY):
                if self._cookie(key):
                    return self.result
                continue
            return self._sticky(client, key)  # a source-IP key is claimed, or re-pointed: it always decides
        return self._balance()

    # -- persistence --------------------------------------------------------------
    def _sticky(self, client: str, key: str) -> ServiceTrace:
        vs, policy = self.vs, self.vs.persistence
        self._explain_key(client, key)
        entry = self.entries.get((vs.group, key))
        self.result.client_key, self.result.entry = key, entry
        if entry is None:
            self.say("persist_none", f"No persistence entry for {key} in group {vs.group}: the scheduler "
                     f"chooses, and the choice is stored for {policy.timeout} s for every VIP of the group.")
            return self._balance()
        self._explain_entry(key, entry)
        server = self.dispatcher.stuck_server(self.service, entry.host, ())
        if server is not None:
            return self._stays(server)
        if entry.host not in self.service.by_host:
            self.say("persist_foreign", f"No server of pool {self.service.pool.name} has the address {entry.host}: "
                     "this connection is balanced, and the entry is left alone for the VIPs of the group that have it.")
            return self._balance()
        for stuck in self.service.by_host[entry.host]:
            self.say("stuck_unusable", f"{describe(stuck)} {SKIP_TEXT[self.states.state(stuck)]}, so the client "
                     "would be re-pointed (for every worker and every VIP of the group).", stuck)
        return self._balance(exclude=frozenset(s.id for s in self.service.by_host[entry.host]), repoint=True)

    def _cookie(self, key: str) -> bool:
        """A session-cookie key, read only: True when it decides."""
        vs = self.vs
        entry = self.entries.get((vs.group, key))
        name = vs.persistence.cookie_name
        if entry is None:
            self.say("cookie_unknown", f"The {name} cookie (key {key}) is not in the persistence table: "
                     "no server set it, or its entry expired.")
            return False
        self.say("cookie_key", f"The {name} cookie gives the key {key} in group {vs.group}.")
        self._explain_entry(key, entry)
        server = self.dispatcher.stuck_server(self.service, entry.host, ())
        if server is not None:
            self.result.client_key, self.result.entry = key, entry
            self._stays(server)
            return True
        if entry.host not in self.service.by_host:
            self.say("cookie_unusable", f"No server of pool {self.service.pool.name} has the address {entry.host}: "
                     "the cookie is passed over.")
        for stuck in self.service.by_host.get(entry.host, ()):
            self.say("cookie_unusable", f"{describe(stuck)} {SKIP_TEXT[self.states.state(stuck)]}: the cookie is "
                     "passed over (the new server sets a new one).", stuck)
        return False

    def _insert(self, route: Route, cookie: str, cert_key) -> ServiceTrace:
        if not cert_key:
            self.say("insert_unreadable", "The insert cookie cannot be read here (no VIEWLB_CERT_KEY): "
                     "the scheduler's part is shown.")
            return self._balance()
        if route.pinned is None:
            self.say("insert_none", f"No valid {INSERT_COOKIE.decode()} cookie " + ("given" if not cookie else
                     "(it names no server of this pool)") + ": the scheduler decides, and the response sets one.")
            return self._balance()
        self.say("insert_cookie", f"The {INSERT_COOKIE.decode()} cookie names the server host {route.pinned}.")
        server = self.dispatcher.stuck_server(self.service, route.pinned, ())
        if server is not None:
            return self._stays(server)
        for stuck in self.service.by_host.get(route.pinned, ()):
            self.say("stuck_unusable", f"{describe(stuck)} {SKIP_TEXT[self.states.state(stuck)]}: the request is "
                     "balanced and the response sets a new cookie.", stuck)
        return self._balance()

    def _explain_key(self, client: str, key: str) -> None:
        policy, group = self.vs.persistence, self.vs.group
        version = ipaddress.ip_address(client.split("%", 1)[0]).version
        mask = policy.ipv4_mask if version == 4 else policy.ipv6_mask
        if "/" in key:
            text = (f"Persistence group {group}, client key {key}: the IPv{version} mask is /{mask}, "
                    f"so every address in {key} shares this key (and its server).")
        else:
            text = f"Persistence group {group}, client key {key} (the IPv{version} mask is /{mask})."
        self.say("persist_key", text)

    def _explain_entry(self, key: str, entry: Entry) -> None:
        left = f"{entry.ttl} s left" if entry.ttl is not None else "no expiry"
        self.say("persist_entry", f"Persistence entry {self.vs.group}:{key} -> {entry.host} ({left}; "
                 f"each connection renews it to {self.vs.persistence.timeout} s).")

    def _stays(self, server: RealServer) -> ServiceTrace:
        state = self.states.state(server)
        if state == UP:
            self.say("stuck", f"{describe(server)} is up: the client stays on it.", server)
        else:
            self.say("stuck_drain", f"{describe(server)} is in drain: it takes no new clients but keeps the ones "
                     "stuck to it, so this client stays.", server)
        self.result.server = server
        return self.result

    # -- the scheduler --------------------------------------------------------------
    def _balance(self, exclude=frozenset(), repoint=False) -> ServiceTrace:
        servers = self.service.pool.servers
        states = self.states

        def usable(server):
            return server.id not in exclude and states.accepts_new(server, NOW)

        chosen = candidates(servers, usable)  # what Dispatcher.pick_new hands the scheduler
        for server in servers:
            if server.id in exclude:
                continue
            refusal = states.refusal(server, NOW)
            if refusal is not None:
                self.say(SKIP[refusal], f"{describe(server)} {SKIP_TEXT[refusal]}.", server)
            elif server not in chosen:
                self.say("skip_backup", f"{describe(server)} is a backup: used only when no primary can take "
                         "a new client.", server)
        if chosen and chosen[0].backup:
            self.say("backup_used", "No primary server can take a new client, so the backups do.")
        if not chosen:
            self.result.why_none = "No server of pool " + self.service.pool.name + " can take a new client" + (
                ": the connection would be refused." if self.vs.mode == "l4" else ": the request gets 503.")
            self.say("no_server", self.result.why_none)
            return self.result
        possible = self._possible(chosen, exclude)
        if len(chosen) == 1:
            text = "Only one server can take a new client"
        else:
            text = SCHEDULER_TEXT[self.vs.scheduler]
            if self.vs.scheduler == "least_connections":
                text += self._counts_text(chosen)
        if len(possible) == 1:
            self.result.server = possible[0]
            verb = "re-pointed to" if repoint else "sent to"
            self.say("scheduler", f"{text}. The client would be {verb} {describe(possible[0])}.", possible[0])
        else:
            self.result.one_of = tuple(possible)
            names = ", ".join(describe(s) for s in possible)
            verb = "re-pointed to" if repoint else "sent to"
            self.say("scheduler", f"{text}. The client would be {verb} one of {names}.")
        return self.result

    def _possible(self, chosen: list[RealServer], exclude) -> list[RealServer]:
        """Every server `Dispatcher.pick_new` can give a new client now: its distinct picks over a full
        turn of a fresh scheduler (each worker's own scheduler is somewhere in that turn)."""
        turn = sum(max(s.weight, 1) for s in chosen)
        picks = {self.dispatcher.pick_new(self.service, exclude).id for _ in range(turn)}
        return [s for s in chosen if s.id in picks]

    def _counts_text(self, chosen: list[RealServer]) -> str:
        if not self.counts_known:
            return " (live connection counts are not known here)"
        counts = ", ".join(f"{s.id} {self.dispatcher.active.get(s.id, 0)}" for s in chosen)
        return f" (live connections over all workers: {counts}; each worker compares its own counts)"
