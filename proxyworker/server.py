"""Sockets: listeners, TCP forwarding and UDP flows. The only module that touches them.

Forwarding uses asyncio Protocols (transport callbacks, no streams, no task per
packet). The per-byte path is `data_received` -> `write` plus two counter
increments; everything else (idle timeouts, persistence refresh, reporting)
runs from periodic sweeps in the worker.

The protocols talk to a *hub* (the worker) for decisions and bookkeeping:
`hub.loop`, `hub.dispatcher`, `hub.live` (set of sessions), `hub.next_number()`,
`hub.session_started(s)`, `hub.session_moved(s, previous_server)` (a UDP flow redispatched),
`hub.session_ended(s)`, `hub.connect_failed(s, server, exc)`,
`hub.refused(service, reason)`, `hub.udp_dropped()`.

A listener is chosen by (mode, protocol) through `listener_class`; the layer-7
code registers its own with `register_listener("l7", "tcp", cls)`.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time

from .dispatch import Service

log = logging.getLogger("proxyworker.server")

BACKLOG = 4096
# Write-buffer marks: past HIGH_WATER bytes queued towards one side, the other
# side stops reading until the queue falls under LOW_WATER (bounded memory).
# Below uvloop's 256 KiB read size on purpose: with marks above it, whole reads
# pile up in user space and bench/l4.py measured twice the CPU per forwarded MB.
HIGH_WATER = 128 * 1024
LOW_WATER = 32 * 1024
UDP_PENDING_MAX = 64  # datagrams queued per flow while its server is chosen; more are dropped
# Once a flow has its server, the queue that can grow is the event loop's, when the kernel's send
# buffer is full: the transport then pauses its protocol (past the same HIGH_WATER mark), and the
# flow drops datagrams in that direction until it resumes. Dropping is UDP's own back-pressure
# (Blast and PCoIP adapt their rate to loss); buffering would only add latency and memory.


def listening_socket(address: str, port: int, kind: int) -> socket.socket:
    """A bound socket shared with other workers on the same VIP (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # "::" must not swallow IPv4: a VIP on 0.0.0.0 with the same port is a separate listener.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.setblocking(False)
        if kind == socket.SOCK_STREAM:
            sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def format_address(peer) -> str:
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SessionInfo:
    """What every session (TCP connection or UDP flow) reports."""

    __slots__ = ("hub", "service", "counters", "peer", "number", "server", "client_key", "opened_at",
                 "bytes_in", "bytes_out", "seen", "active_at", "closed", "started", "published")
    protocol = "tcp"

    def _init_session(self, hub, service: Service, peer):
        self.hub, self.service, self.counters, self.peer = hub, service, service.counters, peer
        self.number = hub.next_number()
        self.server = None
        self.client_key = ""
        self.opened_at = time.time()
        self.bytes_in = self.bytes_out = 0  # client -> server, server -> client
        self.seen = 0  # bytes_in + bytes_out at the last sweep: activity without a per-packet clock
        self.active_at = hub.loop.time()
        self.closed = self.started = False
        self.published = -1  # bytes moved when last written to the sessions hash; -1 = not there

    def _open_session(self, hub, service: Service, peer):
        """Count this session and make it visible to the sweep and the reporting."""
        self._init_session(hub, service, peer)
        service.counters.active += 1
        service.counters.total += 1
        hub.live.add(self)

    def _admit(self, hub, service: Service, transport) -> bool:
        """A new client connection (layer 4 or 7): refused beyond max_connections, else opened."""
        limit = service.vs.max_connections
        if limit and service.counters.active >= limit:
            hub.refused(service, "max_connections")
            transport.close()
            return False
        peer = transport.get_extra_info("peername")
        if peer is None:  # reset before we even saw it
            transport.abort()
            return False
        self._open_session(hub, service, peer)
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        return True

    def describe(self, worker_id: str, now_wall: float, now_loop: float) -> dict:
        server = self.server
        return {
            "id": f"{worker_id}:{self.number}",
            "vs": self.service.name,
            "port": self.service.vs.port,
            "protocol": self.protocol,
            "client": format_address(self.peer),
            "client_key": self.client_key or self.peer[0],
            "server": server.id,
            "server_address": f"{server.address}:{server.port}",
            "group": self.service.group,
            "opened_at": self.opened_at,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "active_at": now_wall - (now_loop - self.active_at),
        }


# --- TCP ---------------------------------------------------------------------


class TcpListener:
    kind = socket.SOCK_STREAM

    def __init__(self, hub, service: Service):
        self.hub, self.service = hub, service
        self.key = service.vs.listen_key
        self.server = None

    async def open(self):
        vs = self.service.vs
        sock = listening_socket(self.key[0], vs.port, self.kind)
        self.server = await self.hub.loop.create_server(self._accept, sock=sock, backlog=BACKLOG)

    def _accept(self):
        return TcpConnection(self.hub, self.service)

    def update(self, service: Service):
        """A new config version: new connections follow it, established ones keep theirs."""
        self.service = service

    def close(self):
        # Stops accepting only: established connections are not the server's to close.
        if self.server is not None:
            self.server.close()


class TcpConnection(SessionInfo, asyncio.Protocol):
    """The client side of one proxied connection; it owns the session."""

    __slots__ = ("transport", "upstream", "pending", "client_eof", "server_eof", "task")

    def __init__(self, hub, service: Service):
        self.hub, self.service = hub, service
        self.transport = self.upstream = self.pending = self.task = None
        self.client_eof = self.server_eof = False
        self.closed = True  # until counted in connection_made

    def connection_made(self, transport):
        self.transport = transport
        hub = self.hub
        if self._admit(hub, self.service, transport):
            self.task = hub.loop.create_task(self._connect())

    # -- choosing and reaching a server (redispatch on refusal or timeout) --
    async def _connect(self):
        """Choose a server and connect to it; on refusal or timeout, the next one (redispatch).

        One coroutine, one plain timer: this runs once per client connection.
        """
        hub, service = self.hub, self.service
        dispatcher, loop = hub.dispatcher, hub.loop
        try:
            # A known client (or no persistence) is decided from the local cache: no Redis, no await.
            decided, choice = dispatcher.choose_now(service, self.peer[0])
            tried: set[str] = set()
            while True:
                if not decided:
                    choice = await dispatcher.choose(service, self.peer[0], tried)
                decided = False
                if choice is None:
                    break
                server = choice.server
                upstream = Upstream(self)
                dispatcher.reserve(server)
                timer = loop.call_later(service.vs.connect_timeout, self._connect_timed_out, upstream)
                failure = None
                try:
                    transport, _ = await loop.create_connection(lambda u=upstream: u, server.address, server.port)
                except OSError as exc:
                    failure = exc
                except asyncio.CancelledError:
                    if not upstream.timed_out:  # the client left
                        dispatcher.release(server)
                        raise
                    self.task.uncancel()
                    transport = upstream.transport  # connected just as the timer fired: keep it
                    if transport is None or transport.is_closing():
                        failure = TimeoutError()
                finally:
                    timer.cancel()
                if failure is None:
                    self._attach(transport, upstream, choice)
                    return
                dispatcher.release(server)
                tried.add(server.id)
                hub.connect_failed(self, server, failure)
                if self.closed:
                    return
            if not self.closed:
                hub.refused(service, "no server")
                self.transport.close()
        except Exception:  # a bug must cost this one connection, never the worker
            log.exception("connection from %s on %s failed", self.peer[0], self.service.name)
            self.transport.abort()

    def _connect_timed_out(self, upstream):
        upstream.timed_out = True
        self.task.cancel()

    def _attach(self, transport, upstream, choice):
        self.server, self.client_key = choice.server, choice.client_key
        if self.closed:  # the client left while we connected
            self.hub.dispatcher.release(choice.server)
            transport.close()
            return
        self.upstream = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        self.started = True
        self.hub.session_started(self)
        upstream.attach()
        if transport.is_closing():
            return
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self.transport.resume_reading()
            transport.write(b"".join(pending))
        if self.client_eof:
            transport.write_eof()

    # -- client -> server --
    def data_received(self, data):
        size = len(data)
        self.bytes_in += size
        self.counters.bytes_in += size
        upstream = self.upstream
        if upstream is not None:
            upstream.write(data)
        else:
            # Not connected yet: hold this one chunk and stop reading (bounded).
            if self.pending is None:
                self.pending = []
            self.pending.append(data)
            self.transport.pause_reading()

    # -- half-close: each direction ends on its own; when both have, close --
    # (A close sends the FIN that write_eof would have, after the queued bytes: one shutdown less.)
    def eof_received(self):
        self.client_eof = True
        if self.upstream is not None:
            if self.server_eof:
                self.transport.close()  # and connection_lost closes the server side
            else:
                self.upstream.write_eof()
        return True  # keep the other direction open (half-close)

    def server_eof_received(self):
        self.server_eof = True
        if self.client_eof:
            self.transport.close()
        else:
            self.transport.write_eof()

    # -- back-pressure: the client is slow to read, so stop reading the server --
    def pause_writing(self):
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self):
        if self.upstream is not None:
            self.upstream.resume_reading()

    def connection_lost(self, exc):
        if self.closed:
            return
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.upstream is not None:
            self.upstream.close()
        self.hub.session_ended(self)

    def abort(self):
        """Idle timeout or shutdown deadline: cut both sides now, buffered bytes included."""
        if self.upstream is not None:
            self.upstream.abort()
        self.transport.abort()


