"""One simulated Horizon Connection Server / Unified Access Gateway.

    python -m demo.horizon_sim --name uag1 --address 127.0.0.2 --https-port 9443 \\
        --tcp-ports 3389,32111,9427,8443,4172 --udp-ports 4172,8443 [--control-port P]

What a load balancer sees of it (HORIZON.md):

HTTPS (TLS 1.2+, self-signed, HTTP/1.1 keep-alive); every answer carries
`X-Sim-Server: <name>`.
  GET|HEAD /favicon.ico  200 with an icon; 503 while quiesced (drain, not dead)
  POST /broker/xml       phase 1 (demo.broker): the first answer sets JSESSIONID,
                         an unknown JSESSIONID gets NOT_AUTHENTICATED
  POST /ice/tunnel       phase 2 tunnel. Needs `Cookie: JSESSIONID=<logged-in
                         session of THIS server>` and `Connection: Upgrade`,
                         `Upgrade: <any token, e.g. ice-tunnel>`; answers
                         101 Switching Protocols, then the raw stream starts:
                         the server sends `TUNNEL <name> <user>\\n`, echoes
                         everything and writes `HEARTBEAT <name> <n>\\n` every
                         --heartbeat seconds (only between lines). An unknown
                         cookie gets 403, like a UAG that did not
                         authenticate the client.
  GET /ws                WebSocket (RFC 6455 handshake), echoes frames.
Bypass TCP ports greet with `<name> <port>\\n` then echo; UDP ports answer
`<name> <port> <payload>`.

Control (HTTP on 127.0.0.1:--control-port, 0 = any free port): GET /stats,
POST /quiesce, /resume, /stop (close every listener and drop every
connection, as if the server died), /start. SIGUSR1 toggles quiesce. On
start the process prints one JSON line `{"event": "ready", ...}` with the
ports it listens on.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import struct
import sys
from collections import Counter
from dataclasses import dataclass, field
from functools import partial

from demo import broker as brokerlib
from demo import streams, tls, websocket
from demo.httpserve import Reply, Request, Switch, close_writer, serve_http

log = logging.getLogger("demo.horizon_sim")
DEFAULT_CERT_DIR = os.path.join(os.environ.get("VIEWLB_DEMO_DIR", "var/demo"), "certs")


@dataclass
class SimOptions:
    name: str
    address: str = "127.0.0.1"
    https_port: int = 9443
    tcp_ports: list[int] = field(default_factory=list)
    udp_ports: list[int] = field(default_factory=list)
    control_port: int = 0
    cert_dir: str = DEFAULT_CERT_DIR
    heartbeat: float = 30.0
    session_timeout: float = brokerlib.UAG_SESSION_TIMEOUT
    idle_timeout: float = 3600.0


class HorizonSim:
    def __init__(self, options: SimOptions):
        self.options = options
        self.name = options.name
        self.broker = brokerlib.Broker(options.name, options.address, options.session_timeout)
        self.quiesced = False
        self.serving = False
        self.ports = {"https": options.https_port, "tcp": list(options.tcp_ports), "udp": list(options.udp_ports)}
        self.totals = Counter()
        self._listeners: list[asyncio.Server] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._open: dict[str, set] = {}
        self._ssl = None

    # -- lifecycle --
    async def start(self):
        if self.serving:
            return
        if self._ssl is None:
            cert, key = tls.ensure_certificate(self.options.cert_dir, self.name, [self.options.address])
            self._ssl = tls.server_context(cert, key)
        try:
            await self._bind()
        except OSError:
            await self.stop()
            raise
        self.serving = True
        log.info("%s serving on %s", self.name, self.options.address)

    async def _bind(self):
        address = self.options.address
        https = await asyncio.start_server(
            self._serve_https, address, self.ports["https"], ssl=self._ssl, ssl_handshake_timeout=10, reuse_address=True
        )
        self._listeners.append(https)
        self.ports["https"] = https.sockets[0].getsockname()[1]
        for i, port in enumerate(self.ports["tcp"]):
            server = await asyncio.start_server(self._serve_tcp, address, port, reuse_address=True)
            self._listeners.append(server)
            self.ports["tcp"][i] = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        for i, port in enumerate(self.ports["udp"]):
            factory = partial(streams.BypassUdp, self.name, self._count_datagram)
            transport, _protocol = await loop.create_datagram_endpoint(factory, local_addr=(address, port))
            self._udp.append(transport)
            self.ports["udp"][i] = transport.get_extra_info("sockname")[1]

    async def stop(self):
        """Close every listener and drop every connection: the server is gone."""
        for server in self._listeners:
            server.close()
        for transport in self._udp:
            transport.close()
        for writers in self._open.values():
            for writer in list(writers):
                writer.transport.abort()
        for server in self._listeners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self._listeners, self._udp = [], []
        if self.serving:
            log.info("%s stopped", self.name)
        self.serving = False

    def set_quiesced(self, quiesced: bool):
        if quiesced != self.quiesced:
            log.info("%s %s", self.name, "quiesced" if quiesced else "resumed")
        self.quiesced = quiesced

    def describe(self) -> dict:
        return {"name": self.name, "address": self.options.address, "https_port": self.ports["https"],
                "tcp_ports": self.ports["tcp"], "udp_ports": self.ports["udp"], "pid": os.getpid()}

    def stats(self) -> dict:
        self.broker.expire()
        sessions = self.broker.sessions.values()
        return {
            "name": self.name,
            "serving": self.serving,
            "quiesced": self.quiesced,
            "sessions": len(self.broker.sessions),
            "users": sorted({s.user for s in sessions if s.user}),
            "connections": {kind: len(writers) for kind, writers in sorted(self._open.items())},
            "totals": dict(self.totals, logins=self.broker.logins),
        }

    # -- connection bookkeeping --
    @contextlib.contextmanager
    def _track(self, kind: str, writer):
        self.totals[kind] += 1
        writers = self._open.setdefault(kind, set())
        writers.add(writer)
        try:
            yield
        finally:
            writers.discard(writer)

    def _count_datagram(self):
        self.totals["udp_datagrams"] += 1

    # -- HTTPS --
    async def _serve_https(self, reader, writer):
        with self._track("https", writer):
            await serve_http(reader, writer, self.route, self.options.idle_timeout, [("X-Sim-Server", self.name)])

    async def route(self, request: Request) -> Reply | Switch:
        self.totals["requests"] += 1
        handler = {
            "/favicon.ico": self._favicon,
            "/broker/xml": self._broker_xml,
            "/ice/tunnel": self._tunnel,
            "/ws": self._websocket,
            "/": self._portal,
        }.get(request.path)
        if handler is None:
            return Reply(404, b"not found\n")
        return handler(request)

    def _favicon(self, request):
        if request.method not in ("GET", "HEAD"):
            return Reply(405, b"method not allowed\n", [("Allow", "GET, HEAD")])
        if self.quiesced:
            return Reply(503, b"quiesced\n")
        return Reply(200, FAVICON, content_type="image/x-icon")

    def _broker_xml(self, request):
        if request.method != "POST":
            return Reply(405, b"method not allowed\n", [("Allow", "POST")])
        session_id = brokerlib.cookie_value(request.header_values("cookie"))
        reply = self.broker.handle(request.body, session_id)
        headers = [("Set-Cookie", reply.set_cookie)] if reply.set_cookie else []
        if reply.session is not None and reply.session.user:
            headers.append(("X-Sim-User", reply.session.user))
        return Reply(reply.status, reply.body, headers, content_type="text/xml;charset=UTF-8")

    def _tunnel(self, request):
        if request.method != "POST":
            return Reply(405, b"method not allowed\n", [("Allow", "POST")])
        session = self.broker.lookup(brokerlib.cookie_value(request.header_values("cookie")))
        if session is None or not session.authenticated:
            return Reply(403, f"{self.name}: no authenticated session for this JSESSIONID\n".encode())
        token = request.header("upgrade") or "ice-tunnel"
        return Switch([("Upgrade", token), ("Connection", "Upgrade")], partial(self._run_tunnel, session))

    async def _run_tunnel(self, session, reader, writer, first):
        greeting = f"TUNNEL {self.name} {session.user}\n".encode()
        session.tunnels += 1
        try:
            with self._track("tunnel", writer):
                opts = self.options
                await streams.tunnel(reader, writer, first, greeting, opts.heartbeat, self.name, opts.idle_timeout)
        finally:
            session.tunnels -= 1

    def _websocket(self, request):
        key = request.header("sec-websocket-key")
        if request.method != "GET" or "websocket" not in request.header_tokens("upgrade"):
            return Reply(400, b"expected a WebSocket upgrade\n")
        if not websocket.valid_key(key) or request.header("sec-websocket-version") != "13":
            return Reply(400, b"bad Sec-WebSocket-Key or version\n", [("Sec-WebSocket-Version", "13")])
        headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", websocket.accept_key(key))]
        return Switch(headers, self._run_websocket)

    async def _run_websocket(self, reader, writer, first):
        with self._track("websocket", writer):
            await streams.websocket_echo(reader, writer, first, self.options.idle_timeout)

    def _portal(self, request):
        return Reply(200, f"<!doctype html><title>{self.name}</title><p>Simulated Horizon server {self.name}\n".encode(),
                     content_type="text/html; charset=utf-8")

    # -- bypass --
    async def _serve_tcp(self, reader, writer):
        port = writer.get_extra_info("sockname")[1]
        with self._track(f"tcp_{port}", writer):
            try:
                await streams.bypass_tcp(reader, writer, self.name, port, self.options.idle_timeout)
            except (OSError, TimeoutError):
                pass
            finally:
                await close_writer(writer)


def _favicon() -> bytes:
    """A valid 1x1 ICO (one 32-bit BMP pixel): small, but what a browser would accept."""
    bmp = struct.pack("<IiiHHIIiiII", 40, 1, 2, 1, 32, 0, 8, 0, 0, 0, 0) + b"\x3c\x8c\xd6\xff" + b"\x00" * 4
    entry = struct.pack("<BBBBHHII", 1, 1, 0, 0, 1, 32, len(bmp), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + bmp


FAVICON = _favicon()


# --- control port ------------------------------------------------------------


class Control:
    def __init__(self, sim: HorizonSim):
        self.sim = sim

    async def route(self, request: Request) -> Reply:
        actions = {"/quiesce": self._quiesce, "/resume": self._resume, "/stop": self.sim.stop, "/start": self.sim.start}
        if request.path == "/stats" and request.method in ("GET", "HEAD"):
            return self._json(200)
        if request.path in actions and request.method == "POST":
            try:
                await actions[request.path]()
            except OSError as exc:  # e.g. /start while another process took the port
                return self._json(409, error=str(exc))
            return self._json(200)
        if request.path in actions or request.path == "/stats":
            return Reply(405, b"method not allowed\n")
        return Reply(404, b"GET /stats; POST /quiesce /resume /stop /start\n")

    async def _quiesce(self):
        self.sim.set_quiesced(True)

    async def _resume(self):
        self.sim.set_quiesced(False)

    def _json(self, status, **extra):
        body = json.dumps(dict(self.sim.stats(), **extra)).encode() + b"\n"
        return Reply(status, body, content_type="application/json")

    async def serve(self, reader, writer):
        await serve_http(reader, writer, self.route, idle_timeout=30)


# --- command line ------------------------------------------------------------


def port_list(text: str) -> list[int]:
    """'3389,32111' -> [3389, 32111]; '' -> []."""
    ports = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if not part.isdigit() or not 0 <= int(part) <= 65535:
            raise argparse.ArgumentTypeError(f"{part!r} is not a port number (0-65535)")
        ports.append(int(part))
    fixed = [p for p in ports if p]  # 0 = any free port, may repeat
    if len(set(fixed)) != len(fixed):
        raise argparse.ArgumentTypeError(f"a port appears twice in {text!r}")
    return ports


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.horizon_sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="server name, shown in every answer (X-Sim-Server, greetings)")
    p.add_argument("--address", default="127.0.0.1", help="listen address (use 127.0.0.2, .3 ... for several servers)")
    p.add_argument("--https-port", type=int, default=9443)
    p.add_argument("--tcp-ports", type=port_list, default=[], help="bypass TCP ports, e.g. 3389,32111,9427,8443,4172")
    p.add_argument("--udp-ports", type=port_list, default=[], help="bypass UDP ports, e.g. 4172,8443")
    p.add_argument("--control-port", type=int, default=0, help="control HTTP port on 127.0.0.1 (0 = any free port)")
    p.add_argument("--cert-dir", default=DEFAULT_CERT_DIR)
    p.add_argument("--heartbeat", type=float, default=30.0, help="seconds between tunnel heartbeats (0 = none)")
    p.add_argument("--session-timeout", type=float, default=brokerlib.UAG_SESSION_TIMEOUT, help="idle seconds before a JSESSIONID expires")
    p.add_argument("--idle-timeout", type=float, default=3600.0, help="idle seconds before a connection is closed")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


async def run(options: SimOptions):
    sim = HorizonSim(options)
    await sim.start()
    control = await asyncio.start_server(Control(sim).serve, "127.0.0.1", options.control_port, reuse_address=True)
    description = dict(sim.describe(), control_port=control.sockets[0].getsockname()[1])
    print(json.dumps(dict(event="ready", **description)), flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: sim.set_quiesced(not sim.quiesced))
    await done.wait()
    control.close()
    await sim.stop()


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    options = SimOptions(**{k: v for k, v in vars(args).items() if k in SimOptions.__dataclass_fields__})
    try:
        asyncio.run(run(options))
    except OSError as exc:
        print(f"{options.name}: cannot listen: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
