"""What the worker tells the rest of the system, batched and off the hot path.

- Heartbeat `Keys.worker(id)`: JSON, TTL 10 s, every 2 s and right after a
  config version is applied.
- The live sessions of this worker in the hash `Keys.sessions(id)` (session
  id -> JSON), so a dashboard can page through them server-side; it expires
  with the heartbeat.
- Channels groups `sessions` and `stats` (see `messages.py`): at most one
  message per group per 250 ms flush, with a cap on items per message; a
  connection that opened and closed within one flush is in the counters only.
The per-connection cost is one list append at open and one at close.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from channels_redis.core import RedisChannelLayer

from .messages import SESSIONS_GROUP, STATS_GROUP, SessionsBatch, StatsBatch

log = logging.getLogger("proxyworker.reporting")

FLUSH_SECONDS = 0.25
HEARTBEAT_SECONDS = 2.0
HEARTBEAT_TTL = 10
BATCH_CAP = 500  # sessions per list per message; the rest are counted in `dropped`
STATS_EVERY = 2.0  # unchanged stats are still re-sent this often, as a sign of life
REDIS_TIMEOUT = 2.0


class Reporter:
    def __init__(self, worker):
        self.worker = worker
        self.redis = worker.redis
        self.keys = worker.keys
        self.layer = RedisChannelLayer(hosts=[worker.settings.redis_url], prefix=worker.keys.channels_prefix)
        self._opened: list = []
        self._closed: list = []
        self._heartbeat_due = True
        self._resync_sessions = True  # rewrite the whole sessions hash (start, or Redis came back)
        self._last_stats = None
        self._last_stats_at = 0.0
        self.failures = 0
        self._wake = asyncio.Event()

    # -- called from the data path --
    def opened(self, session) -> None:
        self._opened.append(session)

    def closed(self, session) -> None:
        self._closed.append((session, time.time()))

    def heartbeat_soon(self) -> None:
        self._heartbeat_due = True
        self._wake.set()

    # -- the loop --
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time()
        while True:
            try:
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if loop.time() >= next_heartbeat:
                self._heartbeat_due = True
            if self._heartbeat_due:
                next_heartbeat = loop.time() + HEARTBEAT_SECONDS
            await self.flush()

    async def flush(self) -> None:
        heartbeat, self._heartbeat_due = self._heartbeat_due, False
        opened, self._opened = self._opened, []
        closed, self._closed = self._closed, []
        now = time.time()
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self._write_redis(opened, closed, heartbeat, now)
        except Exception as exc:  # Redis down: keep serving, rewrite everything when it is back
            self._failed("redis", exc)
            self._resync_sessions = True
            self._heartbeat_due = True
            return
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self._send_sessions(opened, closed)
                await self._send_stats(now)
        except Exception as exc:
            self._failed("channels", exc)

    async def _write_redis(self, opened, closed, heartbeat, now) -> None:
        worker, keys = self.worker, self.keys
        sessions_key = keys.sessions(worker.id)
        wall, mono = now, worker.loop.time()
        upserts = {}
        if self._resync_sessions or heartbeat:
            # Whole rewrite after an outage; otherwise refresh the sessions that moved data since.
            live = [s for s in worker.live
                    if s.started and (self._resync_sessions or s.published != s.bytes_in + s.bytes_out)]
        else:
            live = [s for s in opened if not s.closed]
        for session in live:
            entry = session.describe(worker.id, wall, mono)
            upserts[entry["id"]] = _json(entry)
            session.published = session.bytes_in + session.bytes_out
        gone = [f"{worker.id}:{s.number}" for s, _ in closed if s.published >= 0]
        async with self.redis.pipeline(transaction=False) as pipe:
            if self._resync_sessions:
                pipe.delete(sessions_key)
            if upserts:
                pipe.hset(sessions_key, mapping=upserts)
            if gone:
                pipe.hdel(sessions_key, *gone)
            if heartbeat:
                pipe.set(keys.worker(worker.id), _json(worker.heartbeat()), ex=HEARTBEAT_TTL)
                pipe.expire(sessions_key, HEARTBEAT_TTL)
            if len(pipe):
                await pipe.execute()
        self._resync_sessions = False

    async def _send_sessions(self, opened, closed) -> None:
        # A connection that opened and closed within one flush never reached the sessions hash
        # (published < 0): the dashboards would add and remove it at once, so it is left out of
        # both lists and shows only in the counters. Under a connection storm that is most of them.
        opened = [s for s in opened if not s.closed]
        closed = [(s, at) for s, at in closed if s.published >= 0]
        if not opened and not closed:
            return
        worker = self.worker
        wall, mono = time.time(), worker.loop.time()
        message: SessionsBatch = {
            "type": "sessions.batch",
            "worker": worker.id,
            "opened": [s.describe(worker.id, wall, mono) for s in opened[:BATCH_CAP]],
            "closed": [{"id": f"{worker.id}:{s.number}", "bytes_in": s.bytes_in, "bytes_out": s.bytes_out,
                        "closed_at": at} for s, at in closed[:BATCH_CAP]],
            "dropped": max(len(opened) - BATCH_CAP, 0) + max(len(closed) - BATCH_CAP, 0),
        }
        await self.layer.group_send(SESSIONS_GROUP, message)

    async def _send_stats(self, now: float) -> None:
        worker = self.worker
        services = {name: c.as_dict() for name, c in worker.counters.items()}
        servers = {}
        for server_id, c in worker.server_counters.items():
            servers[server_id] = dict(c.as_dict(), active=worker.active.get(server_id, 0))
        current = (services, servers)
        if current == self._last_stats and now - self._last_stats_at < STATS_EVERY:
            return
        self._last_stats, self._last_stats_at = current, now
        message: StatsBatch = {"type": "stats.batch", "worker": worker.id, "at": now,
                               "services": services, "servers": servers}
        await self.layer.group_send(STATS_GROUP, message)

    def _failed(self, what: str, exc) -> None:
        self.failures += 1
        if self.failures == 1 or self.failures % 100 == 0:
            log.warning("reporting to %s failed (%d so far): %s", what, self.failures, exc or "timeout")

    async def close(self) -> None:
        """Clean exit: last batch out, then remove this worker's heartbeat and sessions."""
        try:
            await self.flush()
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self.redis.delete(self.keys.worker(self.worker.id), self.keys.sessions(self.worker.id))
        except Exception as exc:
            log.warning("could not remove the heartbeat on exit: %s", exc or "timeout")
        try:
            await self.layer.close_pools()
        except Exception:  # nothing left to report to
            pass


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"))
