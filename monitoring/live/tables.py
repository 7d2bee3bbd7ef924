"""The sticky-sessions tables: one page of live connections or persistence entries, ready to show."""
from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from proxyworker.config import Keys, Snapshot

from . import present, sources


@dataclass
class Table:
    kind: str  # "connections" or "persistence"
    rows: list[dict]
    page: sources.Page
    total: int | None  # all entries of this kind (None: not counted yet)


def persistent_services(snapshot: Snapshot | None) -> dict[str, str]:
    """VIP name -> persistence group, for the VIPs that use persistence."""
    if snapshot is None:
        return {}
    return {vs.name: vs.group for vs in snapshot.virtual_services if vs.persistence.method != "none"}


def connections(client: redis.Redis, keys: Keys, snapshot: Snapshot | None, flt: sources.Filter,
                token: str | None, now: float | None = None) -> Table:
    now = time.time() if now is None else now
    page = sources.connections_page(client, keys, flt, token)
    groups = persistent_services(snapshot)
    pairs = [(groups[s["vs"]], s["client_key"]) for s in page.rows if s.get("vs") in groups]
    entries = sources.persist_ttls(client, keys, pairs)
    rows = []
    for session in page.rows:
        group = groups.get(session.get("vs"))
        entry = entries.get((group, session.get("client_key"))) if group else None
        rows.append(present.connection_row(session, now, entry, group))
    return Table("connections", rows, page, sources.live_connection_count(client, keys))


def persistence(client: redis.Redis, keys: Keys, snapshot: Snapshot | None, flt: sources.Filter,
                token: str | None) -> Table:
    page = sources.persistence_page(client, keys, flt, token)
    servers, vips = {}, {}
    for vs in snapshot.virtual_services if snapshot else ():
        vips.setdefault(vs.group, []).append(vs.name)
        for server in snapshot.pool(vs.pool).servers:
            names = servers.setdefault(server.address, [])
            if server.id not in names:
                names.append(server.id)
    rows = [present.persistence_row(row, servers, vips) for row in page.rows]
    counted = sources.persist_totals.peek(keys)  # counting 100k entries costs 0.5 s: show the last count only
    return Table("persistence", rows, page, counted.total if counted else None)
