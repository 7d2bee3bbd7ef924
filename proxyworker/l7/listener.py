"""The layer-7 listener: TLS termination for one VIP, its routing and its server connections.

Registered with `server.register_listener("l7", "tcp", L7Listener)` by the
worker. Built from a `dispatch.Service` whose `certificates` are the snapshot
certificates this VIP presents (`Tls.certificates`, first = default, SNI picks
by name). Private keys are decrypted with VIEWLB_CERT_KEY from the worker's
environment; the cookie-insert secret derives from the same key, so every
worker and appliance that shares it reads every other's insert cookie.

A new config version (`update`) swaps certificates, the backend TLS context and
the routing for new connections and for the next request of established ones;
the listening socket and every connection stay open. The context given to the
event loop never changes: its SNI callback hands each handshake to the
current certificates, whether or not the client sends a name.

VIEWLB_L7_HEAD_TIMEOUT (seconds, default 10) bounds the TLS handshake and the
arrival of each request head (slowloris).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket

from ..config import Tls
from ..server import BACKLOG, listening_socket
from ..tlsconf import CertificateError, backend_context, cert_key_from_env, sni_selector
from .connection import L7Connection
from .cookies import InsertCookie, L7Persistence, insert_secret
from .deadline import HEAD_TIMEOUT
from .routing import Router
from .upstream import ServerConnection, ServerPool

log = logging.getLogger("proxyworker.l7")

HEAD_TIMEOUT_ENV = "VIEWLB_L7_HEAD_TIMEOUT"


class ListenerError(OSError):
    """A layer-7 VIP that cannot open (no certificate key, unreadable certificate): said plainly."""


def head_timeout(environ=None) -> float:
    value = (environ if environ is not None else os.environ).get(HEAD_TIMEOUT_ENV, "")
    try:
        seconds = float(value) if value else HEAD_TIMEOUT
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        log.error("%s=%r is not a positive number of seconds; using %.0f", HEAD_TIMEOUT_ENV, value, HEAD_TIMEOUT)
        return HEAD_TIMEOUT
    return seconds


class L7Listener:
    kind = socket.SOCK_STREAM

    def __init__(self, hub, service):
        self.hub, self.service = hub, service
        self.key = service.vs.listen_key
        self.server = None
        self.closed = False
        self.head_timeout = head_timeout()
        self.front = None  # the context the event loop holds; its SNI callback picks the certificate
        self.router: Router | None = None
        self.backend = None  # ssl context towards the servers, None for plain HTTP
        self.pool = ServerPool()
        self._certificates = None  # what the current contexts were built from
        self._backend_tls = None

    async def open(self):
        try:
            self._configure(self.service)
        except CertificateError as exc:
            raise ListenerError(str(exc)) from None
        sock = listening_socket(self.key[0], self.service.vs.port, self.kind)
        try:
            self.server = await self.hub.loop.create_server(
                lambda: L7Connection(self), sock=sock, backlog=BACKLOG, ssl=self.front,
                ssl_handshake_timeout=self.head_timeout)
        except BaseException:
            sock.close()
            raise

    def update(self, service):
        """A new config version: new requests follow it; nothing established is cut."""
        try:
            self._configure(service)
        except CertificateError as exc:
            log.error("virtual service %s keeps its previous TLS settings and routing: %s", service.name, exc)

    def close(self):
        """Stops accepting. Connections idle between requests close now, busy ones after their
        response (HAProxy's soft stop); a tunnel or WebSocket goes on until it ends."""
        self.closed = True
        if self.server is not None:
            self.server.close()
        self.pool.close()
        for session in list(self.hub.live):
            if getattr(session, "listener", None) is self:
                session.listener_closed()

    def _configure(self, service):
        """Everything that can fail is built before anything is replaced."""
        vs = service.vs
        tls = vs.tls or Tls()
        certificates = (tls.certificates, service.certificates)
        cert_key = cert_key_from_env()
        selector = None
        if certificates != self._certificates:
            selector = sni_selector(tls, service.certificates, cert_key)
        backend_tls = (tls.backend_tls, tls.backend_verify, tls.backend_ca)
        backend = backend_context(tls) if backend_tls != self._backend_tls else self.backend
        method = vs.persistence.method
        insert = InsertCookie(insert_secret(cert_key)) if method == "cookie_insert" else None
        router = Router(self.hub.dispatcher, service, L7Persistence(vs.persistence, vs.group, insert))
        if selector is not None:
            if self.front is None:
                self.front = selector.default
            self.front.sni_callback = selector
            self._certificates = certificates
        if backend_tls != self._backend_tls:
            if self._backend_tls is not None:
                self.pool.close()  # pooled connections were made with the old settings
                self.pool = ServerPool()
            self.backend, self._backend_tls = backend, backend_tls
        self.router, self.service = router, service

    async def connect(self, server) -> ServerConnection:
        """A new connection to `server` (TCP, then TLS unless plain HTTP), within the connect timeout."""
        conn = ServerConnection(server, self.pool)
        timeout = self.service.vs.connect_timeout
        async with asyncio.timeout(timeout):
            if self.backend is None:
                await self.hub.loop.create_connection(lambda: conn, server.address, server.port)
            else:
                await self.hub.loop.create_connection(lambda: conn, server.address, server.port, ssl=self.backend,
                                                      ssl_handshake_timeout=timeout)
        return conn
