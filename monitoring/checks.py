"""Health probes: judge a real server the way a Horizon client would use it.

The HTTP framing and the verdict are plain functions (`build_request`,
`read_status`, `verdict`) so they can be tested without a socket; `probe()` is
the only coroutine that touches the network. Every failure comes back as a
`CheckResult` with a readable error text, never as an exception: the state
machine and the console need the reason, not a traceback.

VMware's rule (see shared/HORIZON.md): GET or HEAD /favicon.ico over HTTPS with
`Connection: close`, certificate not verified. 200 = up, 503 = quiesced
(drain), anything else or no answer = a failure.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import ssl
import time
from dataclasses import dataclass
from typing import Literal

import h11

from proxyworker.config import HealthCheck

Outcome = Literal["up", "drain", "fail"]
USER_AGENT = "viewlb-health/1"
MAX_HEAD = 16 * 1024  # a status line and headers; more is not a web server we understand


@dataclass(frozen=True)
class CheckResult:
    outcome: Outcome
    status: int | None = None  # HTTP status, None for TCP checks and failures before a response
    latency_ms: float | None = None  # until connect (TCP) or the response head (HTTP)
    error: str = ""

    @property
    def reachable(self) -> bool:
        return self.outcome != "fail"


class ProbeError(Exception):
    """A failed probe; the message is what the console shows."""


# --- sans-io: the request, the response head, the verdict --------------------


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_header(check: HealthCheck, address: str, port: int) -> str:
    if check.host:
        return check.host
    default_port = 443 if check.type == "https" else 80
    host = f"[{address}]" if ":" in address else address
    return host if port == default_port else f"{host}:{port}"


def server_name(check: HealthCheck) -> str | None:
    """SNI: the configured name, else the Host header when it is a name (an IP is never sent as SNI)."""
    if check.sni:
        return check.sni
    host = check.host
    if host and not host.startswith("[") and host.count(":") == 1:
        host = host.split(":")[0]  # "view.example.com:8443" -> the name part
    return host if host and not is_ip(host.strip("[]")) else None


def build_request(check: HealthCheck, address: str, port: int) -> tuple[h11.Connection, bytes]:
    """The request bytes and the h11 connection that will parse the answer."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    headers = [
        ("Host", host_header(check, address, port)),
        ("User-Agent", USER_AGENT),
        ("Accept", "*/*"),
        ("Connection", "close"),
    ]
    data = conn.send(h11.Request(method=check.method, target=check.path, headers=headers))
    data += conn.send(h11.EndOfMessage())
    return conn, data


def read_status(conn: h11.Connection, data: bytes) -> int | None:
    """Feed received bytes (b"" = the peer closed); the status once the head is complete, else None."""
    conn.receive_data(data)
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if data == b"":  # h11 calls a close in the middle of the head a protocol error
                raise ProbeError("connection closed before a response") from None
            raise ProbeError(f"not an HTTP response ({exc})") from None
        if isinstance(event, h11.Response):
            return event.status_code
        if event is h11.NEED_DATA:
            if data == b"":
                raise ProbeError("connection closed before a response")
            return None
        if isinstance(event, h11.ConnectionClosed):
            raise ProbeError("connection closed before a response")
        # h11.InformationalResponse (1xx): keep reading for the final answer


def verdict(check: HealthCheck, status: int, latency_ms: float) -> CheckResult:
    if status in check.expect_up:
        return CheckResult("up", status, latency_ms)
    if status in check.expect_drain:
        return CheckResult("drain", status, latency_ms)
    return CheckResult("fail", status, latency_ms, f"answered {status}")


# --- TLS ---------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def tls_context(verify: bool, cafile: str | None = None) -> ssl.SSLContext:
    """One context per mode per process: building one loads the CA store, too slow per check."""
    context = ssl.create_default_context(cafile=cafile)
    if not verify:
        # Horizon servers usually carry internal certificates; VMware's check does not verify.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _tls_args(check: HealthCheck, address: str, cafile: str | None) -> dict:
    if check.type != "https":
        return {}
    name = server_name(check)
    # Verifying needs a name to match: the SNI name, else the address (matched against IP SANs).
    hostname = name or (address if check.verify_certificate else None)
    return {"ssl": tls_context(check.verify_certificate, cafile), "server_hostname": hostname}


# --- I/O ---------------------------------------------------------------------


async def probe(address: str, port: int, check: HealthCheck, *, cafile: str | None = None) -> CheckResult:
    """One check of one server, bounded by `check.timeout`; never raises for network trouble."""
    progress = _Progress("connect and TLS handshake" if check.type == "https" else "connect")
    try:
        async with asyncio.timeout(check.timeout):
            return await _probe(address, port, check, cafile, progress)
    except TimeoutError:
        return CheckResult("fail", error=f"no answer within {check.timeout:g} s ({progress.phase})")
    except ProbeError as exc:
        return CheckResult("fail", error=str(exc))
    except ConnectionRefusedError:
        return CheckResult("fail", error="connection refused")
    except ssl.SSLCertVerificationError as exc:
        return CheckResult("fail", error=f"TLS: certificate not trusted ({exc.verify_message})")
    except ssl.SSLError as exc:
        return CheckResult("fail", error=f"TLS: {exc.reason or exc}")
    except ConnectionError as exc:  # reset or closed by the server; asyncio often leaves no message
        return CheckResult("fail", error=f"{progress.phase}: {exc.strerror or 'connection closed by the server'}")
    except OSError as exc:
        return CheckResult("fail", error=f"{progress.phase}: {exc.strerror or exc or type(exc).__name__}")


class _Progress:
    """How far a probe got, so that a timeout can say where the server stopped answering."""

    def __init__(self, phase: str):
        self.phase = phase
        self.started = time.perf_counter()

    def ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 2)


async def _probe(address, port, check, cafile, progress: _Progress) -> CheckResult:
    reader, writer = await asyncio.open_connection(address, port, **_tls_args(check, address, cafile))
    try:
        if check.type == "tcp":
            return CheckResult("up", latency_ms=progress.ms())
        progress.phase = "waiting for the response"
        conn, request = build_request(check, address, port)
        writer.write(request)
        await writer.drain()
        status = None
        while status is None:
            status = read_status(conn, await reader.read(4096))
        return verdict(check, status, progress.ms())
    finally:
        writer.transport.abort()  # Connection: close; no lingering TLS shutdown exchange


async def probe_many(
    targets: dict[str, tuple[str, int, HealthCheck]], due: dict[str, float] | None = None, max_wait: float = 0.0,
) -> dict[str, tuple[CheckResult, float]]:
    """Probe every target concurrently, each at its due time (waiting at most `max_wait`).

    Returns id -> (result, wall-clock time it was checked).
    """
    due = due or {}

    async def one(server_id, address, port, check):
        wait = min(due.get(server_id, 0) - time.time(), max_wait)
        if wait > 0:
            await asyncio.sleep(wait)
        result = await probe(address, port, check)
        return server_id, result, time.time()

    done = await asyncio.gather(*(one(sid, *target) for sid, target in targets.items()))
    return {sid: (result, at) for sid, result, at in done}