class Upstream(asyncio.Protocol):
    """The server side of a proxied connection; forwards to its client."""

    __slots__ = ("client", "transport", "early", "attached", "early_eof", "lost", "timed_out")

    def __init__(self, client: TcpConnection):
        self.client = client
        self.transport = None
        self.early = None  # bytes that arrived before the client adopted this connection
        self.attached = self.early_eof = self.lost = self.timed_out = False

    def connection_made(self, transport):
        self.transport = transport

    def attach(self):
        """The client adopted this connection: replay what happened before."""
        self.attached = True
        if self.early:
            self.client.transport.write(b"".join(self.early))
            self.early = None
        if self.early_eof:
            self.client.server_eof_received()
        if self.lost:
            self.client.transport.close()

    def data_received(self, data):
        client = self.client
        size = len(data)
        client.bytes_out += size
        client.counters.bytes_out += size
        if self.attached:
            client.transport.write(data)
        else:  # a connect timeout may still discard this connection: do not leak its bytes
            if self.early is None:
                self.early = []
            self.early.append(data)

    def eof_received(self):
        if self.attached:
            self.client.server_eof_received()
        else:
            self.early_eof = True
        return True

    def pause_writing(self):
        if self.attached:
            self.client.transport.pause_reading()

    def resume_writing(self):
        if self.attached:
            self.client.transport.resume_reading()

    def connection_lost(self, exc):
        if self.attached:
            self.client.transport.close()
        else:
            self.lost = True


