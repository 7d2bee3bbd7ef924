"""The layer-7 client connection: TLS terminated, HTTP/1.1 routed request by request.

One `L7Connection` per client connection (the TLS handshake is done by the
event loop before `connection_made`). It runs the loop described in
`proxyworker/l7/__init__.py` with real sockets:

- the request head is parsed strictly (`http1.RequestParser`) and must arrive
  within the head timeout (slowloris: 408, or a silent close when nothing came);
- each request is placed on its own (`routing.Router`): persistence by cookie
  or source address, else the scheduler; the common case (no key, or a key the
  local cache confirmed recently) decides without a task or a Redis round trip;
- it goes to the server over the connection this client used last when that
  server is chosen again, else over an idle pooled one, else a new one (TLS
  again by default, `Tls.backend_tls`), with redispatch when a connect fails;
- the response is parsed too (`ResponseParser`); a learned cookie is written to
  the shared store *before* the client sees it, so its next request finds it on
  any worker; framing is rewritten by `serialize`;
- a 101 to a WebSocket Upgrade, or any answer to the Horizon tunnel request,
  turns the connection into a raw bidirectional pipe bound by the VIP's idle
  timeout (the worker's sweep), like a layer-4 connection;
- bad framing from the client is answered 400 (or 405/408), from the server
  502; either closes this connection only, and a server connection that saw
  part of a refused request is closed, never reused.

Back-pressure: a side whose write buffer is over the high-water mark stops the
other side from being read; the parser holds at most one request ahead.
"""
from __future__ import annotations

import asyncio
import logging

from ..dispatch import Choice
from ..server import SessionInfo
from .cookies import NOTHING
from .deadline import HeadDeadline
from .http1 import Body, EndOfMessage, Passthrough, RequestHead, RequestParser, ResponseHead
from .serialize import (
    body_bytes,
    end_bytes,
    error_response,
    request_head_bytes,
    response_head_bytes,
)
from .upstream import CLIENT_FULL, LEARNING

log = logging.getLogger("proxyworker.l7")

# why the client is not read (bit flags)
SERVER_FULL = 1  # the server's write buffer is over the high-water mark
CONNECTING = 2  # the request's server is being chosen or reached
HOLDING = 4  # the parser holds pipelined bytes until the current response is done
MAX_HELD = 64 * 1024
REPLAYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS"})


