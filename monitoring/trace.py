"""Trace a client (the console page and `viewlb trace`): read what the workers read, let
`proxyworker.explain` say where the client would land and why.

Everything comes from Redis, never from the balancer models: the running snapshot
(`published.load`), the health and admin hashes, the client's persistence entries
with their TTLs (`sources.persist_ttls`, one pipeline) and, for least-connections
VIPs, the live connections per server over all workers (`sources.session_totals`).
"""
from __future__ import annotations

import ipaddress

import redis
from django.conf import settings

from proxyworker import explain
from proxyworker.config import Keys

from . import published
from .live import sources


def client_address(text: str) -> str:
    """The client address as the workers see it; ValueError with the reason when it is not one."""
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


def run(client_ip: str, cookie: str = "", vs_name: str = "", client: redis.Redis | None = None,
        keys: Keys | None = None) -> explain.Trace:
    """The trace of `client_ip` (already checked by `client_address`) on every VIP, or on `vs_name`."""
    client = client or published.redis_client()
    keys = keys or published.keys()
    current = published.load(client, keys)
    snapshot = current.snapshot if current else None
    if snapshot is None:
        return explain.explain(None, client_ip, {}, {}, {}, cookie=cookie, vs_name=vs_name)
    cert_key = settings.VIEWLB_CERT_KEY
    pairs = explain.lookups(snapshot, client_ip, cookie, vs_name, cert_key)
    held = sources.persist_ttls(client, keys, pairs)
    entries = {pair: explain.Entry(value["host"], value["ttl"]) for pair, value in held.items() if value}
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.health)
    pipe.hgetall(keys.admin)
    health, admin = pipe.execute()
    active = None
    if any(vs.scheduler == "least_connections" for vs in snapshot.virtual_services
           if not vs_name or vs.name == vs_name):
        active = sources.session_totals(client, keys).by_server
    return explain.explain(snapshot, client_ip, health, admin, entries, active, cookie=cookie,
                           vs_name=vs_name, cert_key=cert_key)


def as_text(trace: explain.Trace) -> list[str]:
    """The trace as lines for a terminal (`viewlb trace`)."""
    lines = [f"client {trace.client}" + (" with a cookie" if trace.cookie else "")
             + f", running configuration version {trace.version}"]
    for t in trace.services:
        vs = t.vs
        lines.append("")
        lines.append(f"{vs.name}  {vs.address}:{vs.port}/{vs.protocol} {vs.mode}  (group {vs.group}, "
                     f"persistence {vs.persistence.method}, {vs.scheduler})")
        lines.append("  -> " + outcome(t))
        lines += [f"  - [{reason.kind}] {reason.text}" for reason in t.reasons]
    lines.append("")
    lines += [f"note: {note}" for note in trace.notes]
    return lines


def outcome(t: explain.ServiceTrace) -> str:
    if t.server is not None:
        return explain.describe(t.server)
    if t.one_of:
        return "one of " + ", ".join(explain.describe(s) for s in t.one_of)
    return "no server: " + t.why_none
