"""The worker: applies config versions as diffs, keeps the books, sweeps, shuts down gracefully.

It is the *hub* the socket protocols in `server.py` call, and it owns the
long-running tasks: the control-plane link (config and server states from
Redis), the sweep (idle timeouts, persistence activity), the persistence
refresh and the reporter.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from .config import ConfigError, Keys, Snapshot
from .dispatch import Counters, Dispatcher, ServerCounters, Service
from .l7.listener import L7Listener
from .persistence import PersistenceTable, SharedPersistence
from .scheduler import make_scheduler
from .server import listener_class, register_listener
from .state import ServerStates

log = logging.getLogger("proxyworker")

SWEEP_SECONDS = 1.0
REFRESH_SECONDS = 1.0
RETRY_LISTENERS_SECONDS = 5.0

register_listener("l7", "tcp", L7Listener)


@dataclass
class Settings:
    worker_id: str
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "viewlb"
    state_dir: Path = field(default_factory=lambda: Path("var/worker"))
    drain_seconds: float = 30.0

    @classmethod
    def from_env(cls, worker_id: str | None = None, state_dir: str | None = None, env=os.environ) -> Settings:
        worker_id = worker_id or env.get("VIEWLB_WORKER_ID") or f"{socket.gethostname()}-{os.getpid()}"
        return cls(
            worker_id=worker_id,
            redis_url=env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            prefix=env.get("VIEWLB_REDIS_PREFIX", "viewlb"),
            state_dir=Path(state_dir or env.get("VIEWLB_STATE_DIR") or f"var/worker-{worker_id}"),
            drain_seconds=float(env.get("VIEWLB_DRAIN_SECONDS", "30")),
        )


class Worker:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.id = settings.worker_id
        self.keys = Keys(settings.prefix)
        self.started_at = time.time()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.snapshot: Snapshot | None = None
        self.listeners: dict[tuple, object] = {}
        self.services: dict[str, Service] = {}
        self.counters: dict[str, Counters] = {}  # per virtual service name, across versions
        self.server_counters: dict[str, ServerCounters] = {}
        self.active: dict[str, int] = {}  # server id -> active sessions (least_connections)
        self.live: set = set()
        self.totals = dict(connections=0, refused=0, redispatches=0, config_applied=0, config_rejected=0,
                           udp_dropped=0)
        self.states = ServerStates()
        self.table = PersistenceTable()
        self.shared = SharedPersistence(self.keys, self.table, self._clock)
        self.dispatcher = Dispatcher(self.states, self.table, self.shared, self.active, self._clock)
        self.redis = None
        self.reporter = None
        self._numbers = itertools.count(1)
        self._apply_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._wanted: dict = {}  # listen key -> (service, listener class) of the applied version

    def _clock(self) -> float:
        return self.loop.time()

    # --- life cycle ----------------------------------------------------------
    async def run(self) -> int:
        from .reporting import Reporter
        from .sync import ControlPlaneLink

        self.loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, stop.set)
        self.redis = aioredis.from_url(self.settings.redis_url, decode_responses=True,
                                       socket_connect_timeout=1.0, socket_timeout=5.0)
        self.shared.attach(self.redis)
        self.reporter = Reporter(self)
        link = ControlPlaneLink(self)
        await link.start()
        link_task = self._spawn(link.run(), "control-plane link")
        self._spawn(self._every(SWEEP_SECONDS, self.sweep), "sweep")
        self._spawn(self._every(REFRESH_SECONDS, self.shared.refresh), "persistence refresh")
        self._spawn(self._every(RETRY_LISTENERS_SECONDS, self.retry_listeners), "listener retry")
        self._spawn(self.reporter.run(), "reporter")
        log.info("worker %s started (pid %d, %s)", self.id, os.getpid(), type(self.loop).__module__)
        await stop.wait()
        link_task.cancel()  # a config arriving now must not reopen listeners
        await self.drain()
        await self._stop_tasks()
        await self.reporter.close()
        await self.redis.aclose()
        log.info("worker %s stopped", self.id)
        return 0

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = self.loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def _every(self, seconds: float, job) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                result = job()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("periodic job %s failed", getattr(job, "__name__", job))

    async def _stop_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self) -> None:
        """SIGTERM: stop accepting, let connections finish up to the deadline, then cut the rest."""
        self._wanted = {}  # the listener retry must not reopen what is being closed
        for listener in self.listeners.values():
            try:
                listener.close()
            except Exception:  # one broken listener must not keep the others open
                log.exception("closing listener %s failed", _fmt(listener.key))
        self.listeners.clear()
        deadline = self.loop.time() + self.settings.drain_seconds
        log.info("stopping: listeners closed, waiting up to %.0f s for %d connections",
                 self.settings.drain_seconds, len(self.live))
        while self.live and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.live:
            log.warning("drain deadline reached: closing %d connections", len(self.live))
            for session in list(self.live):
                session.abort()
            await asyncio.sleep(0)

    # --- config --------------------------------------------------------------
    def parse(self, text, source: str) -> Snapshot | None:
        try:
            return Snapshot.from_json(text)
        except ConfigError as exc:
            self.totals["config_rejected"] += 1
            if self.reporter is not None:
                self.reporter.heartbeat_soon()  # the console shows the rejection without waiting
            log.error("invalid config snapshot from %s ignored, keeping version %s: %s",
                      source, self.snapshot.version if self.snapshot else "none", exc)
            return None

    async def apply(self, snapshot: Snapshot, source: str) -> None:
        """Apply a version as a diff keyed by (address, port, protocol); connections are never cut."""
        async with self._apply_lock:
            if self.snapshot is not None and snapshot.version == self.snapshot.version:
                return
            wanted = {}
            for vs in snapshot.enabled_services():
                cls = listener_class(vs)
                if cls is None:
                    log.warning("virtual service %s refused: mode %s/%s is not served by this worker",
                                vs.name, vs.mode, vs.protocol)
                    continue
                wanted[vs.listen_key] = (self._service(vs, snapshot), cls)
            closed = self._close_unwanted(wanted)
            opened = await self._open_wanted(wanted)
            self._wanted = wanted
            self.services = {service.name: service for service, _ in wanted.values()}
            self.snapshot = snapshot
            self.totals["config_applied"] += 1
            log.info("config version %d applied from %s: %d listeners (%d opened, %d closed)",
                     snapshot.version, source, len(self.listeners), opened, closed)
            if source != "disk":
                self._save(snapshot)
            if self.reporter is not None:
                self.reporter.heartbeat_soon()

    def _service(self, vs, snapshot: Snapshot) -> Service:
        pool = snapshot.pool(vs.pool)
        previous = self.services.get(vs.name)
        if previous and previous.pool == pool and previous.vs.scheduler == vs.scheduler:
            scheduler = previous.scheduler  # same servers, same rule: keep its rotation
        else:
            scheduler = make_scheduler(vs.scheduler)
        counters = self.counters.setdefault(vs.name, Counters())
        certificates = tuple(c for c in snapshot.certificates if vs.tls and c.name in vs.tls.certificates)
        return Service(vs, pool, scheduler, counters, certificates=certificates)

    def _close_unwanted(self, wanted) -> int:
        closed = 0
        for key, listener in list(self.listeners.items()):
            entry = wanted.get(key)
            if entry is None or type(listener) is not entry[1]:
                listener.close()
                del self.listeners[key]
                closed += 1
                log.info("listener %s closed (%s); its connections continue", _fmt(key), listener.service.name)
        return closed

    async def _open_wanted(self, wanted, retry: bool = False) -> int:
        opened = 0
        for key, (service, cls) in wanted.items():
            listener = self.listeners.get(key)
            if listener is not None:
                listener.update(service)
                continue
            listener = cls(self, service)
            try:
                await listener.open()
            except OSError as exc:
                (log.debug if retry else log.error)("listener %s for %s could not open: %s (retrying every %.0f s)",
                                                    _fmt(key), service.name, exc, RETRY_LISTENERS_SECONDS)
                continue
            self.listeners[key] = listener
            opened += 1
            log.info("listener %s opened (%s, pool %s)", _fmt(key), service.name, service.pool.name)
        return opened

    async def retry_listeners(self) -> None:
        """Listeners that could not open (address not here yet, port busy) are retried, not forgotten."""
        if len(self.listeners) < len(self._wanted):
            async with self._apply_lock:
                if await self._open_wanted(self._wanted, retry=True) and self.reporter is not None:
                    self.reporter.heartbeat_soon()

    @property
    def snapshot_path(self) -> Path:
        return self.settings.state_dir / "config.json"

    def _save(self, snapshot: Snapshot) -> None:
        """The last applied version, so the worker can start while Redis is unreachable."""
        try:
            self.settings.state_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.settings.state_dir, prefix=".config-", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(snapshot.to_json())
            os.replace(tmp, self.snapshot_path)
        except OSError as exc:
            log.error("could not save the config copy to %s: %s", self.snapshot_path, exc)

    def load_saved(self) -> Snapshot | None:
        try:
            text = self.snapshot_path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("could not read %s: %s", self.snapshot_path, exc)
            return None
        return self.parse(text, str(self.snapshot_path))

    # --- hub: called by the socket protocols ---------------------------------
    def next_number(self) -> int:
        return next(self._numbers)

    def _server_counters(self, server_id: str) -> ServerCounters:
        # get() first: setdefault would build a throwaway ServerCounters on every request
        counters = self.server_counters.get(server_id)
        if counters is None:
            counters = self.server_counters[server_id] = ServerCounters()
        return counters

    def session_started(self, session) -> None:
        server_id = session.server.id
        self._server_counters(server_id).total += 1
        self.totals["connections"] += 1
        self.states.connect_succeeded(server_id)
        self.reporter.opened(session)

    def session_moved(self, session, previous) -> None:
        self.dispatcher.release(previous)  # the new server was reserved when chosen
        self._server_counters(session.server.id).total += 1

    def session_ended(self, session) -> None:
        self.live.discard(session)
        session.counters.active -= 1
        if session.started:
            self.dispatcher.release(session.server)
            self.reporter.closed(session)

    def connect_failed(self, session, server, exc) -> None:
        self.dispatcher.connect_failed(server)
        self.totals["redispatches"] += 1
        self._server_counters(server.id).failed += 1
        log.warning("server %s (%s:%d) failed for %s on %s: %s; redispatching",
                    server.id, server.address, server.port, session.peer[0], session.service.name,
                    type(exc).__name__ if isinstance(exc, TimeoutError) else exc)

    def udp_dropped(self) -> None:
        """A datagram dropped by a full queue (UDP's back-pressure); counted, never logged one by one."""
        self.totals["udp_dropped"] += 1

    def refused(self, service: Service, reason: str) -> None:
        service.counters.refused += 1
        self.totals["refused"] += 1

    # --- control: the console acts on one Horizon session ------------------
    def kill_session(self, group: str, client_key: str, by: str = "") -> int:
        """Forget the local persistence entry and abort every live session of (group, client_key).

        Covers layer-4 connections, layer-7 connections and UDP flows alike: all are in
        `live` and report `client_key or peer[0]` as their key (what `describe` shows).
        Returns how many sessions were closed.
        """
        doomed = [s for s in self.live
                  if s.service.group == group and (s.client_key or s.peer[0]) == client_key]
        for session in doomed:
            # Nothing moved since the last sweep, as far as the sweep knows: it must not
            # re-mark the entry for a refresh before the abort lands (that would recreate
            # the Redis entry the console just deleted).
            session.seen = session.bytes_in + session.bytes_out
            session.abort()
        forgotten = self.table.forget(group, client_key)
        log.info("session.kill by %s: group %s, client %s: %d closed%s", by or "?", group, client_key,
                 len(doomed), ", persistence entry forgotten" if forgotten else "")
        return len(doomed)

    # --- periodic ------------------------------------------------------------
    def sweep(self) -> None:
        """Idle timeouts and persistence activity, once a second rather than per packet."""
        now = self.loop.time()
        touch = self.table.touch
        for session in list(self.live):
            moved = session.bytes_in + session.bytes_out
            if moved != session.seen:
                session.seen = moved
                session.active_at = now
                if session.client_key:
                    vs = session.service.vs
                    touch(vs.group, session.client_key, session.server.address, vs.persistence.timeout, now)
            elif now - session.active_at >= session.service.vs.idle_timeout:
                session.abort()
        self.table.purge(now)

    def heartbeat(self) -> dict:
        return {
            "id": self.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "at": time.time(),
            "config_version": self.snapshot.version if self.snapshot else None,
            "listeners": [
                {"vs": listener.service.name, "address": key[0], "port": key[1], "protocol": key[2],
                 "mode": listener.service.vs.mode}
                for key, listener in sorted(self.listeners.items(), key=lambda item: (item[0][1], item[0][0]))
            ],
            # The states as this worker applies them (health + admin), so tests and pages can see them.
            "servers": {server.id: self.states.state(server) for server in self.snapshot.servers()}
            if self.snapshot else {},
            "counters": dict(self.totals, active=len(self.live), persistence_entries=len(self.table),
                             redis_errors=self.shared.errors),
            "redis": self.shared.available,
        }


def _fmt(key) -> str:
    address, port, protocol = key
    return f"[{address}]:{port}/{protocol}" if ":" in address else f"{address}:{port}/{protocol}"
