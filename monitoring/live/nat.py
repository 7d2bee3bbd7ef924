"""NAT detection: many users behind one client address on a source-IP virtual service.

Source-IP persistence keys a client by its address, so every user behind one
NAT address (a firewall's source NAT, a reverse proxy, a branch office) is sent
to the same server: no balancing, and one server takes all of them.

The rule, concretely: a layer-4 VIP with source-IP persistence, and one client
key with at least `VIEWLB_NAT_CONNECTIONS` (default 20) live connections on that
VIP. Why 20: one Horizon client holds a handful of concurrent connections on a
VIP (a few HTTPS connections for the XML API, the tunnel, one Blast or PCoIP
channel per protocol), so 20 on one VIP from one key is several users sharing
it, while a single busy user stays well below. A count, not a share of the
VIP's connections: a share would call a lone user on a quiet VIP "NAT".

The counts come from the Horizon-sessions aggregate (horizon.py): the same cached
pass, never a scan of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse

from proxyworker.config import Snapshot

from .horizon import Aggregate

METHODS = (
    ("port_group", "Method 2: a port group per UAG"),
    ("n_plus_one", "Method 3: N+1 VIPs (one per server)"),
    ("cookie", "Layer-7 JSESSIONID cookie persistence"),
)


def threshold() -> int:
    return settings.VIEWLB_NAT_CONNECTIONS


@dataclass(frozen=True)
class NatWarning:
    vs: str
    address: str  # the VIP's listen address
    port: int
    protocol: str
    group: str
    client_key: str
    connections: int  # of this client key on this VIP
    vs_connections: int  # all live connections on this VIP
    host: str  # the server host all of them reached
    links: tuple[tuple[str, str], ...]  # (label, wizard URL)


def wizard_url(method: str, vip: str, servers: list[str]) -> str:
    path = reverse("balancer:horizon_wizard")
    query = urlencode({"reach": "nat", "method": method, "vip": vip, "servers": ",".join(servers)})
    return f"{path}?{query}"


def warnings(agg: Aggregate, snapshot: Snapshot | None, limit: int | None = None) -> list[NatWarning]:
    """One warning per (VIP, client key) over the threshold, the largest first."""
    limit = threshold() if limit is None else limit
    watched = {vs.name: vs for vs in snapshot.virtual_services
               if vs.mode == "l4" and vs.persistence.method == "source_ip"} if snapshot else {}
    if not watched:
        return []
    found = []
    for row in agg.rows:
        for vs_name in row.vips & watched.keys():
            count = row.on_vip(vs_name)
            if count >= limit:
                found.append(_warning(watched[vs_name], snapshot, row, count, agg.totals.by_vs.get(vs_name, count)))
    return sorted(found, key=lambda w: (-w.connections, w.vs, w.client_key))


def _warning(vs, snapshot: Snapshot, row, count: int, total: int) -> NatWarning:
    servers = list(dict.fromkeys(s.address for s in snapshot.pool(vs.pool).servers))
    links = tuple((label, wizard_url(method, vs.address, servers)) for method, label in METHODS)
    return NatWarning(vs=vs.name, address=vs.address, port=vs.port, protocol=vs.protocol, group=vs.group,
                      client_key=row.client_key, connections=count, vs_connections=total,
                      host=", ".join(row.hosts), links=links)
