"""The messages proxy workers send to the Channels groups `sessions` and `stats`,
and the control messages they receive on the Redis channel `Keys.control`.

Defined once, here: the worker builds them and the dashboards import these
types to read them. Every message is a batch (one per group per flush, every
250 ms at most), never one message per connection or packet.
"""
from __future__ import annotations

import json
from typing import Literal, NotRequired, TypedDict

SESSIONS_GROUP = "sessions"
STATS_GROUP = "stats"


class Session(TypedDict):
    """A live client connection (TCP) or flow (UDP) and the server it reached.

    The same JSON is stored in the hash `Keys.sessions(worker_id)` (session id ->
    JSON), where the worker also refreshes the byte counters and `active_at`
    every few seconds for connections that moved data.
    """

    id: str  # "<worker>:<n>"
    vs: str
    port: int
    protocol: Literal["tcp", "udp"]
    client: str  # "ip:port" ("[ip]:port" for IPv6)
    client_key: str  # persistence key (source IP under the netmask), else the client IP
    server: str  # real server id "<pool>/<server>"
    server_address: str  # "host:port"
    group: str  # persistence group of its VIP: one Horizon session = same (group, client_key)
    opened_at: float  # unix time
    bytes_in: NotRequired[int]  # client -> server
    bytes_out: NotRequired[int]  # server -> client
    active_at: NotRequired[float]  # unix time data last moved (hash only, approximate)


class ClosedSession(TypedDict):
    id: str
    bytes_in: int
    bytes_out: int
    closed_at: float


class SessionsBatch(TypedDict):
    type: Literal["sessions.batch"]
    worker: str
    opened: list[Session]
    closed: list[ClosedSession]
    dropped: int  # events left out of this batch by the per-batch cap (the hash still has them)


class ServiceStats(TypedDict):
    """Counters since the worker started; dashboards derive rates from deltas."""

    active: int
    total: int
    bytes_in: int
    bytes_out: int
    refused: int  # connections refused by max_connections or because no server could take them


class ServerStats(TypedDict):
    active: int
    total: int
    failed: int  # connects refused or timed out (each one redispatched)


class StatsBatch(TypedDict):
    type: Literal["stats.batch"]
    worker: str
    at: float  # unix time
    services: dict[str, ServiceStats]
    servers: dict[str, ServerStats]


class ControlMessage(TypedDict):
    """Published on `Keys.control` by the console; every worker acts on it.

    `session.kill`: forget the local persistence entry (group, client_key) and
    abort every live session of that group whose client key (`Session.client_key`)
    is client_key. The console deletes or re-points the shared Redis entry first,
    so the client's reconnects land where the console decided.
    """

    type: Literal["session.kill"]
    group: str
    client_key: str
    by: str  # the console user, for the worker's log line


CONTROL_TYPES = ("session.kill",)


def parse_control(text) -> ControlMessage:
    """A control message from its JSON; ValueError saying what is wrong with it."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("type") not in CONTROL_TYPES:
        raise ValueError(f"unknown type {data.get('type')!r}")
    for name in ("group", "client_key", "by"):
        if not isinstance(data.get(name), str):
            raise ValueError(f"{name} must be a string")
    for name in ("group", "client_key"):
        if not data[name]:
            raise ValueError(f"{name} must not be empty")
    return ControlMessage(type=data["type"], group=data["group"], client_key=data["client_key"], by=data["by"])
