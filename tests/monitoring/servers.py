"""Real servers for health-check tests, on 127.0.0.1 ports.

Kinds: "tcp" (accepts), "http" / "https" (answer `listener.status`, 200 by
default; set it to 503 to quiesce like a Horizon server), "garbage" (answers
bytes that are not HTTP), "hang" (accepts and never answers). A refused port is
simply `free_port()` with nothing on it.

`Servers` runs them on an asyncio loop in a thread of the test process;
`python -m tests.monitoring.servers KIND PORT [STATUS]` runs one in its own
process so that a test can kill it.
"""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import h11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

GARBAGE = b"SSH-2.0-OpenSSH_9.2\r\n\x00\xff\xfe not http at all\r\n\r\n"


def self_signed(directory: Path, name="localhost") -> tuple[Path, Path]:
    """A self-signed certificate for `name` and 127.0.0.1, like an internal Horizon certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / f"{name}.crt", directory / f"{name}.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certfile, keyfile


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    sni: str | None


@dataclass
class Listener:
    kind: str
    port: int
    status: int = 200
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    server: asyncio.AbstractServer | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        try:
            if self.kind == "tcp":
                await reader.read()
            elif self.kind == "garbage":
                writer.write(GARBAGE)
                await writer.drain()
            elif self.kind == "hang":
                await reader.read()  # until the checker gives up and closes
            else:
                await self.answer(reader, writer)
        except (ConnectionError, ssl.SSLError, h11.ProtocolError):
            pass
        finally:
            writer.close()

    async def answer(self, reader, writer):
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(4096)
                conn.receive_data(data)
                if not data:
                    return
                continue
            if isinstance(event, h11.Request):
                break
            return
        ssl_object = writer.get_extra_info("ssl_object")
        headers = {k.decode().lower(): v.decode() for k, v in event.headers}
        sni = getattr(ssl_object, "viewlb_sni", None)
        self.requests.append(Request(event.method.decode(), event.target.decode(), headers, sni))
        body = b"" if event.method == b"HEAD" else b"\x00" * 32
        writer.write(conn.send(h11.Response(status_code=self.status, headers=[
            ("Content-Type", "image/x-icon"), ("Content-Length", str(32)), ("Connection", "close")])))
        writer.write(conn.send(h11.Data(data=body)) if body else b"")
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()


class Servers:
    """An asyncio loop in a thread hosting any number of listeners."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.tls = tls
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-servers", daemon=True)
        self.thread.start()

    def start(self, kind: str, status: int = 200, tls: bool | None = None) -> Listener:
        listener = Listener(kind, 0, status)
        use_tls = kind == "https" if tls is None else tls
        context = self.tls if use_tls else None

        async def serve():
            return await asyncio.start_server(listener.handle, "127.0.0.1", 0, ssl=context)

        listener.server = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(5)
        listener.port = listener.server.sockets[0].getsockname()[1]
        return listener

    def stop(self, listener: Listener):
        async def close():
            listener.server.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def server_tls_context(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    # Remember the server name the client sent, for the SNI assertions.
    context.sni_callback = lambda ssl_object, name, _context: setattr(ssl_object, "viewlb_sni", name)
    return context


async def _main(kind: str, port: int, status: int):
    listener = Listener(kind, port, status)
    server = await asyncio.start_server(listener.handle, "127.0.0.1", port, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 200))