class L7Connection(SessionInfo, asyncio.Protocol):
    __slots__ = ("listener", "transport", "parser", "deadline", "timer", "paused", "client_full", "done",
                 "router", "request", "route", "source_key", "request_sent", "up", "ready", "pending", "replay",
                 "response_started", "framing_out", "keep", "server_keep", "status", "raw_in", "piping",
                 "held", "task", "cookies", "client_ip")

    def __init__(self, listener):
        self.listener = listener
        self.hub = listener.hub
        self.service = listener.service
        self.transport = self.task = self.timer = self.up = None
        self.closed = True  # until counted in connection_made

    # --- the client side -----------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        hub = self.hub
        if not self._admit(hub, self.service, transport):
            return
        peer = self.peer
        self.parser = RequestParser()
        self.deadline = HeadDeadline(self.listener.head_timeout)
        self.paused = 0
        self.client_full = self.done = self.ready = self.raw_in = self.piping = False
        self.request = self.route = self.source_key = self.replay = self.held = None
        self.router = self.cookies = None
        self.client_ip = peer[0].encode("ascii")  # for X-Forwarded-For, once per connection
        self.response_started = self.request_sent = False
        self.pending = []
        now = hub.loop.time()
        self.deadline.begin(now)  # the first head is due within the limit from the handshake on
        self.timer = hub.loop.call_at(now + self.deadline.limit, self._head_timeout)

    def data_received(self, data):
        size = len(data)
        self.bytes_in += size
        self.counters.bytes_in += size
        if self.raw_in:
            self._to_server(data)
            return
        if self.done:
            return
        events = self.parser.feed(data)
        if events:
            self._client_events(events)
        if not self.done:
            self._watch_head()

    def eof_received(self):
        return None  # TLS has no half-close: the connection ends (connection_lost follows)

    def _watch_head(self):
        """Bound what the parser holds, and start the head clock when a head begins to arrive."""
        parser = self.parser
        if not parser.buf:  # (what `parser.buffered` and `parser.in_head` read)
            return
        if self.request is not None:
            if len(parser.buf) > MAX_HELD:
                self._pause(HOLDING)
        elif self.timer is None and parser.state == "head":
            loop = self.hub.loop
            self.deadline.update(True, loop.time())
            self.timer = loop.call_at(self.deadline.started + self.deadline.limit, self._head_timeout)

    def _head_timeout(self):
        self.timer = None
        if self.done or self.request is not None or self.raw_in:
            return
        now = self.hub.loop.time()
        remaining = self.deadline.remaining(now)
        if remaining is None:
            return
        if remaining > 0:
            self.timer = self.hub.loop.call_at(now + remaining, self._head_timeout)
            return
        # Browsers open connections ahead of need: one that sent nothing is closed without a word.
        if self.parser.in_head:
            log.info("%s on %s: request head not complete after %.0f s (408)",
                     self.peer[0], self.service.name, self.deadline.limit)
            self.transport.write(error_response(408, "the request head took too long"))
        self._end()

    def _client_events(self, events):
        out = []  # bytes for the server, written at once
        for event in events:
            kind = type(event)
            if kind is Body:
                out.append(body_bytes(self.request.framing, event.data))
            elif kind is RequestHead:
                head = self._request(event)
                if self.done:
                    return
                if head is not None:
                    out.append(head)
            elif kind is EndOfMessage:
                if self.request.framing == "chunked":
                    out.append(end_bytes("chunked", event.trailers))
                self.request_sent = True
            elif kind is Passthrough:
                out.append(event.data)
            else:
                self._client_error(event)
                return
        if out:
            self._to_server(b"".join(out))

    def _to_server(self, data):
        if self.ready:
            self.up.transport.write(data)
        elif not self.done:
            self.pending.append(data)  # one read's worth: reading stopped while the server is reached
            self._pause(CONNECTING)

    def _client_error(self, error):
        log.info("%s on %s: refused (%d): %s", self.peer[0], self.service.name, error.status, error.reason)
        if self.request is not None and not self.request_sent:
            # Part of this request went (or was going) to the server: that connection must never carry another.
            if self.task is not None:
                self.task.cancel()
            self._drop_up()
        if not self.response_started:
            self.transport.write(error_response(error.status, error.reason))
        self._end()

    # --- placing a request -----------------------------------------------------------
    def _request(self, head: RequestHead) -> bytes | None:
        """Routes a new request; returns its head bytes when its server connection is ready now."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.deadline.head_arrived()
        listener = self.listener
        router = listener.router
        service = self.service = listener.service  # each request follows the config applied now
        self.request = head
        self.request_sent = self.response_started = False
        self.replay = None
        if head.tunnel:
            self.raw_in = True  # the bytes after a tunnel head belong to the server alone
        if router is not self.router or head.cookies != self.cookies:
            # The keys to look up depend only on these (and the source address): the same Cookie
            # fields as the previous request on this connection, under the same config, give the same.
            self.router, self.cookies = router, head.cookies
            self.source_key = service.key_for(self.peer[0]) if router.needs_source else None
            self.route = router.route(head.cookies, self.source_key)
        decided, choice = router.choose_now(self.route)
        if decided:
            if choice is None:
                self._no_server()
                return None
            up = self._reuse(choice.server)
            if up is not None:
                self._account(choice.server, reserved=False)
                return self._adopt(choice, up)
        self._pause(CONNECTING)
        self.task = self.hub.loop.create_task(self._reach(choice if decided else None))
        return None

    async def _reach(self, choice: Choice | None, fresh: bool = False):
        try:
            await self._reach_server(choice, fresh)
        except Exception:  # a bug must cost this one connection, never the worker
            log.exception("request from %s on %s failed", self.peer[0], self.service.name)
            self.abort()

    async def _reach_server(self, choice: Choice | None, fresh: bool):
        hub, listener, router = self.hub, self.listener, self.router
        tried: set[str] = set()
        while not self.done:
            if choice is None:
                choice = await router.choose(self.route, tried)
                if choice is None or self.done:
                    break
            server = choice.server
            up = None if fresh else self._reuse(server)
            moving = False
            if up is None:
                moving = self.server is None or self.server.id != server.id
                if moving:
                    hub.dispatcher.reserve(server)  # counted from the moment it is chosen (least connections)
                try:
                    up = await listener.connect(server)
                except (OSError, TimeoutError) as exc:
                    if moving:
                        hub.dispatcher.release(server)
                    tried.add(server.id)
                    hub.connect_failed(self, server, exc)
                    choice, fresh = None, False
                    continue
                except BaseException:  # cancelled: the client left
                    if moving:
                        hub.dispatcher.release(server)
                    raise
                if self.done:
                    if moving:
                        hub.dispatcher.release(server)
                    up.pool.give(up, hub.loop.time())
                    return
            self._account(server, reserved=moving)
            head = self._adopt(choice, up)
            pending, self.pending = self.pending, []
            up.transport.write(b"".join([head, *pending]) if pending else head)
            self._resume(CONNECTING)
            return
        if not self.done:
            self._no_server()

    def _reuse(self, server):
        """This client's server connection if it goes to `server` again, else an idle pooled one."""
        key = (server.address, server.port)
        now = self.hub.loop.time()
        up = self.up
        if up is not None:
            if up.key == key and up.fresh(now):
                return up
            self.up = None
            up.pool.give(up, now)
        return self.listener.pool.take(key, now)

    def _account(self, server, reserved: bool):
        """The session's server is the one of its latest request (dashboards, least connections)."""
        current = self.server
        if current is not None and current.id == server.id:
            self.server = server
            if reserved:
                self.hub.dispatcher.release(server)
            return
        hub = self.hub
        if not reserved:
            hub.dispatcher.reserve(server)
        self.server = server
        if not self.started:
            self.started = True
            hub.session_started(self)
        else:
            hub.session_moved(self, current)

    def _adopt(self, choice: Choice, up) -> bytes:
        """`up` carries the current request from now on; returns the head to send it."""
        if up is not self.up:
            up.adopt(self)
            self.up = up
            if self.client_full:
                up.pause(CLIENT_FULL)
        else:
            up.received = 0
        self.client_key = choice.client_key
        head = self.request
        up.parser.expect(head.method, bool(head.upgrade), head.tunnel)
        self.ready = True
        data = request_head_bytes(head, self.client_ip, drop_cookie=self.router.insert_name)
        if up.reused and head.method in REPLAYABLE and head.framing == "none" and not (head.upgrade or head.tunnel):
            self.replay = data
        return data

    def _no_server(self):
        self.hub.refused(self.service, "no server")
        self.pending = []
        if not self.response_started:
            self.transport.write(error_response(503, "no server is available"))
        self._end()

    # --- the server side (called by upstream.ServerConnection) -----------------------------
    def server_data(self, up, data):
        if up is not self.up:
            up.close()
            return
        size = len(data)
        self.bytes_out += size
        self.counters.bytes_out += size
        if self.piping:
            self.transport.write(data)
            return
        events = up.parser.feed(data)
        if events:
            self._server_events(events)

    def server_eof(self, up):
        self._server_gone(up)

    def server_lost(self, up):
        self._server_gone(up)

    def server_full(self, full: bool):
        if full:
            self._pause(SERVER_FULL)
        else:
            self._resume(SERVER_FULL)

    def _server_gone(self, up):
        if up is not self.up:
            return
        if self.piping or self.request is None:
            self._drop_up()  # an idle connection the server closed; or the end of a pipe
            if self.piping:
                self._end()
            return
        if self._retry(up):
            return
        events = up.parser.feed_eof()
        if events:
            self._server_events(events)

    def _retry(self, up) -> bool:
        """A reused connection closed before a single byte of answer: the server closed it idle just
        as the request went out. An idempotent request without a body goes again on a new connection."""
        if self.replay is None or up.received or self.response_started or self.done:
            return False
        self.replay = None
        self._drop_up()
        self._pause(CONNECTING)
        self.task = self.hub.loop.create_task(self._reach(Choice(self.server, self.client_key), fresh=True))
        return True

    def _server_events(self, events):
        if self.held is not None:  # the response waits for a learned cookie to be stored
            self.held.extend(events)
            return
        out = []
        finished = broken = False
        for event in events:
            kind = type(event)
            if kind is Body:
                out.append(body_bytes("chunked", event.data) if self.framing_out == "chunked" else event.data)
            elif kind is ResponseHead:
                if event.status < 200 and event.framing != "passthrough":  # interim (100, 103)
                    if self.request.version == b"1.1":  # HTTP/1.0 clients get no 1xx (RFC 9110 15.2)
                        out.append(response_head_bytes(event, "none", keep_alive=True))
                    continue
                router = self.router
                learn = router.learn(self.route, event.set_cookies, self.up.server, self.source_key)
                if learn is not NOTHING:
                    entries = router.to_store(learn)
                    if entries:
                        if out:
                            self.transport.write(b"".join(out))
                        rest = next(i for i, e in enumerate(events) if e is event) + 1
                        self._hold(entries, event, learn, events[rest:])
                        return
                out.append(self._response_head(event, learn))
            elif kind is EndOfMessage:
                if self.framing_out == "chunked":
                    out.append(end_bytes("chunked", event.trailers))
                finished = True
            elif kind is Passthrough:
                out.append(event.data)
            elif finished or self.request is None:
                broken = True  # the server said more than its response: its connection is done
            else:
                if out:
                    self.transport.write(b"".join(out))
                self._server_failed(event.reason)
                return
        if out:
            self.transport.write(b"".join(out))
        if finished:
            self._exchange_done(broken)
        elif broken:
            self._drop_up()

    def _hold(self, entries, head: ResponseHead, learn, rest):
        self.held = list(rest)
        self.up.pause(LEARNING)
        self.task = self.hub.loop.create_task(self._store(entries, head, learn))

    async def _store(self, entries, head: ResponseHead, learn):
        try:
            await self.router.store(entries)
        except Exception:  # the store handles Redis being away; anything else is a bug, not the client's
            log.exception("storing persistence entries for %s failed", self.service.name)
        if self.closed:
            return
        held, self.held = self.held, None
        self.transport.write(self._response_head(head, learn))
        if self.up is not None:
            self.up.resume(LEARNING)
        if held:
            self._server_events(held)

    def _response_head(self, head: ResponseHead, learn) -> bytes:
        request = self.request
        self.response_started = True
        self.status = head.status
        self.server_keep = head.keep_alive
        if head.framing == "passthrough":
            self.framing_out, self.keep = "passthrough", False
            data = response_head_bytes(head, "passthrough", keep_alive=False, extra=learn.add_headers)
            self._start_piping()
            return data
        framing = head.framing
        if framing == "close" or (framing == "chunked" and request.version != b"1.1"):
            framing, keep = "close", False  # an HTTP/1.0 client cannot read chunks (`response_framing`)
        else:
            keep = request.keep_alive and not self.listener.closed  # `client_keep_alive`
        self.framing_out, self.keep = framing, keep
        return response_head_bytes(head, framing, keep_alive=keep, client_version=request.version,
                                   extra=learn.add_headers)

    def _start_piping(self):
        """101 to an Upgrade, or the answer to a tunnel: raw bytes both ways from now on."""
        self.piping = True
        if self.request.upgrade and self.status == 101:
            self.raw_in = True
            for event in self.parser.upgrade_accepted():
                self._to_server(event.data)

    def _exchange_done(self, broken: bool):
        request, up = self.request, self.up
        if not self.request_sent:
            # The server answered before the request ended (413, 401 ...): the rest of it cannot follow.
            self.keep, broken = False, True
        self.request = None
        self.ready = False
        self.replay = None
        if up is not None:
            if broken or not self.server_keep or up.parser.state != "idle" or up.closed or up.transport.is_closing():
                self._drop_up()
            else:
                up.reused = True
                up.idle_since = self.hub.loop.time()
        if not self.keep or self.done:
            self._end()
            return
        events = self.parser.upgrade_refused() if request.upgrade else self.parser.next_request()
        self._resume(HOLDING)
        if events:
            self._client_events(events)
        if not self.done and not self.raw_in:
            self._watch_head()

    def _server_failed(self, reason: str):
        server = self.up.server if self.up is not None else self.server
        log.warning("server %s answered %s on %s with bad framing: %s",
                    server.id if server else "?", self.peer[0], self.service.name, reason)
        self._drop_up()
        if not self.response_started:
            self.transport.write(error_response(502, "the server's answer could not be read"))
        self._end()

    # --- back-pressure and the end -----------------------------------------------------------
    def _pause(self, reason: int):
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int):
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def pause_writing(self):
        self.client_full = True
        if self.up is not None:
            self.up.pause(CLIENT_FULL)

    def resume_writing(self):
        self.client_full = False
        if self.up is not None:
            self.up.resume(CLIENT_FULL)

    def _drop_up(self):
        up, self.up = self.up, None
        self.ready = False
        if up is not None:
            up.close()

    def _end(self):
        """Close after what was written has gone out; nothing more is read or forwarded."""
        self.done = True
        self.pending = []
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport.close()

    def connection_lost(self, exc):
        if self.closed:
            return
        self.closed = self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None and not self.task.done():
            self.task.cancel()
        up, self.up = self.up, None
        if up is not None:
            if self.request is None and not self.piping:
                up.pool.give(up, self.hub.loop.time())
            else:
                up.close()
        self.hub.session_ended(self)

    def listener_closed(self):
        """The VIP stops (shutdown, or removed from the config): keep-alive ends with the current response."""
        if not (self.done or self.raw_in or self.request is not None or self.parser.buffered):
            self._end()

    def abort(self):
        """Idle timeout or shutdown deadline: cut both sides now."""
        self._drop_up()
        self.transport.abort()
