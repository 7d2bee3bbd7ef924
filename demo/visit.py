"""One user's visit to the farm: phase 1, phase 2, a stay, and leaving.

Every step notes which server answered (`X-Sim-Server`, the tunnel and
bypass greetings), so the visit can tell whether the balancer kept the user
on one server: phase-1 requests on several connections, the tunnel on the
same name, and (with port following) the bypass ports.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from demo import broker
from demo.httpclient import HttpConnection
from demo.httpserve import close_writer


@dataclass(frozen=True)
class User:
    name: str
    source: str  # the loopback address the user's connections come from
    shared: bool = False  # behind the one shared (NAT) address


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    bypass_host: str
    tcp_ports: tuple[int, ...] = ()
    udp_ports: tuple[int, ...] = ()
    server_name: str | None = None
    port_following: bool = True  # bypass connections must reach the phase-1 server
    timeout: float = 10.0
    ping: float = 1.0  # seconds between keep-alive lines during the stay


class VisitFailed(Exception):
    pass


@dataclass
class Visit:
    user: User
    mode: str  # tunnel | bypass
    stay: float
    phase1: list[str] = field(default_factory=list)  # server per answer
    phase2: list[str] = field(default_factory=list)  # server per tunnel / bypass greeting
    error: str = ""
    interrupted: bool = False
    bytes_echoed: int = 0

    @property
    def server(self) -> str:
        return self.phase1[0] if self.phase1 else ""

    @property
    def persistence_held(self) -> bool:
        return len(set(self.phase1)) <= 1 and all(s == self.server for s in self.phase2)

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.phase1) and bool(self.phase2)

    def summary(self) -> dict:
        return {"user": self.user.name, "source": self.user.source, "mode": self.mode, "ok": self.ok,
                "server": self.server, "phase1": self.phase1, "phase2": self.phase2,
                "persistence_held": self.persistence_held, "stay": round(self.stay, 2), "error": self.error}

    def line(self) -> str:
        state = "ok" if self.ok else "interrupted" if self.interrupted else f"FAILED: {self.error}"
        p1 = ",".join(sorted(set(self.phase1))) or "-"
        p2 = ",".join(sorted(set(self.phase2))) or "-"
        held = "held" if self.persistence_held else "BROKEN"
        return f"{self.user.name:<10} {self.user.source:<13} phase1={p1} {self.mode}={p2} persistence {held} stay={self.stay:.1f}s {state}"


async def visit(user: User, target: Target, mode: str, stay: float) -> Visit:
    result = Visit(user, mode, stay)
    try:
        cookie = await phase1(user, target, result)
        if mode == "tunnel":
            await tunnel(user, target, cookie, result)
        else:
            await bypass(user, target, result)
        await leave(user, target, cookie, result)
    except VisitFailed as exc:
        result.error = str(exc)
    except (OSError, TimeoutError, EOFError) as exc:  # refused, reset, TLS failure, silence
        result.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except asyncio.CancelledError:  # the generator is stopping: report the visit rather than lose it
        result.error = "interrupted"
        result.interrupted = True
    return result


async def phase1(user: User, target: Target, result: Visit) -> str:
    """Log in over one connection, then ask for the desktop over a second one, as clients do."""
    conn = await _connect(user, target)
    try:
        answer = await _broker(conn, broker.get_configuration(), None, result)
        cookie = broker.cookie_value([answer.header("set-cookie")])
        if not cookie:
            raise VisitFailed(f"no JSESSIONID from {result.phase1[-1]}")
        await _broker(conn, broker.submit_authentication(user.name, "secret"), cookie, result)
    finally:
        await conn.close()
    conn = await _connect(user, target)
    try:
        await _broker(conn, broker.simple("get-desktops"), cookie, result)
        await _broker(conn, broker.get_desktop_connection(), cookie, result)
        await _broker(conn, broker.simple("get-tunnel-connection"), cookie, result)
    finally:
        await conn.close()
    if not result.persistence_held:
        raise VisitFailed(f"phase 1 answered by several servers: {sorted(set(result.phase1))}")
    return cookie


async def tunnel(user: User, target: Target, cookie: str, result: Visit):
    conn = await _connect(user, target)
    try:
        response, leftover = await conn.upgrade("POST", "/ice/tunnel", "ice-tunnel", [("Cookie", f"JSESSIONID={cookie}")])
        if response.status != 101:
            server = response.header("x-sim-server", "?")
            raise VisitFailed(f"tunnel refused by {server} with {response.status}")
        stream = LineStream(conn.reader, conn.writer, leftover, target.timeout)
        greeting = (await stream.line()).split()
        if len(greeting) < 2 or greeting[0] != "TUNNEL":
            raise VisitFailed(f"unexpected tunnel greeting {' '.join(greeting)!r}")
        result.phase2.append(greeting[1])
        _check_following(result, "tunnel", greeting[1])
        await _stay([stream], target, result)
    finally:
        await conn.close()


async def bypass(user: User, target: Target, result: Visit):
    streams = []
    try:
        for port in target.tcp_ports:
            async with asyncio.timeout(target.timeout):
                reader, writer = await asyncio.open_connection(target.bypass_host, port, local_addr=(user.source, 0))
            stream = LineStream(reader, writer, b"", target.timeout)
            streams.append(stream)
            server = (await stream.line()).split(" ")[0]
            result.phase2.append(server)
            if target.port_following:
                _check_following(result, f"port {port}", server)
        for port in target.udp_ports:
            server = await udp_probe(user.source, target.bypass_host, port, target.timeout)
            result.phase2.append(server)
            if target.port_following:
                _check_following(result, f"udp port {port}", server)
        await _stay(streams, target, result)
    finally:
        for stream in streams:
            await close_writer(stream.writer)


async def leave(user: User, target: Target, cookie: str, result: Visit):
    conn = await _connect(user, target)
    try:
        await _broker(conn, broker.simple("do-logout"), cookie, result)
    finally:
        await conn.close()


# --- helpers ------------------------------------------------------------------


async def _connect(user: User, target: Target) -> HttpConnection:
    return await HttpConnection.open(target.host, target.port, source=user.source,
                                     server_name=target.server_name, timeout=target.timeout)


async def _broker(conn: HttpConnection, body: bytes, cookie: str | None, result: Visit):
    headers = [("Content-Type", "text/xml"), ("Connection", "keep-alive")]
    if cookie:
        headers.append(("Cookie", f"JSESSIONID={cookie}"))
    answer = await conn.request("POST", "/broker/xml", headers, body)
    server = answer.header("x-sim-server", "?")
    result.phase1.append(server)
    if answer.status != 200:
        raise VisitFailed(f"/broker/xml answered {answer.status} by {server}")
    errors = [code for _tag, outcome, code in broker.results(answer.body) if outcome != "ok"]
    if errors:  # NOT_AUTHENTICATED here means the request reached a server that never saw the cookie
        raise VisitFailed(f"/broker/xml error {','.join(errors)} from {server}")
    return answer


def _check_following(result: Visit, what: str, server: str):
    if server != result.server:
        raise VisitFailed(f"{what} reached {server}, phase 1 was on {result.server}")


async def _stay(streams, target: Target, result: Visit):
    """Stay connected, sending a line now and then and expecting it back."""
    loop = asyncio.get_running_loop()
    end = loop.time() + result.stay
    n = 0
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(target.ping, left))
        n += 1
        for stream in streams:
            payload = f"{result.user.name} keep-alive {n}"
            stream.writer.write(payload.encode() + b"\n")
            echoed = await stream.line()
            if echoed != payload:
                raise VisitFailed(f"echo mismatch: sent {payload!r}, got {echoed!r}")
            result.bytes_echoed += len(payload) + 1


class LineStream:
    """Lines from a raw stream, skipping the tunnel's HEARTBEAT lines."""

    def __init__(self, reader, writer, leftover: bytes, timeout: float):
        self.reader, self.writer = reader, writer
        self.buffer = bytearray(leftover)
        self.timeout = timeout

    async def line(self) -> str:
        while True:
            while b"\n" not in self.buffer:
                async with asyncio.timeout(self.timeout):
                    data = await self.reader.read(65536)
                if not data:
                    raise EOFError("the server closed the stream")
                self.buffer += data
            raw, _, rest = bytes(self.buffer).partition(b"\n")
            self.buffer = bytearray(rest)
            text = raw.decode("utf-8", "replace")
            if not text.startswith("HEARTBEAT "):
                return text


class _UdpReply(asyncio.DatagramProtocol):
    def __init__(self):
        self.reply = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc):
        if not self.reply.done():
            self.reply.set_exception(exc)


async def udp_probe(source: str, host: str, port: int, timeout: float, attempts: int = 3) -> str:
    """Send a datagram (again if lost); the simulator answers `<server> <port> <payload>`."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_UdpReply, local_addr=(source, 0), remote_addr=(host, port))
    payload = f"probe {random.getrandbits(32):08x}".encode()
    try:
        for attempt in range(attempts):
            transport.sendto(payload)
            try:
                async with asyncio.timeout(timeout / attempts):
                    reply = await asyncio.shield(protocol.reply)
                break
            except TimeoutError:
                if attempt == attempts - 1:
                    raise
    finally:
        transport.close()
    if not reply.endswith(payload):
        raise VisitFailed(f"udp port {port} answered {reply[:60]!r}")
    return reply.split(b" ", 1)[0].decode()
