"""What the console shows about health: Redis records made readable, with staleness.

A page must never show an old state as if it were fresh: when Celery stops,
records stop changing and each server turns *stale*, with the age of its last
check, while the proxy workers keep using the last states they have.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from . import published
from .models import HealthEvent

STALE_MIN_S = 10.0  # a few lost beat ticks are not staleness
STALE_INTERVALS = 3


def is_stale(record: dict | None, now: float) -> bool:
    if not record or not record.get("checked"):
        return record is None  # never reported at all; unchecked servers cannot go stale
    checked_at = record.get("checked_at")
    if checked_at is None:
        return True
    limit = max(STALE_INTERVALS * (record.get("interval") or 0), STALE_MIN_S)
    return now - checked_at > limit


def server_health(server_ids, now: float | None = None) -> dict[str, dict]:
    """id -> {state, latency_ms, error, checked_at, age_s, stale, ...} from the last record of each server."""
    server_ids = list(server_ids)
    if not server_ids:
        return {}
    now = time.time() if now is None else now
    raw = published.redis_client().hmget(published.keys().health_detail, server_ids)
    return {sid: _health(json.loads(text) if text else None, now) for sid, text in zip(server_ids, raw, strict=True)}


def _health(record: dict | None, now: float) -> dict:
    record = record or {}
    checked_at = record.get("checked_at")
    return {
        "state": record.get("state"),
        "admin": record.get("admin"),
        "checked": record.get("checked", True),
        "outcome": record.get("outcome"),
        "status": record.get("status"),
        "latency_ms": record.get("latency_ms"),
        "error": record.get("error", ""),
        "checked_at": checked_at,
        "age_s": round(now - checked_at, 1) if checked_at else None,
        "stale": is_stale(record or None, now),
        "ok": record.get("ok", 0),
        "failed": record.get("failed", 0),
    }


@dataclass(frozen=True)
class ServerRow:
    id: str
    name: str
    address: str
    port: int
    health: dict


def pool_health(pool: str, events: int = 10) -> dict:
    """Everything the pool page's health panel shows, from the running snapshot."""
    current = published.load()
    targets = current.pool_targets(pool) if current else []
    health = server_health(t.id for t in targets)
    rows = [ServerRow(t.id, t.server.name, t.server.address, t.server.port, health[t.id]) for t in targets]
    check = next((t.check for t in targets if t.check), None)
    return {
        "pool": pool,
        "published": current is not None and any(p.name == pool for p in current.snapshot.pools),
        "check": check,
        "servers": rows,
        "events": list(HealthEvent.objects.filter(pool=pool)[:events]),
    }
