"""An HTTP/1.1 client connection over asyncio streams, framed by h11.

What a Horizon client does on the wire: several requests on one keep-alive
connection, from a chosen source address (the demo gives each user its own
127.0.0.x), over TLS that does not verify the server's certificate.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import h11

from demo import tls
from demo.httpserve import READ_SIZE, close_writer


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]  # names lower-case
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


class HttpConnection:
    def __init__(self, reader, writer, host: str, timeout: float):
        self.reader, self.writer = reader, writer
        self.host = host
        self.timeout = timeout
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, host: str, port: int, *, source: str | None = None, use_tls: bool = True,
                   server_name: str | None = None, timeout: float = 10.0) -> HttpConnection:
        kwargs = {}
        if use_tls:
            kwargs = {"ssl": tls.client_context(), "server_hostname": server_name or host, "ssl_handshake_timeout": timeout}
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, local_addr=(source, 0) if source else None, **kwargs
            )
        return cls(reader, writer, server_name or host, timeout)

    @property
    def reusable(self) -> bool:
        return self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE

    async def request(self, method: str, target: str, headers=(), body: bytes = b"") -> Response:
        self._send(method, target, headers, body)
        async with asyncio.timeout(self.timeout):
            await self.writer.drain()
            response = await self._read_response()
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return response

    async def upgrade(self, method: str, target: str, upgrade: str, headers=(), body: bytes = b""):
        """Ask to switch protocols. Returns (response, leftover bytes); on 101 the raw
        stream continues on `self.reader` / `self.writer`."""
        headers = [("Connection", "Upgrade"), ("Upgrade", upgrade), *headers]
        self._send(method, target, headers, body)
        async with asyncio.timeout(self.timeout):
            await self.writer.drain()
            response = await self._read_response()
        leftover = bytes(self.conn.trailing_data[0]) if response.status == 101 else b""
        return response, leftover

    def _send(self, method, target, headers, body):
        all_headers = [("Host", self.host), *headers]
        if body or method in ("POST", "PUT"):
            all_headers.append(("Content-Length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=all_headers))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        self.writer.write(data)

    async def _read_response(self) -> Response:
        response, body = None, bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.reader.read(READ_SIZE))
            elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                return Response(101, _headers(event))
            elif isinstance(event, h11.Response):
                response = Response(event.status_code, _headers(event))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                response.body = bytes(body)
                return response
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("server closed the connection before answering")

    async def close(self):
        await close_writer(self.writer)


def _headers(event) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
