"""The yardstick: a plain asyncio Protocol proxy on uvloop, about 50 lines of logic.

    .venv/bin/python bench/plain_proxy.py LISTEN_HOST:PORT=SERVER_HOST:PORT,SERVER_HOST:PORT [...]

Round robin, no persistence, no accounting, no timeouts: what the issue calls
"a plain 40-line asyncio Protocol proxy" (plus the half-close bookkeeping it needs). bench/l4.py --plain runs it next to viewlb
and HAProxy so the figures can be read against it. Prints `ready` when listening.
"""
from __future__ import annotations

import asyncio
import itertools
import resource
import sys


class Upstream(asyncio.Protocol):
    def __init__(self, client):
        self.client = client

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.client.transport.write(data)

    def eof_received(self):
        self.client.server_eof = True
        self.client.transport.write_eof()
        if self.client.client_eof:
            self.client.transport.close()
        return True

    def connection_lost(self, exc):
        self.client.transport.close()

    def pause_writing(self):
        self.client.transport.pause_reading()

    def resume_writing(self):
        self.client.transport.resume_reading()


class Client(asyncio.Protocol):
    def __init__(self, servers):
        self.servers, self.upstream, self.pending = servers, None, []
        self.client_eof = self.server_eof = False

    def connection_made(self, transport):
        self.transport = transport
        # Keep the task referenced: the loop holds only a weak reference to it.
        self.task = asyncio.get_running_loop().create_task(self.connect(*next(self.servers)))

    async def connect(self, host, port):
        try:
            upstream, _ = await asyncio.get_running_loop().create_connection(lambda: Upstream(self), host, port)
        except OSError:
            self.transport.close()
            return
        self.upstream = upstream
        if self.pending:
            upstream.write(b"".join(self.pending))
        if self.client_eof:
            upstream.write_eof()
        if self.transport.is_closing():
            upstream.close()

    def data_received(self, data):
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.write(data)

    def eof_received(self):
        # Both directions done: close. (A transport left open with a pending write_eof and then
        # garbage-collected crashes uvloop 0.21: its shutdown callback finds a freed object.)
        self.client_eof = True
        if self.upstream is not None:
            self.upstream.write_eof()
        if self.server_eof:
            self.transport.close()
        return True

    def connection_lost(self, exc):
        if self.upstream is not None:
            self.upstream.close()

    def pause_writing(self):
        self.upstream.pause_reading()

    def resume_writing(self):
        self.upstream.resume_reading()


async def serve(routes):
    loop = asyncio.get_running_loop()
    for route in routes:
        listen, _, targets = route.partition("=")
        host, _, port = listen.rpartition(":")
        servers = itertools.cycle([(h, int(p)) for h, _, p in (t.rpartition(":") for t in targets.split(","))])
        await loop.create_server(lambda s=servers: Client(s), host, int(port), backlog=4096, reuse_address=True)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import uvloop

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(serve(sys.argv[1:]))
