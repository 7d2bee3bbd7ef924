"""Source-IP persistence shared by every worker: client key -> server host.

The stored value is the server's *host address*, not a server id, so virtual
services in one persistence group follow each other across ports: a client
that reached 10.0.0.11 on 443 reaches 10.0.0.11 on 4172 as well.

Three layers, to keep Redis off the per-byte path and mostly off the
per-connection path:
- `client_key` (pure): the source address under the policy's netmask.
- `PersistenceTable` (pure, time passed in): the local cache. An entry
  confirmed with Redis in the last `TRUST_SECONDS` answers a repeat client
  without a round trip; an older one answers too, and is queued for the
  batched refresh, which adopts what Redis holds (`Dispatcher.choose_now`);
  activity marks entries for that batched TTL refresh.
- `SharedPersistence` (Redis): one round trip that claims-or-reads on a local
  miss, a compare-and-set to re-point a client whose server is unusable (so
  every worker converges on the same new server), and the batched refresh,
  which also pulls in values other workers changed. When Redis is
  unreachable, decisions stay local and are pushed once it is back.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from .config import Keys

log = logging.getLogger("proxyworker.persistence")

TRUST_SECONDS = 10.0
REDIS_TIMEOUT = 0.5  # a connection waits at most this for Redis before deciding locally
REFRESH_BATCH = 1000


@functools.lru_cache(maxsize=65536)
def client_key(ip: str, ipv4_mask: int = 32, ipv6_mask: int = 128) -> str:
    """`10.1.2.3` at /32, `10.1.2.0/24` under a /24; IPv4-mapped IPv6 counts as IPv4."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    mask = ipv4_mask if address.version == 4 else ipv6_mask
    if mask >= address.max_prefixlen:
        return str(address)
    return str(ipaddress.ip_network((address, mask), strict=False))


class _Entry:
    __slots__ = ("host", "ttl", "expires", "checked")

    def __init__(self, host, ttl, expires, checked):
        self.host, self.ttl, self.expires, self.checked = host, ttl, expires, checked


class PersistenceTable:
    """The local cache of (group, client key) -> host."""

    def __init__(self):
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._dirty: set[tuple[str, str]] = set()

    def __len__(self):
        return len(self._entries)

    def lookup(self, group: str, key: str, now: float) -> tuple[str | None, bool]:
        """(host, trusted): trusted = confirmed with Redis recently enough to skip it."""
        entry = self._entries.get((group, key))
        if entry is None or entry.expires <= now:
            return None, False
        return entry.host, now - entry.checked < TRUST_SECONDS

    def remember(self, group: str, key: str, host: str, ttl: int, now: float, confirmed: bool) -> None:
        self._entries[(group, key)] = _Entry(host, ttl, now + ttl, now if confirmed else float("-inf"))
        if not confirmed:
            self._dirty.add((group, key))  # Redis has not seen it: push it with the next refresh

    def touch(self, group: str, key: str, host: str, ttl: int, now: float) -> None:
        """Activity: extend the entry (create it if it expired) and queue a Redis TTL refresh."""
        entry = self._entries.get((group, key))
        if entry is None:
            self._entries[(group, key)] = _Entry(host, ttl, now + ttl, float("-inf"))
        else:
            entry.expires = now + entry.ttl
        self._dirty.add((group, key))

    def forget(self, group: str, key: str) -> bool:
        """The console killed or moved this client: drop the entry so the next connection asks Redis.

        The pending refresh goes too: it would recreate the Redis entry the console just deleted.
        """
        self._dirty.discard((group, key))
        return self._entries.pop((group, key), None) is not None

    def take_dirty(self, limit: int = REFRESH_BATCH) -> list[tuple[str, str, str, int]]:
        batch = []
        while self._dirty and len(batch) < limit:
            group, key = self._dirty.pop()
            entry = self._entries.get((group, key))
            if entry is not None:
                batch.append((group, key, entry.host, entry.ttl))
        return batch

    def mark_dirty(self, items) -> None:
        self._dirty.update((group, key) for group, key, *_ in items)

    def confirm(self, group: str, key: str, host: str, now: float) -> None:
        """Redis holds `host` for this client: adopt it (another worker may have re-pointed)."""
        entry = self._entries.get((group, key))
        if entry is not None:
            entry.host, entry.checked = host, now

    def purge(self, now: float) -> int:
        expired = [k for k, e in self._entries.items() if e.expires <= now]
        for k in expired:
            del self._entries[k]
        return len(expired)


