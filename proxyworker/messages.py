"""The messages proxy workers send to the Channels groups `sessions` and `stats`.

Defined once, here: the worker builds them and the dashboards import these
types to read them. Every message is a batch (one per group per flush, every
250 ms at most), never one message per connection or packet.
"""
from __future__ import annotations

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
