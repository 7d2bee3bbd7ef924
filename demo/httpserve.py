"""A small HTTP/1.1 server loop over asyncio streams, framed by h11.

The simulator's HTTPS port and its control port both use it. A handler gets a
`Request` and returns either a `Reply` (keep-alive continues) or a `Switch`
(answer 101, then hand the raw stream to a coroutine: tunnel, WebSocket).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import h11

MAX_BODY = 64 * 1024
READ_SIZE = 65536


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]  # names lower-case
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str, default: str = "") -> str:
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def header_tokens(self, name: str) -> set[str]:
        return {t.strip().lower() for v in self.header_values(name) for t in v.split(",")}


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "text/plain; charset=utf-8"


# A stream handler gets the reader, the writer and the bytes already read past the request.
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]


@dataclass
class Switch:
    headers: list[tuple[str, str]]
    stream: StreamHandler


Handler = Callable[[Request], Awaitable[Reply | Switch]]


async def serve_http(reader, writer, handler: Handler, idle_timeout: float = 120.0, extra_headers=()):
    """Serve requests on one connection until the client closes, misbehaves or idles out."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
    try:
        while True:
            request = await _read_request(conn, reader, idle_timeout)
            if request is None:
                return
            result = await handler(request)
            # h11 lets us answer 101 only when the client proposed the upgrade itself.
            if isinstance(result, Switch) and conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                head = h11.InformationalResponse(status_code=101, headers=result.headers + list(extra_headers), reason=_reason(101))
                writer.write(conn.send(head))
                await writer.drain()
                trailing, _closed = conn.trailing_data
                await result.stream(reader, writer, bytes(trailing))
                return
            if isinstance(result, Switch):  # the client did not ask to upgrade
                result = Reply(400, b"this resource needs Connection: Upgrade\n")
            await _send_reply(conn, writer, request, result, extra_headers)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                reply = Reply(exc.error_status_hint, f"bad request: {exc}\n".encode())
                await _send_reply(conn, writer, None, reply, extra_headers)
    except (OSError, TimeoutError):  # resets, TLS errors, idle clients
        pass
    finally:
        await close_writer(writer)


async def _read_request(conn, reader, idle_timeout) -> Request | None:
    request, body = None, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            async with asyncio.timeout(idle_timeout):
                data = await reader.read(READ_SIZE)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
            request = Request(event.method.decode("ascii"), event.target.decode("latin-1"), headers)
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        elif isinstance(event, h11.EndOfMessage):
            request.body = bytes(body)
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _send_reply(conn, writer, request, reply: Reply, extra_headers):
    headers = [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body)))]
    headers += reply.headers + list(extra_headers)
    writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers, reason=_reason(reply.status))))
    if reply.body and (request is None or request.method != "HEAD"):
        writer.write(conn.send(h11.Data(data=reply.body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


async def close_writer(writer, timeout: float = 2.0):
    """Close without hanging on a peer that never answers TLS close_notify."""
    with contextlib.suppress(Exception):
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), timeout)
