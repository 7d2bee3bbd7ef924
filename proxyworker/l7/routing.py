"""Placing one layer-7 request: the persistence decision against the worker's shared store.

`cookies.L7Persistence` says which client keys a request carries; this module
looks them up in the same store as layer-4 source-IP entries (the local
`PersistenceTable` in front of Redis) and falls back to the scheduler.

Two entry points, so the common case costs no task and no Redis round trip:
`choose_now` answers from the local cache alone (a request without a key, a
cookie confirmed with Redis in the last seconds) and says when it cannot;
`choose` may ask Redis. Rules:
- a cookie key is only ever *read* (a client inventing cookie values cannot
  fill Redis); it is written when a server's Set-Cookie teaches it (`store`);
- a source-IP key is claimed like at layer 4 (`Dispatcher.choose_sticky`:
  read, else claim, re-point when its server is unusable);
- a cookie whose server is unusable or outside this pool falls through to the
  next key, then to the scheduler: the new server sets a new cookie.
"""
from __future__ import annotations

import math

from ..config import RealServer
from ..dispatch import Choice, Dispatcher, Service
from ..scheduler import candidates
from .cookies import NOTHING, L7Persistence, Learn, Route

COOKIE_KEY = "cookie:"
NEEDS_SOURCE = ("source_ip", "cookie_source_ip")


class Router:
    """The routing of one virtual service (one config version): persistence, then the scheduler."""

    __slots__ = ("dispatcher", "service", "l7", "group", "ttl", "hosts", "needs_source", "insert_name", "quiet",
                 "_usable", "_version", "_until", "_stuck_for", "_stuck_version")

    def __init__(self, dispatcher: Dispatcher, service: Service, l7: L7Persistence):
        self.dispatcher, self.service, self.l7 = dispatcher, service, l7
        self.group = service.vs.group
        self.ttl = service.vs.persistence.timeout
        self.hosts = tuple(service.by_host)
        self.needs_source = l7.method in NEEDS_SOURCE
        self.insert_name = l7.insert.name if l7.method == "cookie_insert" else None
        # a response without Set-Cookie teaches these methods nothing (`L7Persistence.learn`)
        self.quiet = l7.method in ("none", "cookie_learn")
        self._usable: list[RealServer] = []  # see `_candidates`
        self._version, self._until = -1, 0.0
        self._stuck_for: dict[str, RealServer | None] = {}  # see `_stuck`
        self._stuck_version = -1

    def route(self, headers, source_key: str | None) -> Route:
        return self.l7.route(headers, source_key, self.hosts)

    def _balance(self, exclude) -> Choice | None:
        if exclude:
            server = self.dispatcher.pick_new(self.service, exclude)
        else:
            server = self.service.scheduler.pick(self._candidates(), self.dispatcher.active)
        return Choice(server, "") if server is not None else None

    def _candidates(self) -> list[RealServer]:
        """What `Dispatcher.pick_new` hands the scheduler when nothing is excluded, kept until the
        server states change (`ServerStates.version`) or a hold-down runs out: worked out for
        every request, it was a tenth of the cost of a keep-alive request."""
        dispatcher = self.dispatcher
        states = dispatcher.states
        now = dispatcher.clock()
        if states.version == self._version and now < self._until:
            return self._usable
        servers = self.service.pool.servers
        self._usable = candidates(servers, lambda server: states.accepts_new(server, now))
        ends = [t for t in map(states.held_until, (s.id for s in servers)) if t is not None and t > now]
        self._version, self._until = states.version, min(ends, default=math.inf)
        return self._usable

    def _stuck(self, host: str, exclude) -> RealServer | None:
        """`Dispatcher.stuck_server`, remembered per host until the server states change (whether a
        server keeps its clients depends on its health and admin state alone)."""
        if exclude:
            return self.dispatcher.stuck_server(self.service, host, exclude)
        version = self.dispatcher.states.version
        if version != self._stuck_version:
            self._stuck_for, self._stuck_version = {}, version
        try:
            return self._stuck_for[host]
        except KeyError:
            server = self._stuck_for[host] = self.dispatcher.stuck_server(self.service, host, exclude)
            return server

    def _pinned(self, route: Route, exclude) -> Choice | None:
        """Insert mode: the host named by the appliance's cookie, if it still takes its clients."""
        server = self._stuck(route.pinned, exclude)
        return Choice(server, "") if server is not None else self._balance(exclude)

    def choose_now(self, route: Route, exclude=frozenset()) -> tuple[bool, Choice | None]:
        """(decided, choice) from the local cache alone; decided is False when Redis must be asked."""
        if route.pinned is not None:
            return True, self._pinned(route, exclude)
        if route.keys:
            dispatcher = self.dispatcher
            now = dispatcher.clock()
            for key in route.keys:
                host, trusted = dispatcher.table.lookup(self.group, key, now)
                if not trusted:
                    return False, None
                server = self._stuck(host, exclude)
                if server is not None:
                    return True, Choice(server, key)
                if not key.startswith(COOKIE_KEY):
                    return False, None  # a source-IP client whose server is unusable: re-point it through Redis
        return True, self._balance(exclude)

    async def choose(self, route: Route, exclude=frozenset()) -> Choice | None:
        if route.pinned is not None:
            return self._pinned(route, exclude)
        dispatcher = self.dispatcher
        for key in route.keys:
            if not key.startswith(COOKIE_KEY):
                return await dispatcher.choose_sticky(self.service, key, exclude)
            host, trusted = dispatcher.table.lookup(self.group, key, dispatcher.clock())
            if not trusted:
                host = await dispatcher.shared.claim(self.group, key, None, self.ttl)  # read only
            server = dispatcher.stuck_server(self.service, host, exclude) if host else None
            if server is not None:
                return Choice(server, key)
        return self._balance(exclude)

    # -- learning --------------------------------------------------------------------
    def learn(self, route: Route, headers, server: RealServer, source_key: str | None) -> Learn:
        if self.quiet and not headers:
            return NOTHING
        return self.l7.learn(route, headers, server.address, source_key)

    def to_store(self, learn: Learn) -> list[tuple[str, str]]:
        """The entries of `learn` that the shared store does not hold yet (usually none)."""
        if not learn.store:
            return []
        dispatcher = self.dispatcher
        now = dispatcher.clock()
        lookup = dispatcher.table.lookup
        return [(key, host) for key, host in learn.store if lookup(self.group, key, now) != (host, True)]

    async def store(self, entries) -> None:
        """Write learned entries to Redis before the client sees the cookie: its next request
        may reach another worker (or appliance) within milliseconds."""
        shared = self.dispatcher.shared
        for key, host in entries:
            held = await shared.claim(self.group, key, host, self.ttl)
            if held and held != host:  # the server that set the cookie owns it
                await shared.repoint(self.group, key, held, host, self.ttl)
