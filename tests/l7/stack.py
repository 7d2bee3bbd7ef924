"""A real layer-7 stack for end-to-end tests: simulated Horizon servers, plain HTTP servers,
one proxy worker subprocess with real TLS, and stdlib clients that talk through it.

Certificates are made with `tlsconf.generate_self_signed`, their keys encrypted
with a test Fernet key that the worker gets as VIEWLB_CERT_KEY, exactly as
the console publishes them.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import h11

from demo import broker
from proxyworker.config import Certificate, Persistence, Pool, RealServer, Snapshot, Tls, VirtualService
from proxyworker.tlsconf import encrypt_private_key, generate_cert_key, generate_self_signed
from tests.backends import new_host
from tests.conftest import free_port, subprocess_env
from tests.proxyworker.harness import ROOT, Harness

CERT_KEY = generate_cert_key()
HEAD_TIMEOUT = 1.0  # the worker's slowloris limit in these tests (VIEWLB_L7_HEAD_TIMEOUT)
PORTAL = "view.example.com"
APPS = "apps.example.com"


def certificate(name: str, common_name: str, *names: str) -> tuple[Certificate, str]:
    """A snapshot certificate (key encrypted with CERT_KEY) and its PEM, to trust in clients."""
    cert_pem, key_pem = generate_self_signed(common_name, names)
    return Certificate(name, cert_pem, encrypt_private_key(key_pem, CERT_KEY)), cert_pem


# --- simulated Horizon servers (HTTPS) ------------------------------------------------------


def start_sims(cert_dir, count: int, heartbeat: float = 0.5) -> list[dict]:
    """`python -m demo.horizon_sim` processes, each on its own loopback host (persistence is by host)."""
    sims = []
    for i in range(count):
        cmd = [sys.executable, "-m", "demo.horizon_sim", "--name", f"uag{i + 1}", "--address", new_host(),
               "--https-port", "0", "--cert-dir", str(cert_dir), "--heartbeat", str(heartbeat)]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        if not line:
            proc.wait(5)
            raise RuntimeError(f"simulator {i + 1} did not start (exit {proc.returncode})")
        info = json.loads(line)
        info["proc"] = proc
        sims.append(info)
    return sims


def stop_sims(sims):
    for sim in sims:
        proc = sim["proc"]
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def sim_pool(name: str, sims) -> Pool:
    return Pool(name, tuple(RealServer(f"{name}/{s['name']}", s["name"], s["address"], s["https_port"]) for s in sims))


# --- plain HTTP servers (h11, in a thread) ----------------------------------------------------


class _H11Server(asyncio.Protocol):
    """Answers every request with JSON describing what it received; special targets misbehave:

    - `/bad-framing`: a response with both Content-Length and Transfer-Encoding;
    - `/slow/<ms>`: the answer comes after that many milliseconds;
    - `/big/<MiB>`: a body that large, written only while the proxy reads (flow control), so
      `backend.streamed` shows how far a client that does not read let it get;
    - `/then-drop`: answered, but the *next* request on this connection is read and the
      connection closed without an answer (a server closing an idle connection just as
      a request arrives); such requests are listed in `backend.dropped`.
    """

    def __init__(self, backend: PlainBackend):
        self.backend = backend
        self.conn = h11.Connection(h11.SERVER)
        self.drop_next = self.waiting = self.paused = False
        self.remaining = 0

    def connection_made(self, transport):
        self.transport = transport
        self.backend.connections += 1

    def data_received(self, data):
        self.conn.receive_data(data)
        self._process()

    def _process(self):
        while not self.waiting:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.backend.errors.append(str(exc))
                self.transport.close()
                return
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, h11.Request):
                self.request, self.body = event, b""
                if self.conn.they_are_waiting_for_100_continue:
                    self.transport.write(self.conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                target = self.request.target
                if self.drop_next:
                    self.backend.dropped.append(target.decode())
                    self.transport.close()
                    return
                self.drop_next = target == b"/then-drop"
                if target.startswith(b"/big/"):
                    self.waiting = True
                    self._stream(int(target.rsplit(b"/", 1)[1]) << 20)
                    return
                if target.startswith(b"/slow/"):
                    self.waiting = True
                    asyncio.get_running_loop().call_later(int(target.rsplit(b"/", 1)[1]) / 1000, self._later)
                    return
                if not self._answer():
                    self.transport.close()
                    return
                if not self._next_cycle():
                    return

    def _stream(self, size: int):
        self.transport.write(self.conn.send(h11.Response(status_code=200, headers=[("Content-Length", str(size))])))
        self.remaining = size
        self._pump()

    def _pump(self):
        chunk = b"x" * 65536
        while self.remaining and not self.paused and not self.transport.is_closing():
            data = chunk[:self.remaining]
            self.transport.write(self.conn.send(h11.Data(data=data)))
            self.remaining -= len(data)
            self.backend.streamed += len(data)
        if not self.remaining and self.waiting:
            self.transport.write(self.conn.send(h11.EndOfMessage()))
            self.waiting = False
            if self._next_cycle():
                self._process()

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        if self.remaining:
            self._pump()

    def _later(self):
        self.waiting = False
        if self._answer() and self._next_cycle():
            self._process()

    def _next_cycle(self) -> bool:
        if self.conn.our_state is h11.MUST_CLOSE or self.transport.is_closing():
            self.transport.close()
            return False
        self.conn.start_next_cycle()
        return True

    def _answer(self) -> bool:
        """Answers the request; False when the connection must end (a misbehaving answer)."""
        request = self.request
        seen = {"method": request.method.decode(), "target": request.target.decode(), "body": self.body.decode("latin-1"),
                "headers": [[k.decode(), v.decode("latin-1")] for k, v in request.headers]}
        self.backend.requests.append(seen)
        if request.target == b"/bad-framing":  # a server that sends both Content-Length and chunked
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"0\r\n\r\n")
            return False
        if request.target.startswith(b"/cookie/"):
            value = request.target.rsplit(b"/", 1)[1]
            extra = [("Set-Cookie", b"JSESSIONID=" + value + b"; Path=/")]
        else:
            extra = []
        body = json.dumps(dict(seen, server=self.backend.name)).encode()
        length = [] if request.target == b"/unsized" else [("Content-Length", str(len(body)))]  # h11 chunks or closes
        self.transport.write(self.conn.send(h11.Response(status_code=200, headers=[
            ("Content-Type", "application/json"), ("X-Server", self.backend.name)] + length + extra)))
        if request.method != b"HEAD":
            self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        return True


@dataclass
class PlainBackend:
    name: str
    host: str = field(default_factory=new_host)
    port: int = 0
    requests: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    streamed: int = 0
    errors: list = field(default_factory=list)
    connections: int = 0

    def targets(self) -> list[str]:
        return [r["target"] for r in self.requests]


class PlainBackends:
    """HTTP/1.1 servers on one event loop in a daemon thread."""

    def __init__(self, *names: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="plain-backends", daemon=True)
        self.thread.start()
        self.backends = [self._call(self._start(PlainBackend(name))) for name in names]

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _start(self, backend):
        self.server = await self.loop.create_server(lambda: _H11Server(backend), backend.host, 0)
        backend.port = self.server.sockets[0].getsockname()[1]
        backend.listener = self.server
        return backend

    def pool(self, name: str) -> Pool:
        return Pool(name, tuple(RealServer(f"{name}/{b.name}", b.name, b.host, b.port) for b in self.backends))

    def close(self):
        for backend in self.backends:
            self.loop.call_soon_threadsafe(backend.listener.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


# --- the worker ----------------------------------------------------------------------------------


def l7_service(name: str, pool: str, certificates=("portal",), method="cookie_learn", backend_tls=True, **options):
    tls = Tls(certificates=tuple(certificates), backend_tls=backend_tls,
              backend_verify=options.pop("backend_verify", False), backend_ca=options.pop("backend_ca", ""))
    return VirtualService(name=name, address="127.0.0.1", port=free_port(), pool=pool, mode="l7",
                          persistence=Persistence(method=method, timeout=600), tls=tls, **options)


class L7Stack:
    """A harness (own Redis prefix) with one worker that has the test certificate key."""

    def __init__(self, name: str, tmp, workers: int = 1):
        self.harness = Harness(name, tmp)
        self.workers = [self.harness.start_worker(VIEWLB_CERT_KEY=CERT_KEY, VIEWLB_L7_HEAD_TIMEOUT=HEAD_TIMEOUT)
                        for _ in range(workers)]
        self.worker = self.workers[0]
        self.services: dict[str, VirtualService] = {}

    def publish(self, services, pools, certificates) -> int:
        harness = self.harness
        harness.version += 1
        snapshot = Snapshot(version=harness.version, virtual_services=tuple(services), pools=tuple(pools),
                            certificates=tuple(certificates))
        harness.publish_json(snapshot.to_json())
        for worker in self.workers:
            worker.wait_version(harness.version)
        self.services = {vs.name: vs for vs in services}
        return harness.version

    def port(self, service: str) -> int:
        return self.services[service].port

    def close(self):
        self.harness.close()


# --- clients --------------------------------------------------------------------------------------


def client_context(trust: str | None = None, **options) -> ssl.SSLContext:
    """A TLS client; trusting `trust` (PEM) verifies the proxy's certificate, else anything goes."""
    if trust:
        ctx = ssl.create_default_context(cadata=trust)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    for name, value in options.items():
        setattr(ctx, name, value)
    return ctx


