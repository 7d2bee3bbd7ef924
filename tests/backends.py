"""Real backend servers for tests: real sockets, no mocks.

- `ident` (TCP): greets every connection with its name and a newline, then
  echoes whatever it receives; when the client half-closes, it finishes echoing
  and half-closes too. Tests read the first line to learn which server they
  reached, and the echo to check that bytes are neither lost nor reordered.
- `ident` (UDP): answers each datagram with `<name>|<datagram>`.
- `blackhole()`: a listening socket whose accept queue is full, so connecting to
  it hangs (a server that times out) without leaving 127.0.0.0/8.

Backends run on one event loop in a background thread (`start_backend`), or as a
process that a test can kill (`python -m tests.backends --name s1 --listen
127.0.0.5:8000 [--udp]`, which prints `ready` once listening).
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import threading

_addresses = itertools.count(1)
_ADDRESS_BLOCK = 100 + os.getpid() % 100  # spread parallel test processes over 127.<block>.x.y


def new_host() -> str:
    """A fresh loopback address per backend host: persistence remembers hosts, not ports."""
    n = next(_addresses)
    return f"127.{_ADDRESS_BLOCK}.{n // 250}.{n % 250 + 1}"


class IdentEcho(asyncio.Protocol):
    def __init__(self, backend: Backend):
        self.backend = backend

    def connection_made(self, transport):
        self.transport = transport
        self.backend.connections.add(transport)
        self.backend.accepted += 1
        transport.write(self.backend.name.encode() + b"\n")

    def data_received(self, data):
        self.backend.received += len(data)
        self.transport.write(data)

    # Back-pressure like any decent server: stop reading while the peer does not read.
    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()

    def eof_received(self):
        # Everything was echoed as it came: finish with our own FIN (close flushes first).
        self.transport.close()

    def connection_lost(self, exc):
        self.backend.connections.discard(self.transport)


class IdentUdp(asyncio.DatagramProtocol):
    def __init__(self, backend: Backend):
        self.backend = backend

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.backend.received += len(data)
        self.backend.peers.add(addr)
        self.transport.sendto(self.backend.name.encode() + b"|" + data, addr)


class Backend:
    def __init__(self, name: str, host: str, port: int, udp: bool = False):
        self.name, self.host, self.port, self.udp = name, host, port, udp
        self.connections: set = set()
        self.peers: set = set()
        self.accepted = 0
        self.received = 0
        self._server = None

    async def start(self):
        loop = asyncio.get_running_loop()
        if self.udp:
            self._server, _ = await loop.create_datagram_endpoint(
                lambda: IdentUdp(self), local_addr=(self.host, self.port), reuse_port=False)
            self.port = self._server.get_extra_info("sockname")[1]
        else:
            self._server = await loop.create_server(lambda: IdentEcho(self), self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        """Like a crash: stop listening and reset every open connection."""
        self._server.close()
        for transport in list(self.connections):
            transport.abort()


class _LoopThread:
    """One event loop in a daemon thread, shared by every in-process backend."""

    _lock = threading.Lock()
    _loop = None

    @classmethod
    def loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                cls._loop = asyncio.new_event_loop()
                threading.Thread(target=cls._loop.run_forever, name="backends", daemon=True).start()
            return cls._loop

    @classmethod
    def call(cls, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, cls.loop()).result(timeout)


class ThreadBackend:
    """A backend on the shared background loop; `stop()` resets its connections like a crash."""

    def __init__(self, backend: Backend):
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    @property
    def open_connections(self) -> int:
        return len(self._backend.connections)

    def stop(self):
        _LoopThread.call(self._backend.stop())


def start_backend(name: str, host: str | None = None, port: int = 0, udp: bool = False) -> ThreadBackend:
    backend = Backend(name, host or new_host(), port, udp)
    _LoopThread.call(backend.start())
    return ThreadBackend(backend)


def blackhole(host: str | None = None) -> tuple[socket.socket, list[socket.socket], int]:
    """A port that accepts no more connections (SYNs are dropped), so connects time out.

    Returns (listener, fillers, port); close them all to release the port.
    """
    host = host or new_host()
    listener = socket.socket()
    listener.bind((host, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):  # fill the accept queue; later SYNs are dropped
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect((host, port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    return listener, fillers, port


async def _serve_forever(name: str, host: str, port: int, udp: bool):
    backend = await Backend(name, host, port, udp).start()
    print("ready", backend.port, flush=True)
    await asyncio.Event().wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description="a test backend server")
    parser.add_argument("--name", required=True)
    parser.add_argument("--listen", required=True, help="host:port (port 0 = any)")
    parser.add_argument("--udp", action="store_true")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    asyncio.run(_serve_forever(args.name, host.strip("[]"), int(port), args.udp))


if __name__ == "__main__":
    main()
