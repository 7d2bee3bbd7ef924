"""When is a drained server safe to take down?

Draining (HAProxy's `drain`, Horizon's quiesce) means: no new clients, the
ones stuck to the server by persistence keep coming, live connections stay.
A server is *safe to take down* when every worker has stopped sending new
clients to it and no worker holds a live connection to it.

Persistence entries are a different thing and may remain: they only say
where a returning client would go. While the server drains, a returning
client still goes there (that is what keeps a Horizon user's tunnel and
desktop ports on one server); once the server is down or disabled, each
worker moves such a client to another server on its next connection.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from monitoring import published
from proxyworker.config import Keys

from . import sources
from .messages import DrainUpdate

SAMPLE = 10  # connections shown as "still connected"
NOT_SERVING = ("drain", "down", "disabled")  # worker-side states in which a server gets no new clients


@dataclass(frozen=True)
class DrainStatus:
    level: str  # serving / pending / draining / safe / unknown
    headline: str
    detail: str
    admin: str
    sessions: int
    sticky: int
    workers: int
    pending: tuple[str, ...]

    @property
    def safe(self) -> bool:
        return self.level == "safe"


def assess(server_id: str, admin: str, beats: list[dict], sessions: int, sticky: int) -> DrainStatus:
    """Pure: the verdict from the admin state, the workers' view of the server and the counts."""
    seen = {b["id"]: b.get("servers", {}).get(server_id) for b in beats}
    pending = tuple(sorted(wid for wid, state in seen.items() if state not in NOT_SERVING and state is not None))
    unknown = tuple(sorted(wid for wid, state in seen.items() if state is None))
    common = dict(admin=admin, sessions=sessions, sticky=sticky, workers=len(beats))
    sticky_note = _sticky_note(sticky)
    connections = f"{sessions} live connection{'s' if sessions != 1 else ''}"
    if admin == "enabled" and (pending or not beats):
        return DrainStatus("serving", "Serving: takes new clients.",
                           f"{connections}. Drain it before maintenance, then wait until this page says it is safe.",
                           pending=pending, **common)
    if pending:
        return DrainStatus("pending", f"Draining: {len(pending)} worker(s) still send new clients to it.",
                           f"Waiting for {', '.join(pending)} to apply the change (usually within a second). "
                           f"{connections}.", pending=pending, **common)
    if sessions:
        return DrainStatus("draining", f"Draining: {connections} remain. Not safe to take down yet.",
                           "No new clients are sent to it; the remaining users are still working on it. "
                           + sticky_note, pending=(), **common)
    if unknown and len(unknown) == len(beats) and beats:
        return DrainStatus("unknown", "Unknown: no worker has this server in its running configuration.",
                           "Apply the configuration first. " + sticky_note, pending=(), **common)
    workers = "no proxy worker is running" if not beats else f"all {len(beats)} worker(s) have stopped using it"
    return DrainStatus("safe", "Safe to take down: no live connections.",
                       f"Nothing is connected to it and {workers}. " + sticky_note, pending=(), **common)


def _sticky_note(sticky: int) -> str:
    if not sticky:
        return "No persistence entries name it."
    return (f"{sticky} persistence entr{'ies' if sticky != 1 else 'y'} still name it: those clients are not "
            "connected now; if they return while it drains they come back here, once it is down or disabled "
            "the workers send them to another server. Entries expire after the persistence timeout.")


def status(server_id: str, address: str, admin_default: str, client: redis.Redis | None = None,
           keys: Keys | None = None) -> tuple[DrainStatus, list[dict]]:
    """The verdict for one server from Redis, and a few of its live connections.

    The admin state is the one the workers obey (`Keys.admin`, set at once by a drain), else `admin_default`.
    """
    client, keys = client or published.redis_client(), keys or published.keys()
    admin = client.hget(keys.admin, server_id) or admin_default
    beats = sources.workers(client, keys)
    sessions = sources.session_totals(client, keys).by_server.get(server_id, 0)
    sticky = sources.persist_totals(client, keys).for_host(address) if address else 0
    sample = []
    if sessions:
        page = sources.connections_page(client, keys, sources.Filter(server=server_id), size=SAMPLE, budget=0.2)
        sample = page.rows
    return assess(server_id, admin, beats, sessions, sticky), sample


def update(verdict: DrainStatus, sample: list[dict]) -> DrainUpdate:
    return {
        "type": "drain.update", "at": time.time(), "level": verdict.level, "headline": verdict.headline,
        "detail": verdict.detail, "admin": verdict.admin, "sessions": verdict.sessions, "sticky": verdict.sticky,
        "workers": verdict.workers, "pending": list(verdict.pending), "connections": sample,
    }