# --- UDP ---------------------------------------------------------------------


class UdpListener(asyncio.DatagramProtocol):
    """One socket per UDP VIP; a flow per client address, each with its own socket to a server."""

    kind = socket.SOCK_DGRAM

    def __init__(self, hub, service: Service):
        self.hub, self.service = hub, service
        self.key = service.vs.listen_key
        self.transport = None
        self.paused = False  # the socket towards the clients is full: flows drop server -> client
        self.flows: dict[tuple, UdpFlow] = {}

    async def open(self):
        sock = listening_socket(self.key[0], self.service.vs.port, self.kind)
        self.transport, _ = await self.hub.loop.create_datagram_endpoint(lambda: self, sock=sock)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False

    def update(self, service: Service):
        self.service = service

    def close(self):
        # A UDP flow answers through the listening socket, so flows end with it.
        for flow in list(self.flows.values()):
            flow.abort()
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data, addr):
        flow = self.flows.get(addr)
        if flow is None:
            service = self.service
            limit = service.vs.max_connections
            if limit and service.counters.active >= limit:
                self.hub.refused(service, "max_connections")
                return
            flow = self.flows[addr] = UdpFlow(self, service, addr)
        flow.send(data)

    def error_received(self, exc):
        log.debug("udp %s: %s", self.key, exc)

    def connection_lost(self, exc):
        pass


