"""Connections to real servers for layer 7, and the pool of idle keep-alive ones.

A `ServerConnection` carries one request at a time for the client connection
that adopted it (`client`), with its own `ResponseParser`. When the exchange is
over and both sides allow keep-alive it stays with that client for its next
request (usually to the same server), and returns to its listener's
`ServerPool` when the client goes elsewhere or leaves, so that the next client
(Horizon's phase 1 opens several short connections) skips the TCP and TLS
handshakes towards the server.

Reuse is only for connections idle less than `REUSE_IDLE` seconds: a server
closes idle connections on its own keep-alive timeout, and a request sent at
the moment it does would be lost. Shorter than every common server timeout
(Apache 5 s, Tomcat 20 s), so that race needs a server tuned below it; an
idempotent request without a body that meets it anyway is sent again once
(see `connection.py`).
"""
from __future__ import annotations

import asyncio

from ..config import RealServer
from ..server import HIGH_WATER, LOW_WATER
from .http1 import ResponseParser

REUSE_IDLE = 4.0
MAX_IDLE_PER_SERVER = 64

# why a server connection is not read (bit flags)
CLIENT_FULL = 1  # the client's write buffer is over the high-water mark
LEARNING = 2  # a learned cookie is being written to Redis before the response goes on


class ServerConnection(asyncio.Protocol):
    __slots__ = ("server", "key", "pool", "transport", "parser", "client", "idle_since", "reused",
                 "received", "closed", "paused")

    def __init__(self, server: RealServer, pool: ServerPool):
        self.server = server
        self.key = (server.address, server.port)
        self.pool = pool
        self.transport = None
        self.parser = ResponseParser()
        self.client = None  # the L7Connection this connection works for; None while pooled
        self.idle_since = 0.0
        self.reused = False  # carried an earlier request (so it may have been closed under us)
        self.received = 0  # bytes of the current response
        self.closed = False
        self.paused = 0

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, data):
        client = self.client
        if client is not None:
            self.received += len(data)
            client.server_data(self, data)
        else:  # a pooled connection must not talk: its words belong to no request
            self.close()

    def eof_received(self):
        client = self.client
        if client is not None:
            client.server_eof(self)
        return None  # close our side too

    def connection_lost(self, exc):
        self.closed = True
        client = self.client
        if client is not None:
            client.server_lost(self)
        else:
            self.pool.discard(self)

    # -- back-pressure: reasons not to read this server --
    def pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def pause_writing(self):
        if self.client is not None:
            self.client.server_full(True)

    def resume_writing(self):
        if self.client is not None:
            self.client.server_full(False)

    # -- life cycle --
    @property
    def idle(self) -> bool:
        """Between requests with nothing owed: it may carry another request."""
        return not self.closed and self.parser.idle and not self.transport.is_closing()

    def fresh(self, now: float) -> bool:
        return (now - self.idle_since < REUSE_IDLE and not self.closed and self.parser.state == "idle"
                and not self.transport.is_closing())

    def adopt(self, client) -> None:
        self.client = client
        self.received = 0

    def close(self) -> None:
        """Ends it for good (a half-sent request or a broken response: it must never carry another)."""
        self.client = None
        if not self.closed:
            self.closed = True
            self.transport.abort()
            self.pool.discard(self)


class ServerPool:
    """Idle keep-alive connections of one listener, per server (address, port), newest last."""

    def __init__(self):
        self.idle: dict[tuple[str, int], list[ServerConnection]] = {}
        self.open = True

    def take(self, key, now: float) -> ServerConnection | None:
        conns = self.idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.fresh(now):
                conn.reused = True
                return conn
            conn.close()
        return None

    def give(self, conn: ServerConnection, now: float) -> None:
        """A connection its client no longer needs: kept if it can carry another request."""
        conn.client = None
        if conn.paused:
            conn.resume(conn.paused)  # read it again, so a server that closes it is noticed
        if not self.open or not conn.idle:
            conn.close()
            return
        conn.idle_since = now
        conns = self.idle.setdefault(conn.key, [])
        while conns and (len(conns) >= MAX_IDLE_PER_SERVER or now - conns[0].idle_since >= REUSE_IDLE):
            conns.pop(0).close()
        conns.append(conn)

    def discard(self, conn: ServerConnection) -> None:
        conns = self.idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)

    def close(self) -> None:
        self.open = False
        for conns in list(self.idle.values()):
            for conn in list(conns):
                conn.close()
        self.idle.clear()

    def __len__(self):
        return sum(len(c) for c in self.idle.values())
