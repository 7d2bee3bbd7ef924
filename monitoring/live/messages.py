"""The messages between the dashboards' consumers and the browser: defined once, here.

Server -> browser: at most one `*.update` message per flush interval per
socket (see `consumers.py`), whatever the workers send. Browser -> server:
only `watch` (which rows a sessions page shows). Worker -> consumer messages
are `proxyworker.messages` and `monitoring.messages`.
"""
from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from proxyworker.messages import ClosedSession, Session

# WebSocket close codes (4000-4999 are the application's own).
CLOSE_UNAUTHENTICATED = 4401  # the page tells the user to log in again
CLOSE_NOT_FOUND = 4404  # e.g. a drain page for a server that no longer exists


class ServiceLive(TypedDict):
    active: int
    conn_rate: float  # new connections per second
    bytes_in_rate: float  # client -> server, bytes per second
    bytes_out_rate: float
    refused_rate: float


class ServerLive(TypedDict):
    active: int
    failed: int


class LiveStats(TypedDict):
    services: dict[str, ServiceLive]
    servers: dict[str, ServerLive]
    workers: list[str]  # the workers these sums are over
    rates_ready: bool  # every one of them sent two batches (a rate needs two)


class ServerState(TypedDict):
    admin: str  # enabled / drain / disabled
    health: str | None  # up / down / drain / disabled, None before the first check
    stale: bool
    age_s: float | None
    latency_ms: float | None
    error: str


class WorkerState(TypedDict):
    id: str
    host: str
    version: int | None
    behind: bool  # applied an older config version than the running one
    age_s: float  # since its last heartbeat
    late: bool
    active: int
    listeners: int
    redis: bool


class OverviewState(TypedDict):
    version: int | None
    workers: list[WorkerState]
    servers: dict[str, ServerState]
    listening: dict[str, list[str]]  # vs -> worker ids listening for it
    sticky: dict[str, dict[str, int]]  # vs -> server id -> persistence entries naming its host


class HealthEvent(TypedDict):  # monitoring.messages.HealthEventMessage without "type"
    server: str
    pool: str
    name: str
    to: str
    reason: str
    latency_ms: float | None
    at: str


class OverviewUpdate(TypedDict):
    type: Literal["overview.update"]
    at: float
    stats: NotRequired[LiveStats]
    state: NotRequired[OverviewState]
    events: NotRequired[list[dict]]


class PersistState(TypedDict):
    host: str
    ttl: int | None


class SessionsUpdate(TypedDict):
    type: Literal["sessions.update"]
    at: float
    opened: list[Session]  # matching the page's filter, at most one page
    closed: list[ClosedSession]  # of the rows the page watches
    opened_count: int  # all connections opened since the last update (any filter)
    closed_count: int
    skipped: int  # matching connections left out by a cap
    rows: NotRequired[dict[str, Session | None]]  # refreshed watched rows; None = closed
    persistence: NotRequired[dict[str, PersistState | None]]  # "group client_key" -> entry; None = expired


class DrainUpdate(TypedDict):
    type: Literal["drain.update"]
    at: float
    level: Literal["serving", "pending", "draining", "safe", "unknown"]
    headline: str
    detail: str
    admin: str
    sessions: int
    sticky: int
    workers: int
    pending: list[str]  # workers that still send new clients to it
    connections: list[Session]  # a few of the connections still open


class HealthUpdate(TypedDict):
    type: Literal["health.update"]
    at: float
    events: list[HealthEvent]
    skipped: int
    servers: NotRequired[dict[str, ServerState]]


class WatchRequest(TypedDict):  # browser -> server
    type: Literal["watch"]
    connections: list[str]  # session ids shown
    persistence: NotRequired[list[list[str]]]  # [group, client_key] pairs shown


class ErrorMessage(TypedDict):
    type: Literal["error"]
    message: str