class UdpFlow(SessionInfo, asyncio.DatagramProtocol):
    __slots__ = ("listener", "transport", "pending", "task", "tried", "paused")
    protocol = "udp"

    def __init__(self, listener: UdpListener, service: Service, addr):
        self.listener = listener
        self.transport = None
        self.paused = False  # the socket towards the server is full: client -> server is dropped
        self.pending = []
        self.tried: set[str] = set()
        hub = listener.hub
        self._open_session(hub, service, addr)
        self.task = hub.loop.create_task(self._connect())

    async def _connect(self):
        try:
            await self._reach_server()
        except Exception:  # a bug must cost this one flow, never the worker
            log.exception("udp flow from %s on %s failed", self.peer[0], self.service.name)
            self.abort()

    async def _reach_server(self):
        hub, service = self.hub, self.service
        while not self.closed:
            choice = await hub.dispatcher.choose(service, self.peer[0], self.tried)
            if choice is None:
                hub.refused(service, "no server")
                self.abort()
                return
            server = choice.server
            hub.dispatcher.reserve(server)
            try:
                transport, _ = await hub.loop.create_datagram_endpoint(
                    lambda: self, remote_addr=(server.address, server.port))
            except OSError as exc:
                hub.dispatcher.release(server)
                self.tried.add(server.id)
                hub.connect_failed(self, server, exc)
                continue
            except BaseException:
                hub.dispatcher.release(server)
                raise
            if self.closed:
                hub.dispatcher.release(server)
                transport.close()
                return
            previous = self.server
            transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
            self.transport, self.server, self.client_key = transport, server, choice.client_key
            self.paused = False
            if not self.started:
                self.started = True
                hub.session_started(self)
            elif previous is not server:
                hub.session_moved(self, previous)
            pending, self.pending = self.pending, []
            for data in pending:
                transport.sendto(data)
            return

    def send(self, data):
        if self.transport is not None:
            if self.paused:
                self.hub.udp_dropped()
                return
            self.transport.sendto(data)
        elif len(self.pending) < UDP_PENDING_MAX:
            self.pending.append(data)
        else:
            self.hub.udp_dropped()
            return  # dropped (bounded queue): not counted as bytes that went to the server
        size = len(data)
        self.bytes_in += size
        self.counters.bytes_in += size

    def connection_made(self, transport):
        pass  # adopted in _connect: a discarded endpoint must not replace the live one

    def datagram_received(self, data, addr):
        listener = self.listener
        if listener.transport is None or listener.paused:
            self.hub.udp_dropped()
            return
        size = len(data)
        self.bytes_out += size
        self.counters.bytes_out += size
        listener.transport.sendto(data, self.peer)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False

    def error_received(self, exc):
        # ICMP port unreachable from the server: try another one for this flow (redispatch).
        if (isinstance(exc, ConnectionRefusedError) and self.transport is not None
                and self.server is not None and not self.closed):
            server, old = self.server, self.transport
            self.tried.add(server.id)
            self.transport = None
            old.close()
            self.hub.connect_failed(self, server, exc)
            self.task = self.hub.loop.create_task(self._connect())

    def connection_lost(self, exc):
        pass

    def abort(self):
        if self.closed:
            return
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.transport is not None:
            self.transport.close()
        self.listener.flows.pop(self.peer, None)
        self.hub.session_ended(self)


LISTENERS = {("l4", "tcp"): TcpListener, ("l4", "udp"): UdpListener}


def register_listener(mode: str, protocol: str, cls) -> None:
    """The seam for layer 7: a listener class with open/update/close, built as cls(hub, service)."""
    LISTENERS[(mode, protocol)] = cls


def listener_class(vs):
    return LISTENERS.get((vs.mode, vs.protocol))