# GET, or SET when absent (ARGV[1] empty = read only). A hit also refreshes the TTL.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v then redis.call('EXPIRE', KEYS[1], ARGV[2]) return v end
if ARGV[1] == '' then return false end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""
# Compare-and-set: move the client from ARGV[1] to ARGV[2] unless someone already moved it.
_REPOINT = """
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return v end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return ARGV[2]
"""
# Batched activity refresh: extend each key, recreate missing ones, return what Redis holds.
_REFRESH = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v then redis.call('EXPIRE', key, ARGV[2 * i]) else
    v = ARGV[2 * i - 1]
    redis.call('SET', key, v, 'EX', ARGV[2 * i])
  end
  out[i] = v
end
return out
"""

_ERRORS = (RedisError, OSError, TimeoutError)


class SharedPersistence:
    def __init__(self, keys: Keys, table: PersistenceTable, clock: Callable[[], float]):
        self.keys, self.table, self.clock = keys, table, clock
        self.available = False
        self.redis = None
        self.errors = 0

    def attach(self, redis) -> None:
        self.redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._repoint = redis.register_script(_REPOINT)
        self._refresh = redis.register_script(_REFRESH)
        self.available = True

    async def claim(self, group: str, key: str, proposal: str | None, ttl: int) -> str | None:
        """The host this client is stuck to; if none, `proposal` becomes it (None: just read)."""
        if self.available:
            try:
                async with asyncio.timeout(REDIS_TIMEOUT):
                    host = await self._claim(keys=[self.keys.persist(group, key)], args=[proposal or "", ttl])
            except _ERRORS as exc:
                self._lost(exc)
            else:
                if host:
                    self.table.remember(group, key, host, ttl, self.clock(), confirmed=True)
                return host
        if proposal:
            self.table.remember(group, key, proposal, ttl, self.clock(), confirmed=False)
        return proposal

    async def repoint(self, group: str, key: str, old: str, new: str, ttl: int) -> str:
        """Move the client from `old` to `new` unless another worker already moved it; returns the winner."""
        if self.available:
            try:
                async with asyncio.timeout(REDIS_TIMEOUT):
                    host = await self._repoint(keys=[self.keys.persist(group, key)], args=[old, new, ttl])
            except _ERRORS as exc:
                self._lost(exc)
            else:
                self.table.remember(group, key, host, ttl, self.clock(), confirmed=True)
                return host
        self.table.remember(group, key, new, ttl, self.clock(), confirmed=False)
        return new

    async def refresh(self) -> int:
        """Push TTL refreshes for active clients, adopting what Redis holds. Returns keys sent."""
        if self.redis is None:
            return 0
        if not self.available:
            try:
                await self.redis.ping()
            except _ERRORS:
                return 0
            self.available = True
            log.info("redis reachable again: shared persistence resumes")
        sent = 0
        while batch := self.table.take_dirty():
            keys = [self.keys.persist(group, key) for group, key, _, _ in batch]
            args = [x for _, _, host, ttl in batch for x in (host, ttl)]
            try:
                async with asyncio.timeout(5):
                    hosts = await self._refresh(keys=keys, args=args)
            except _ERRORS as exc:
                self.table.mark_dirty(batch)
                self._lost(exc)
                return sent
            now = self.clock()
            for (group, key, _, _), host in zip(batch, hosts, strict=True):
                self.table.confirm(group, key, host, now)
            sent += len(batch)
        return sent

    def _lost(self, exc) -> None:
        self.errors += 1
        if self.available:
            log.warning("redis unreachable (%s): persistence decisions stay local until it returns", exc or "timeout")
        self.available = False
