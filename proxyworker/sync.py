"""The link to the control plane: config versions and server states from Redis.

Subscribes to the channels `Keys.config` (message = a version number: re-GET
the key), `Keys.health` (any message: re-read the health and admin
hashes) and `Keys.control` (a `messages.ControlMessage`: act on one client's
sessions at once; nothing to re-read, so a message missed while Redis was away
is lost, as the console's own DELETE of the persistence entry is not). It subscribes *before* reading, so nothing published in between is
missed, re-reads everything every few seconds as a safety net, and when Redis
goes away it keeps the last good state, retries with backoff and resyncs.
"""
from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from .messages import parse_control

log = logging.getLogger("proxyworker.sync")

RESYNC_SECONDS = 5.0
START_TIMEOUT = 2.0
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0
_ERRORS = (RedisError, OSError, TimeoutError)


class ControlPlaneLink:
    def __init__(self, worker):
        self.worker = worker
        self.redis = worker.redis
        self.keys = worker.keys
        self.connected = False
        self._last_text = None  # the safety-net re-read skips parsing an unchanged snapshot

    async def start(self) -> None:
        """Initial state: from Redis if it answers, else from the copy on disk."""
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await self.load_states()
                text = await self.redis.get(self.keys.config)
        except _ERRORS as exc:
            log.warning("redis unreachable at start (%s): starting from the saved copy", exc or "timeout")
            self.worker.shared.available = False
            text = None
        snapshot = self.worker.parse(text, "redis") if text else None
        source = "redis"
        if snapshot is None:
            snapshot, source = self.worker.load_saved(), "disk"
        if snapshot is None:
            log.warning("no configuration in redis or on disk yet: waiting for a publish")
            return
        await self.worker.apply(snapshot, source)

    async def run(self) -> None:
        backoff = BACKOFF_MIN
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.config, self.keys.health, self.keys.control)
                await self.resync()
                if not self.connected:
                    log.info("subscribed to %s, %s and %s", self.keys.config, self.keys.health, self.keys.control)
                self.connected, backoff = True, BACKOFF_MIN
                await self._listen(pubsub)
            except _ERRORS as exc:
                if self.connected:
                    log.warning("lost redis (%s): serving the last config, retrying", exc or "timeout")
                self.connected = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            finally:
                await _close_quietly(pubsub)

    async def _listen(self, pubsub) -> None:
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + RESYNC_SECONDS
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "message":
                channel = message["channel"]
                if channel == self.keys.config:
                    await self.load_config()
                elif channel == self.keys.control:
                    self.control(message["data"])
                else:
                    await self.load_states()
            if loop.time() >= next_resync:
                await self.resync()
                next_resync = loop.time() + RESYNC_SECONDS

    def control(self, text) -> None:
        """One control message; a malformed one is logged and changes nothing."""
        try:
            message = parse_control(text)
        except ValueError as exc:
            log.warning("control message ignored (%s): %.200r", exc, text)
            return
        try:
            self.worker.kill_session(message["group"], message["client_key"], message["by"])
        except Exception:  # a bug here must not end the link to the control plane
            log.exception("control message %r failed", message)

    async def resync(self) -> None:
        await self.load_states()
        await self.load_config()

    async def load_config(self) -> None:
        text = await self.redis.get(self.keys.config)
        if not text or text == self._last_text:
            return
        self._last_text = text
        snapshot = self.worker.parse(text, "redis")
        current = self.worker.snapshot
        if snapshot is not None and (current is None or snapshot.version != current.version):
            await self.worker.apply(snapshot, "redis")

    async def load_states(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.health)
            pipe.hgetall(self.keys.admin)
            health, admin = await pipe.execute()
        changed = self.worker.states.update(health, admin)
        if changed:
            if self.worker.reporter is not None:
                self.worker.reporter.heartbeat_soon()
            log.info("server states changed: %s", ", ".join(
                f"{sid}={_describe(self.worker.states, sid)}" for sid in changed[:20]))


def _describe(states, server_id) -> str:
    return f"{states.health.get(server_id, '-')}/{states.admin.get(server_id, '-')}"


async def _close_quietly(pubsub) -> None:
    try:
        await pubsub.aclose()
    except Exception:  # the connection may already be gone; nothing to save
        pass
