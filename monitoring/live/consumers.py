"""The dashboards' WebSocket consumers: one per page.

Every consumer
- refuses anonymous users: it accepts and closes at once with 4401 (the page
  then asks the user to log in again); foreign Origins never get this far
  (AllowedHostsOriginValidator in viewlb_site/asgi.py rejects the handshake);
- joins its Channels groups only after that check;
- merges what the workers and the checker send into a buffer and sends the
  browser at most one message per `flush_seconds`, bounded in size, so no
  storm of batches can flood a browser;
- polls Redis for what has no event (heartbeats, health records, TTLs) every
  `poll_seconds`, stretched to five times the poll's own cost when the tables
  are big, in a thread (redis-py is blocking).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from monitoring import published
from monitoring.messages import HEALTH_GROUP
from proxyworker.messages import SESSIONS_GROUP, STATS_GROUP

from . import drain, overview, sources, tables
from .buffers import WATCH_CAP, EventsBuffer, SessionsBuffer
from .messages import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from .rates import StatsTracker

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
POLL_SECONDS = 2.0
POLL_COST_FACTOR = 5
POLL_SOON_SECONDS = 0.5  # an event may bring the next poll forward, but not closer than this
STATS_EVERY = 1.0  # charts get a point at least this often, even when no worker changed
SILENT_WORKERS_SECONDS = 3.0  # longer than a worker's 2 s "sign of life" stats interval


class LiveConsumer(AsyncJsonWebsocketConsumer):
    joins: tuple[str, ...] = ()
    flush_seconds = FLUSH_SECONDS
    poll_seconds = POLL_SECONDS

    async def connect(self):
        self._task = None
        self._joined = False
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await self.prepare():
            await self.accept()
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.accept()
        for group in self.joins:
            await self.channel_layer.group_add(group, self.channel_name)
        self._joined = True
        self._next_poll = 0.0
        self._last_poll = 0.0
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{type(self).__name__} flush")

    async def disconnect(self, code):
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)  # also a send that failed on a closed socket
        if self._joined:
            for group in self.joins:
                await self.channel_layer.group_discard(group, self.channel_name)

    # -- to override --
    async def prepare(self) -> bool:
        """Read the page's parameters; False closes the socket with 4404."""
        return True

    async def poll(self) -> None:
        """Read what has no event from Redis; runs every poll interval."""

    def take(self) -> dict | None:
        """The one message for this flush, or None."""
        return None

    # -- the loop --
    def poll_soon(self) -> None:
        """Bring the next poll forward (an event hinted at a change), but not closer than 0.5 s to the last."""
        self._next_poll = min(self._next_poll, self._last_poll + POLL_SOON_SECONDS)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() >= self._next_poll:
                started = self._last_poll = loop.time()
                try:
                    await self.poll()
                except Exception as exc:  # Redis away or a bad record: say so, keep the socket, retry
                    log.warning("%s poll failed: %s", type(self).__name__, exc)
                    await self.send_json({"type": "error", "message": f"live data unavailable: {exc}"})
                took = loop.time() - started
                self._next_poll = loop.time() + max(self.poll_seconds, POLL_COST_FACTOR * took)
            message = self.take()
            if message is not None:
                await self.send_json(message)
            # One message per interval at most: whatever arrives meanwhile is merged into the next one.
            await asyncio.sleep(self.flush_seconds)

    @classmethod
    async def decode_json(cls, text_data):
        try:
            return json.loads(text_data)
        except ValueError:
            return None


def _query(scope) -> dict[str, str]:
    params = parse_qs(scope.get("query_string", b"").decode("latin1"))
    return {name: values[0] for name, values in params.items()}


def _snapshot():
    current = published.load()
    return current.snapshot if current else None


class OverviewConsumer(LiveConsumer):
    """Live stats per VIP and server (from the workers' stats batches), workers and health (polled), events."""

    joins = (STATS_GROUP, HEALTH_GROUP)

    async def prepare(self) -> bool:
        self.tracker = StatsTracker()
        self.events = EventsBuffer()
        self.state = None
        self.stats_dirty = False
        self.stats_sent = 0.0
        self.opened_at = time.time()
        return True

    async def stats_batch(self, message):
        self.tracker.add(message)
        self.stats_dirty = True

    async def health_event(self, message):
        self.events.add({k: v for k, v in message.items() if k != "type"})
        self.poll_soon()

    async def poll(self) -> None:
        view = await asyncio.to_thread(overview.build, counts=False)
        self.state = view.state()

    def take(self) -> dict | None:
        now = time.time()
        message = {"type": "overview.update", "at": now}
        # Until a worker has been heard from (idle ones report every 2 s), the page's server-rendered
        # counts are better than sums over nobody.
        heard = bool(self.tracker.workers) or now - self.opened_at > SILENT_WORKERS_SECONDS
        if heard and (self.stats_dirty or now - self.stats_sent >= STATS_EVERY):
            message["stats"] = self.tracker.totals(now)
            self.stats_dirty, self.stats_sent = False, now
        if self.state is not None:
            message["state"], self.state = self.state, None
        events, skipped = self.events.take()
        if events:
            message["events"], message["events_skipped"] = events, skipped
        return message if len(message) > 2 else None


