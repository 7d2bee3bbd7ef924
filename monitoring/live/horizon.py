"""Horizon sessions: every live connection and UDP flow of one client in one persistence group, as one row.

A Horizon client opens several connections for one user session: HTTPS 443 (the
XML API, the /ice/ tunnel), Blast 8443 over TCP and UDP, PCoIP 4172 over TCP and
UDP, bypass ports. The workers store each of them as a separate session; port
following keeps them on one server host because they share a persistence group
and a client key. So (group, client key) is the user's session, and this module
folds the workers' session hashes into one row per pair.

Grouping needs every connection, so this is a whole-table pass (HSCAN per worker
hash, never HGETALL), done once and cached per process like the counts in
sources.py; the page then filters and pages the cached rows in memory. The same
pass yields the per-VIP and per-server counts (`Aggregate.totals`) and feeds the
NAT detection on the overview, so no page scans the hashes twice.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field

import redis

from monitoring import published
from proxyworker.config import Keys, Snapshot

from . import present, sources

PAGE_SIZE = 50
CLIENTS_KEPT = 8  # client addresses remembered per row: enough to show, bounded behind a big NAT


class HorizonSession:
    """One (group, client key): what its live connections add up to."""

    __slots__ = ("group", "client_key", "clients", "more_clients", "servers", "channels", "connections",
                 "bytes_in", "bytes_out", "opened_at")

    def __init__(self, group: str, client_key: str):
        self.group, self.client_key = group, client_key
        self.clients: list[str] = []  # distinct client IPs (without port), at most CLIENTS_KEPT
        self.more_clients = False  # more distinct addresses than CLIENTS_KEPT
        self.servers: dict[str, str] = {}  # server id -> server host
        self.channels: dict[tuple[int, str, str], int] = {}  # (port, protocol, VIP) -> connections
        self.connections = 0
        self.bytes_in = self.bytes_out = 0
        self.opened_at: float | None = None

    def add(self, session: dict, shared: dict) -> None:
        """Count one stored session. `shared` interns the strings and channel tuples that repeat across rows
        (server ids, hosts, VIPs): 100,000 connections must not mean 100,000 copies of each."""
        self.connections += 1
        self.bytes_in += _int(session.get("bytes_in"))
        self.bytes_out += _int(session.get("bytes_out"))
        opened = session.get("opened_at")
        if isinstance(opened, (int, float)) and (self.opened_at is None or opened < self.opened_at):
            self.opened_at = opened
        ip = _host(str(session.get("client", "")))
        ip = self.client_key if ip == self.client_key else ip  # the usual case: one string, not two
        if ip not in self.clients:
            if len(self.clients) < CLIENTS_KEPT:
                self.clients.append(ip)
            else:
                self.more_clients = True
        server = str(session.get("server", ""))
        if server not in self.servers:
            server = shared.setdefault(server, server)
            host = _host(str(session.get("server_address", "")))
            self.servers[server] = shared.setdefault(host, host)
        channel = (_int(session.get("port")), str(session.get("protocol", "tcp")), str(session.get("vs", "")))
        channel = shared.setdefault(channel, channel)
        self.channels[channel] = self.channels.get(channel, 0) + 1

    @property
    def hosts(self) -> list[str]:
        return sorted(set(self.servers.values()))

    @property
    def vips(self) -> set[str]:
        return {vs for _, _, vs in self.channels}

    def on_vip(self, vs: str) -> int:
        """Live connections of this client on one VIP."""
        return sum(n for (_, _, name), n in self.channels.items() if name == vs)

    def row(self, now: float) -> dict:
        """What the page shows."""
        channels = [{"port": port, "protocol": protocol, "vs": vs, "count": n, "name": f"{port}/{protocol}"}
                    for (port, protocol, vs), n in sorted(self.channels.items())]
        return {
            "group": self.group, "client_key": self.client_key, "clients": sorted(self.clients),
            "more_clients": self.more_clients, "hosts": self.hosts, "servers": sorted(self.servers),
            # Each port has its own pool, so one host is many server ids ("uag-rdp/uag1", ...): show its names.
            "server_names": sorted({server.rpartition("/")[2] for server in self.servers}),
            "channels": channels, "connections": self.connections,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "opened_at": self.opened_at,
            "bytes_in_text": present.size(self.bytes_in), "bytes_out_text": present.size(self.bytes_out),
            "age": present.duration(now - self.opened_at if self.opened_at else None),
        }


def _int(value) -> int:
    return value if isinstance(value, int) else 0


def _host(address: str) -> str:
    """"10.0.0.1:443" -> "10.0.0.1", "[::1]:443" -> "::1"."""
    host = address.rpartition(":")[0] if ":" in address else address
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


@dataclass(frozen=True)
class Aggregate:
    rows: list[HorizonSession] = field(default_factory=list)  # sorted by group, then client key
    totals: sources.SessionTotals = field(default_factory=sources.SessionTotals)
    at: float = 0.0


def groups_by_vip(snapshot: Snapshot | None) -> dict[str, str]:
    """VIP name -> persistence group: the group of a session a worker stored without one (older workers)."""
    return {vs.name: vs.group for vs in snapshot.virtual_services} if snapshot else {}


def fold(raw_sessions, groups: dict[str, str], now: float | None = None) -> Aggregate:
    """Pure: the rows and counts from the sessions' JSON texts (a text that does not decode is skipped)."""
    rows: dict[tuple[str, str], HorizonSession] = {}
    shared: dict = {}
    by_vs, by_server = Counter(), Counter()
    for raw in raw_sessions:
        try:
            session = json.loads(raw)
        except ValueError:
            continue  # a worker writing garbage must not break the page
        if not isinstance(session, dict):
            continue
        vs = str(session.get("vs", ""))
        group = str(session.get("group") or groups.get(vs) or vs)
        group = shared.setdefault(group, group)
        client_key = str(session.get("client_key") or _host(str(session.get("client", ""))))
        row = rows.get((group, client_key))
        if row is None:
            row = rows[(group, client_key)] = HorizonSession(group, client_key)
        row.add(session, shared)
        by_vs[vs] += 1
        by_server[str(session.get("server", ""))] += 1
    ordered = [rows[pair] for pair in sorted(rows)]
    totals = sources.SessionTotals(dict(by_vs), dict(by_server), sum(by_vs.values()))
    return Aggregate(ordered, totals, time.time() if now is None else now)


