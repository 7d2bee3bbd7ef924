"""What to check: the snapshot published in Redis, never the balancer models.

The control plane publishes `Keys.config`; the checker follows whatever is
running, exactly like the proxy workers. Every real server of every pool is a
`Target`; servers of pools without a health check have `check=None` (their
state is "up" unless an administrator says otherwise).
"""
from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass

import redis
from django.conf import settings

from proxyworker.config import ConfigError, HealthCheck, Keys, RealServer, Snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    server: RealServer
    pool: str
    check: HealthCheck | None

    @property
    def id(self) -> str:
        return self.server.id


@dataclass(frozen=True)
class Published:
    text: str
    snapshot: Snapshot
    targets: dict[str, Target]

    @functools.cached_property
    def checked(self) -> dict[str, Target]:  # computed once per published text, asked for per server
        return {sid: t for sid, t in self.targets.items() if t.check}

    def pool_targets(self, pool: str) -> list[Target]:
        return [t for t in self.targets.values() if t.pool == pool]


def keys() -> Keys:
    """Read at call time: tests and several appliances on one Redis use their own prefix."""
    return Keys(settings.VIEWLB_REDIS_PREFIX)


_clients: dict[str, redis.Redis] = {}


def redis_client() -> redis.Redis:
    url = settings.REDIS_URL
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
    return client


_last: dict[str, Published] = {}  # prefix -> last good parse in this process
_lock = threading.Lock()


def load(client: redis.Redis | None = None, keys_: Keys | None = None) -> Published | None:
    """The running snapshot (parsed once per published text); None before the first publish.

    A snapshot that does not parse keeps the last good one in this process: the
    checker must not stop judging servers because of a bad publish.
    """
    client = client or redis_client()
    keys_ = keys_ or keys()
    text = client.get(keys_.config)
    if text is None:
        return None  # nothing published (or Redis was emptied): nothing to check
    last = _last.get(keys_.prefix)
    if last and last.text == text:
        return last
    try:
        snapshot = Snapshot.from_json(text)
    except ConfigError as exc:
        log.error("published snapshot ignored, keeping the last good one: %s", exc)
        return last
    published = Published(text, snapshot, _targets(snapshot))
    with _lock:
        _last[keys_.prefix] = published
    return published


def _targets(snapshot: Snapshot) -> dict[str, Target]:
    return {s.id: Target(s, pool.name, pool.health_check) for pool in snapshot.pools for s in pool.servers}