class SessionsConsumer(LiveConsumer):
    """New connections matching the page's filter, closes and refreshes of the rows the page shows."""

    joins = (SESSIONS_GROUP,)

    async def prepare(self) -> bool:
        snapshot = await asyncio.to_thread(_snapshot)
        # The page validated the filter for its user; here it only selects rows, so a VIP or server that
        # left the configuration since simply matches what the workers still report for it.
        query = _query(self.scope)
        self.filter = sources.Filter.resolve(snapshot, **{name: query.get(name, "")[:200]
                                                          for name in ("vs", "server", "client")})
        self.groups = tables.persistent_services(snapshot)
        self.buffer = SessionsBuffer(self.filter)
        self.watched_persist: list[tuple[str, str]] = []
        self.refreshed = None
        return True

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict) or content.get("type") != "watch":
            await self.send_json({"type": "error", "message": "expected {\"type\": \"watch\", ...}"})
            return
        ids = content.get("connections") or []
        pairs = content.get("persistence") or []
        if not isinstance(ids, list) or not isinstance(pairs, list):
            await self.send_json({"type": "error", "message": "watch: connections and persistence must be lists"})
            return
        self.buffer.watch(i for i in ids[:WATCH_CAP] if isinstance(i, str))
        self.watched_persist = [
            (p[0], p[1]) for p in pairs[:WATCH_CAP]
            if isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
        ]
        self.poll_soon()

    async def sessions_batch(self, message):
        self.buffer.add(message)

    async def poll(self) -> None:
        if not self.buffer.watched and not self.watched_persist:
            return
        client, keys = published.redis_client(), published.keys()
        rows = await asyncio.to_thread(sources.sessions_by_id, client, keys, self.buffer.watched)
        persist = await asyncio.to_thread(sources.persist_ttls, client, keys, self.watched_persist)
        self.refreshed = (rows, {f"{group} {key}": entry for (group, key), entry in persist.items()})

    def take(self) -> dict | None:
        if self.buffer.empty and self.refreshed is None:
            return None
        message = {"type": "sessions.update", "at": time.time(), **self.buffer.take()}
        for session in message["opened"]:  # the page needs the group to follow the row's persistence entry
            session["group"] = self.groups.get(session.get("vs"), "")
        if self.refreshed is not None:
            message["rows"], message["persistence"] = self.refreshed
            self.refreshed = None
        return message


@database_sync_to_async
def _server(pk: int):
    from balancer.models import RealServer

    server = RealServer.objects.select_related("pool").filter(pk=pk).first()
    return (server.server_id, server.address, server.admin_state) if server else None


class DrainConsumer(LiveConsumer):
    """The drain verdict of one server, recomputed every second and soon after connections close."""

    joins = (SESSIONS_GROUP,)
    poll_seconds = 1.0

    async def prepare(self) -> bool:
        found = await _server(self.scope["url_route"]["kwargs"]["pk"])
        if found is None:
            return False
        self.server_id, self.address, self.admin_default = found
        self.pending = None
        self.last_sent = None
        return True

    async def sessions_batch(self, message):
        if message.get("closed") or message.get("opened"):
            self.poll_soon()

    async def poll(self) -> None:
        verdict, sample = await asyncio.to_thread(drain.status, self.server_id, self.address, self.admin_default)
        self.pending = drain.update(verdict, sample)

    def take(self) -> dict | None:
        message, self.pending = self.pending, None
        if message is None:
            return None
        same = {k: v for k, v in message.items() if k != "at"}
        if same == self.last_sent:
            return None
        self.last_sent = same
        return message


class HealthConsumer(LiveConsumer):
    """Health events as they happen, and every server's current state."""

    joins = (HEALTH_GROUP,)

    async def prepare(self) -> bool:
        self.events = EventsBuffer()
        self.servers = None
        return True

    async def health_event(self, message):
        self.events.add({k: v for k, v in message.items() if k != "type"})
        self.poll_soon()

    async def poll(self) -> None:
        self.servers = await asyncio.to_thread(overview.server_states)

    def take(self) -> dict | None:
        events, skipped = self.events.take()
        if not events and self.servers is None:
            return None
        message = {"type": "health.update", "at": time.time(), "events": events, "skipped": skipped}
        if self.servers is not None:
            message["servers"], self.servers = self.servers, None
        return message