def scan(client: redis.Redis, keys: Keys) -> Aggregate:
    """One pass over every worker's session hash (incremental HSCAN)."""
    current = published.load(client, keys)
    groups = groups_by_vip(current.snapshot if current else None)

    def texts():
        for worker_id in sources.session_workers(client, keys):
            for _, raw in client.hscan_iter(keys.sessions(worker_id), count=sources.AGGREGATE_COUNT):
                yield raw

    return fold(texts(), groups)


aggregate = sources.Cached(scan)  # one computation per second or more (5x its cost) per process


# --- the page's view of it -------------------------------------------------------


@dataclass(frozen=True)
class HorizonFilter:
    """Empty fields match everything. `client`: prefix of the client key or of a client address."""

    client: str = ""
    server: str = ""  # real server id
    vs: str = ""
    group: str = ""

    @property
    def active(self) -> bool:
        return bool(self.client or self.server or self.vs or self.group)

    def matches(self, row: HorizonSession) -> bool:
        if self.group and row.group != self.group:
            return False
        if self.server and self.server not in row.servers:
            return False
        if self.vs and self.vs not in row.vips:
            return False
        if self.client and not (row.client_key.startswith(self.client)
                                or any(ip.startswith(self.client) for ip in row.clients)):
            return False
        return True


@dataclass
class HorizonPage:
    rows: list[dict]
    number: int  # 1-based
    pages: int
    matching: int  # rows that match the filter
    total: int  # all Horizon sessions
    connections: int  # all live connections
    computed_at: float

    @property
    def previous(self) -> int | None:
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> int | None:
        return self.number + 1 if self.number < self.pages else None


def page(agg: Aggregate, flt: HorizonFilter, number: int = 1, size: int = PAGE_SIZE,
         now: float | None = None) -> HorizonPage:
    """One page of the rows matching `flt` (a page number past the end shows the last page)."""
    now = time.time() if now is None else now
    matching = [row for row in agg.rows if flt.matches(row)] if flt.active else agg.rows
    pages = max(1, -(-len(matching) // size))
    number = min(max(1, number), pages)
    chosen = matching[(number - 1) * size:number * size]
    return HorizonPage([row.row(now) for row in chosen], number, pages, len(matching), len(agg.rows),
                       agg.totals.total, agg.at)


def find(agg: Aggregate, group: str, client_key: str) -> HorizonSession | None:
    for row in agg.rows:
        if row.group == group and row.client_key == client_key:
            return row
    return None
