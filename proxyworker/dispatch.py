"""Choosing the real server for a client: persistence first, then the scheduler.

No sockets here. `Service` is a virtual service as applied by this worker (its
snapshot entry, pool and scheduler); `Dispatcher.choose` gives one client a
server, honouring server states, port following and redispatch (servers the
caller already tried are excluded).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from .config import Certificate, Pool, RealServer, VirtualService
from .persistence import PersistenceTable, SharedPersistence, client_key
from .scheduler import candidates
from .state import ServerStates

log = logging.getLogger("proxyworker.dispatch")


@dataclass
class Counters:
    """Per virtual service, kept across config versions (dashboards see totals since start)."""

    active: int = 0
    total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    refused: int = 0

    def as_dict(self) -> dict:
        return {"active": self.active, "total": self.total, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "refused": self.refused}


@dataclass
class ServerCounters:
    active: int = 0
    total: int = 0
    failed: int = 0

    def as_dict(self) -> dict:
        return {"active": self.active, "total": self.total, "failed": self.failed}


@dataclass
class Service:
    vs: VirtualService
    pool: Pool
    scheduler: object
    counters: Counters
    by_host: dict[str, list[RealServer]] = field(default_factory=dict)
    certificates: tuple[Certificate, ...] = ()  # layer 7: the snapshot certificates this VIP presents

    def __post_init__(self):
        for server in self.pool.servers:
            self.by_host.setdefault(server.address, []).append(server)
        policy = self.vs.persistence
        # Layer 4 knows only the source address; cookie methods fall back to it until l7 learns a cookie.
        self.sticky = policy.method in ("source_ip", "cookie_source_ip")
        # Read once per connection: plain attributes, not properties of the snapshot.
        self.group, self.ttl = self.vs.group, policy.timeout
        self.ipv4_mask, self.ipv6_mask = policy.ipv4_mask, policy.ipv6_mask

    @property
    def name(self):
        return self.vs.name

    def key_for(self, ip: str) -> str:
        return client_key(ip, self.ipv4_mask, self.ipv6_mask)


class Choice(NamedTuple):  # a tuple: built once per connection, cheaper than a frozen dataclass
    server: RealServer
    client_key: str  # "" when the service has no persistence


class Dispatcher:
    def __init__(self, states: ServerStates, table: PersistenceTable, shared: SharedPersistence,
                 active: dict[str, int], clock: Callable[[], float]):
        self.states, self.table, self.shared = states, table, shared
        self.active = active  # server id -> active connections in this worker (least_connections)
        self.clock = clock

    def pick_new(self, service: Service, exclude=frozenset()) -> RealServer | None:
        now = self.clock()
        states = self.states

        def usable(server):
            return server.id not in exclude and states.accepts_new(server, now)

        return service.scheduler.pick(candidates(service.pool.servers, usable), self.active)

    def stuck_server(self, service: Service, host: str, exclude) -> RealServer | None:
        for server in service.by_host.get(host, ()):
            if server.id not in exclude and self.states.accepts_stuck(server):
                return server
        return None

    def choose_now(self, service: Service, ip: str, exclude=frozenset()) -> tuple[bool, Choice | None]:
        """(decided, choice) without Redis: no persistence, or a client the local cache knows.

        A known client whose entry was confirmed with Redis more than TRUST_SECONDS ago is
        sent to its host at once and queued for the next batched refresh, which adopts what
        Redis holds (so a re-point by another worker still arrives within about a second):
        one round trip per batch instead of one per connection. decided is False when
        `choose` must be awaited: a client this worker does not know, or one whose server
        cannot take it (re-pointing goes through Redis).
        """
        if not service.sticky:
            server = self.pick_new(service, exclude)
            return True, (Choice(server, "") if server else None)
        key = client_key(ip, service.ipv4_mask, service.ipv6_mask)
        now = self.clock()
        host, trusted = self.table.lookup(service.group, key, now)
        if host is None:
            return False, None
        if not trusted:
            self.table.touch(service.group, key, host, service.ttl, now)
        server = self.stuck_server(service, host, exclude)
        return (True, Choice(server, key)) if server is not None else (False, None)

    async def choose(self, service: Service, ip: str, exclude=frozenset()) -> Choice | None:
        if not service.sticky:
            server = self.pick_new(service, exclude)
            return Choice(server, "") if server else None
        return await self.choose_sticky(service, service.key_for(ip), exclude)

    async def choose_sticky(self, service: Service, key: str, exclude=frozenset()) -> Choice | None:
        """Source-IP keys here; the layer-7 code passes its cookie keys the same way."""
        group, ttl = service.vs.group, service.vs.persistence.timeout
        host, trusted = self.table.lookup(group, key, self.clock())
        if not trusted:
            proposal = host or getattr(self.pick_new(service, exclude), "address", None)
            host = await self.shared.claim(group, key, proposal, ttl)
            if host is None:
                return None
        server = self.stuck_server(service, host, exclude)
        if server is not None:
            return Choice(server, key)
        if host not in service.by_host:
            # The group's server is not in this service's pool: balance this one
            # connection, but leave the entry alone for the services that have it.
            server = self.pick_new(service, exclude)
            return Choice(server, key) if server else None
        return await self._repoint(service, key, host, exclude)

    async def _repoint(self, service: Service, key: str, host: str, exclude) -> Choice | None:
        """The stuck host is down, disabled or failed for this client: move the client for every worker."""
        group, ttl = service.vs.group, service.vs.persistence.timeout
        avoid = set(exclude)
        for _ in range(3):
            avoid.update(s.id for s in service.by_host.get(host, ()))
            server = self.pick_new(service, avoid)
            if server is None:
                return None
            winner = await self.shared.repoint(group, key, host, server.address, ttl)
            chosen = self.stuck_server(service, winner, exclude)
            if chosen is not None:
                if winner != host:
                    log.info("persistence %s/%s moved from %s to %s", group, key, host, winner)
                return Choice(chosen, key)
            host = winner
        return None

    def reserve(self, server: RealServer) -> None:
        """Count a connection on `server` from the moment it is chosen, not when it connects,
        so a burst of clients does not all see the same least-loaded server."""
        self.active[server.id] = self.active.get(server.id, 0) + 1

    def release(self, server: RealServer) -> None:
        self.active[server.id] -= 1

    def connect_failed(self, server: RealServer) -> None:
        self.states.connect_failed(server.id, self.clock())
