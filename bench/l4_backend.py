"""Backend servers for the layer-4 benchmark: one uvloop process, C-speed paths only.

    .venv/bin/python bench/l4_backend.py HOST [HOST ...]

On every HOST (a loopback address) it listens on three ports, chosen by the
kernel, and prints them as one JSON line (`{"echo": [...], "oneshot": [...],
"source": [...]}`, one port per host in HOST order) once it is ready:
- echo: echoes every byte (keep-alive requests, latency, idle connections);
- oneshot: answers the first chunk with as many bytes and closes (a new
  connection per request, the server closing first like HTTP/1.0, so no
  client port is left in TIME_WAIT);
- source: streams bytes as fast as the peer reads them (bulk throughput).
Every server honours back-pressure, so none of them buffers without bound.
"""
from __future__ import annotations

import asyncio
import json
import resource
import sys

CHUNK = memoryview(b"x" * (256 * 1024))


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()

    def eof_received(self):
        self.transport.close()


class OneShot(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)
        self.transport.close()  # flushes first, then FIN


class Source(asyncio.Protocol):
    """Keeps about two chunks queued: uvloop writes them straight from this buffer."""

    def connection_made(self, transport):
        self.transport = transport
        self.paused = False
        transport.set_write_buffer_limits(high=len(CHUNK), low=len(CHUNK) // 2)
        self._fill()

    def _fill(self):
        while not self.paused and not self.transport.is_closing():
            self.transport.write(CHUNK)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self._fill()

    def data_received(self, data):
        pass

    def eof_received(self):
        self.transport.close()


KINDS = {"echo": Echo, "oneshot": OneShot, "source": Source}


async def serve(hosts: list[str]) -> None:
    loop = asyncio.get_running_loop()
    ports: dict[str, list[int]] = {kind: [] for kind in KINDS}
    servers = []
    for host in hosts:
        for kind, protocol in KINDS.items():
            server = await loop.create_server(protocol, host, 0, backlog=4096, reuse_address=True)
            servers.append(server)
            ports[kind].append(server.sockets[0].getsockname()[1])
    print(json.dumps(ports), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin


def main() -> None:
    import uvloop

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(serve(sys.argv[1:]))


if __name__ == "__main__":
    main()