INSECURE = client_context()


def https(port: int, ctx: ssl.SSLContext = INSECURE, timeout=5.0):
    """An http.client connection to the VIP (one TCP connection, keep-alive; no SNI: it is an address)."""
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)


def tls_socket(port: int, server_name: str | None = PORTAL, ctx: ssl.SSLContext = INSECURE, timeout=5.0):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_name)
    except BaseException:
        raw.close()
        raise


def request(conn, method: str, target: str, body: bytes | None = None, headers=None):
    """(status, headers dict lower-case -> list, body) of one request on `conn`."""
    conn.request(method, target, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    found = {}
    for key, value in response.getheaders():
        found.setdefault(key.lower(), []).append(value)
    return response.status, found, data


def read_head(sock, buffer: bytearray) -> tuple[int, dict, bytes]:
    """A response head from a raw socket: (status, lower-case headers, bytes after the head)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {bytes(buffer)!r}")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers.setdefault(key.strip().lower(), []).append(value.strip())
    buffer[:] = rest
    return int(lines[0].split()[1]), headers, rest


def read_line(sock, buffer: bytearray) -> str:
    """The next line of a tunnel stream, heartbeats skipped."""
    while True:
        while b"\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"stream closed after {bytes(buffer)!r}")
            buffer += chunk
        line, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        text = line.decode()
        if not text.startswith("HEARTBEAT "):
            return text


def read_until_closed(sock, limit: float = 5.0) -> bytes:
    """Everything the peer sends until it closes (a reset counts as closed)."""
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return data


class HorizonClient:
    """One Horizon client as the broker sees it: a JSESSIONID, the server that issued it."""

    def __init__(self, port: int, user: str):
        self.port, self.user = port, user
        self.cookie: str | None = None
        self.servers: list[str] = []

    def broker(self, conn, body: bytes) -> tuple[str, list]:
        headers = {"Content-Type": "text/xml"}
        if self.cookie:
            headers["Cookie"] = f"JSESSIONID={self.cookie}"
        status, found, data = request(conn, "POST", "/broker/xml", body, headers)
        assert status == 200, (status, data)
        server = found["x-sim-server"][0]
        self.servers.append(server)
        cookie = broker.cookie_value(found.get("set-cookie", []))
        if cookie:
            self.cookie = cookie
        errors = [code for _tag, outcome, code in broker.results(data) if outcome != "ok"]
        return server, errors

    def log_in(self):
        conn = https(self.port)
        try:
            _, errors = self.broker(conn, broker.get_configuration())
            assert self.cookie and not errors, errors
            _, errors = self.broker(conn, broker.submit_authentication(self.user, "secret"))
            assert not errors, errors
        finally:
            conn.close()

    def desktops(self) -> list:
        conn = https(self.port)
        try:
            return self.broker(conn, broker.simple("get-desktops"))[1]
        finally:
            conn.close()

    def tunnel(self, cookie: str | None = None):
        """Opens the tunnel with the client's cookie: (status, socket, buffer); the socket stays open."""
        sock = tls_socket(self.port)
        cookie = cookie or self.cookie
        sock.sendall((f"POST /ice/tunnel HTTP/1.1\r\nHost: {PORTAL}\r\nCookie: JSESSIONID={cookie}\r\n"
                      f"Connection: Upgrade\r\nUpgrade: ice-tunnel\r\n\r\n").encode())
        buffer = bytearray()
        status, _headers, _ = read_head(sock, buffer)
        return status, sock, buffer
