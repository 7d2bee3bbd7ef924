"""The overview: every VIP of the running configuration with its servers, and the workers.

Built from Redis only (the running snapshot, heartbeats, health records, admin
states and the session / persistence counts), so the page shows what the data
plane does, not what the draft says.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis

from monitoring import published, services
from proxyworker.config import Keys, Snapshot

from . import horizon, nat, sources
from .messages import OverviewState, ServerState, WorkerState

LATE_SECONDS = 5.0  # workers beat every 2 s; a heartbeat older than this is late (it expires at 10 s)


@dataclass
class ServerView:
    id: str
    name: str
    address: str
    port: int
    admin: str
    health: dict
    sessions: int = 0
    sticky: int = 0

    def state(self) -> ServerState:
        return {
            "admin": self.admin, "health": self.health.get("state"), "stale": self.health.get("stale", True),
            "age_s": self.health.get("age_s"), "latency_ms": self.health.get("latency_ms"),
            "error": self.health.get("error", ""),
        }


@dataclass
class ServiceView:
    name: str
    address: str
    port: int
    protocol: str
    mode: str
    enabled: bool
    group: str
    persistence: str
    timeout: int
    pool: str
    servers: list[ServerView] = field(default_factory=list)
    listening: list[str] = field(default_factory=list)
    active: int = 0

    @property
    def listen(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}/{self.protocol}"


@dataclass
class WorkerView:
    id: str
    host: str
    pid: int | None
    version: int | None
    age_s: float
    active: int
    listeners: int
    redis: bool
    behind: bool
    started_at: float | None = None

    @property
    def late(self) -> bool:
        return self.age_s > LATE_SECONDS

    def state(self) -> WorkerState:
        return {"id": self.id, "host": self.host, "version": self.version, "behind": self.behind,
                "age_s": round(self.age_s, 1), "late": self.late, "active": self.active,
                "listeners": self.listeners, "redis": self.redis}


@dataclass
class Overview:
    version: int | None
    published_at: str
    services: list[ServiceView]
    workers: list[WorkerView]
    sessions: int
    sticky: int
    nat_warnings: list[nat.NatWarning] = field(default_factory=list)

    @property
    def behind(self) -> list[WorkerView]:
        return [w for w in self.workers if w.behind]

    def state(self) -> OverviewState:
        servers = {s.id: s.state() for vs in self.services for s in vs.servers}
        return {"version": self.version, "workers": [w.state() for w in self.workers], "servers": servers,
                "listening": {vs.name: vs.listening for vs in self.services},
                "sticky": {vs.name: {s.id: s.sticky for s in vs.servers} for vs in self.services}}


def build(client: redis.Redis | None = None, keys: Keys | None = None, now: float | None = None,
          counts: bool = True) -> Overview:
    """The overview from Redis; `counts=False` skips the whole-table pass over the live connections (the live
    stats carry the counts) and with it the NAT warnings."""
    client, keys = client or published.redis_client(), keys or published.keys()
    now = time.time() if now is None else now
    current = published.load(client, keys)
    snapshot = current.snapshot if current else None
    beats = sources.workers(client, keys)
    workers = [_worker(beat, snapshot, now) for beat in beats]
    # One pass gives both the counts and the NAT warnings (horizon.py): never a second scan of the sessions.
    grouped = horizon.aggregate(client, keys) if counts else horizon.Aggregate()
    sessions = grouped.totals
    sticky = sources.persist_totals(client, keys)
    admin = client.hgetall(keys.admin)
    health = services.server_health([s.id for s in snapshot.servers()], now) if snapshot else {}
    views = [_service(vs, snapshot, beats, sessions, sticky, admin, health) for vs in snapshot.virtual_services] \
        if snapshot else []
    return Overview(
        version=snapshot.version if snapshot else None, published_at=snapshot.published_at if snapshot else "",
        services=views, workers=workers, sessions=sessions.total, sticky=sticky.total,
        nat_warnings=nat.warnings(grouped, snapshot) if counts else [],
    )


def _worker(beat: dict, snapshot: Snapshot | None, now: float) -> WorkerView:
    version = beat.get("config_version")
    return WorkerView(
        id=str(beat["id"]), host=str(beat.get("host", "")), pid=beat.get("pid"), version=version,
        age_s=max(0.0, now - float(beat.get("at") or 0)), active=int(beat.get("counters", {}).get("active", 0)),
        listeners=len(beat.get("listeners", ())), redis=bool(beat.get("redis", True)),
        behind=snapshot is not None and version != snapshot.version, started_at=beat.get("started_at"),
    )


def _service(vs, snapshot: Snapshot, beats, sessions, sticky, admin, health) -> ServiceView:
    pool = snapshot.pool(vs.pool)
    persistent = vs.persistence.method != "none"
    view = ServiceView(
        name=vs.name, address=vs.address, port=vs.port, protocol=vs.protocol, mode=vs.mode, enabled=vs.enabled,
        group=vs.group, persistence=vs.persistence.method, timeout=vs.persistence.timeout, pool=vs.pool,
        listening=sorted(b["id"] for b in beats if any(li.get("vs") == vs.name for li in b.get("listeners", ()))),
        active=sessions.by_vs.get(vs.name, 0),
    )
    for server in pool.servers:
        view.servers.append(ServerView(
            id=server.id, name=server.name, address=server.address, port=server.port,
            admin=admin.get(server.id, server.admin_state), health=health.get(server.id, {}),
            sessions=sessions.by_server.get(server.id, 0),
            sticky=sticky.for_host(server.address, vs.group) if persistent else 0,
        ))
    return view


def server_states(client: redis.Redis | None = None, keys: Keys | None = None,
                  now: float | None = None) -> dict[str, ServerState]:
    """Health and admin state of every server of the running configuration (the health page)."""
    client, keys = client or published.redis_client(), keys or published.keys()
    current = published.load(client, keys)
    if current is None:
        return {}
    servers = list(current.snapshot.servers())
    health = services.server_health([s.id for s in servers], now)
    admin = client.hgetall(keys.admin)
    return {s.id: ServerView(s.id, s.name, s.address, s.port, admin.get(s.id, s.admin_state),
                             health.get(s.id, {})).state() for s in servers}
