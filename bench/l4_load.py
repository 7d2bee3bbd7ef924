"""Load generator for the layer-4 benchmark: one uvloop process driven by JSON lines.

    .venv/bin/python bench/l4_load.py        (bench/l4.py starts two of these)

Reads one command per line on stdin and answers one JSON line on stdout.
Every measuring command carries `start` (unix time to begin), `warmup` and
`duration` (seconds): connections are made at `start`, and only what happens
in [start + warmup, start + warmup + duration] is counted, so that several
load processes measure the same window.

- keepalive: `conns` connections, each sending `size` bytes and waiting for
  the echo, again and again -> requests/s.
- connect: `concurrency` loops of connect (from the next of `sources`), send
  `size` bytes, read the answer, see the server close -> connections/s.
- bulk: `conns` connections reading a source as fast as they can -> bytes/s.
- latency: `conns` connections, each sending one request every `interval`
  seconds -> round-trip samples in ms.
- idle_open / idle_close: hold `conns` connections that each proved one echo.
"""
from __future__ import annotations

import asyncio
import json
import resource
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class Window:
    """The measuring window on the loop clock, from the shared unix start time."""

    def __init__(self, loop, command):
        self.loop = loop
        begin = command["start"] - time.time() + loop.time()
        self.open_at = begin + command["warmup"]
        self.close_at = self.open_at + command["duration"]
        self.begin = begin

    async def until_begin(self):
        await asyncio.sleep(max(self.begin - self.loop.time(), 0))

    async def sample(self, read):
        """`read()` at the window's start and end: (value at start, value at end)."""
        await asyncio.sleep(max(self.open_at - self.loop.time(), 0))
        first = read()
        await asyncio.sleep(max(self.close_at - self.loop.time(), 0))
        return first, read()


# --- keep-alive requests --------------------------------------------------------


class PingPong(asyncio.Protocol):
    def __init__(self, run):
        self.run, self.got, self.transport = run, 0, None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.run.request)

    def data_received(self, data):
        self.got += len(data)
        if self.got >= self.run.size:
            self.got = 0
            self.run.done += 1
            if self.run.going:
                self.transport.write(self.run.request)

    def connection_lost(self, exc):
        if self.run.going:
            self.run.errors += 1


class Run:
    def __init__(self, size=64):
        self.size, self.request = size, b"q" * size
        self.done = self.errors = 0
        self.going = True


async def connect_all(loop, factory, addr, count, parallel=200):
    """Open `count` connections, at most `parallel` handshakes at a time; returns (transports, failures)."""
    gate = asyncio.Semaphore(parallel)
    transports, failures = [], 0

    async def one():
        nonlocal failures
        async with gate:
            try:
                transport, protocol = await loop.create_connection(factory, addr[0], addr[1])
            except OSError:
                failures += 1
                return
            transports.append((transport, protocol))

    await asyncio.gather(*(one() for _ in range(count)))
    return transports, failures


async def keepalive(loop, command):
    window, run = Window(loop, command), Run(command.get("size", 64))
    await window.until_begin()
    conns, failures = await connect_all(loop, lambda: PingPong(run), command["addr"], command["conns"])
    first, last = await window.sample(lambda: run.done)
    run.going = False
    for transport, _ in conns:
        transport.close()
    return {"count": last - first, "errors": run.errors + failures}


# --- new connections ------------------------------------------------------------


class OneShotClient(asyncio.Protocol):
    def __init__(self, request, done):
        self.request, self.done, self.got = request, done, 0

    def connection_made(self, transport):
        transport.write(self.request)

    def data_received(self, data):
        self.got += len(data)

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(self.got == len(self.request) and exc is None)


async def connect_loop(loop, command):
    window = Window(loop, command)
    request, addr, sources = b"c" * command.get("size", 64), tuple(command["addr"]), command["sources"]
    counts = {"ok": 0, "errors": 0}
    stop = False

    async def one(source):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            await loop.sock_connect(sock, addr)
        except OSError:
            sock.close()
            return False
        done = loop.create_future()
        try:
            await loop.create_connection(lambda: OneShotClient(request, done), sock=sock)
        except OSError:
            sock.close()
            return False
        return await done

    async def slot(index):
        n = index
        while not stop:
            ok = await one(sources[n % len(sources)])
            n += command["concurrency"]
            counts["ok" if ok else "errors"] += 1

    await window.until_begin()
    slots = [loop.create_task(slot(i)) for i in range(command["concurrency"])]
    first, last = await window.sample(lambda: counts["ok"])
    stop = True
    await asyncio.wait(slots, timeout=5)
    return {"count": last - first, "errors": counts["errors"]}


# --- bulk -------------------------------------------------------------------------


class Sink(asyncio.BufferedProtocol):
    def __init__(self, run):
        self.run, self.buffer = run, bytearray(256 * 1024)

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.run.done += nbytes

    def connection_lost(self, exc):
        if self.run.going:
            self.run.errors += 1


async def bulk(loop, command):
    window, run = Window(loop, command), Run()
    await window.until_begin()
    conns, failures = await connect_all(loop, lambda: Sink(run), command["addr"], command["conns"])
    first, last = await window.sample(lambda: run.done)
    run.going = False
    for transport, _ in conns:
        transport.abort()
    return {"count": last - first, "errors": run.errors + failures}


# --- latency ----------------------------------------------------------------------


class Timed(asyncio.Protocol):
    def __init__(self, run):
        self.run, self.got, self.sent_at, self.transport = run, 0, None, None

    def connection_made(self, transport):
        self.transport = transport

    def send(self):
        if self.sent_at is not None:  # the previous answer is still out: count it, do not queue
            self.run.late += 1
            return
        self.sent_at = time.perf_counter()
        self.transport.write(self.run.request)

    def data_received(self, data):
        self.got += len(data)
        if self.got >= self.run.size:
            self.got = 0
            if self.run.recording:
                self.run.samples.append((time.perf_counter() - self.sent_at) * 1000)
            self.sent_at = None


async def latency(loop, command):
    window, run = Window(loop, command), Run(command.get("size", 64))
    run.samples, run.late, run.recording = [], 0, False
    interval = command["interval"]
    await window.until_begin()
    conns, failures = await connect_all(loop, lambda: Timed(run), command["addr"], command["conns"])

    def tick(protocol, at):
        if not run.going:
            return
        protocol.send()
        loop.call_at(at + interval, tick, protocol, at + interval)

    now = loop.time()
    for i, (_, protocol) in enumerate(conns):  # spread the connections over one interval
        at = now + interval * i / max(len(conns), 1)
        loop.call_at(at, tick, protocol, at)

    def record(on):
        run.recording = on
        return len(run.samples)

    await window.sample(lambda: record(not run.recording))
    run.going = False
    for transport, _ in conns:
        transport.close()
    return {"samples": run.samples, "late": run.late, "errors": failures}


# --- idle connections -------------------------------------------------------------


class Held(asyncio.Protocol):
    def __init__(self):
        self.echoed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        transport.write(b"hello")

    def data_received(self, data):
        if not self.echoed.done():
            self.echoed.set_result(True)

    def connection_lost(self, exc):
        if not self.echoed.done():
            self.echoed.set_result(False)


HELD: list = []


async def idle_open(loop, command):
    conns, failures = await connect_all(loop, Held, command["addr"], command["conns"])
    proven = 0
    for transport, protocol in conns:
        try:
            async with asyncio.timeout(10):
                proven += await protocol.echoed
        except TimeoutError:
            pass
        HELD.append(transport)
    return {"opened": proven, "failed": failures + len(conns) - proven}


async def idle_close(loop, command):
    count = len(HELD)
    for transport in HELD:
        transport.close()
    HELD.clear()
    await asyncio.sleep(0.1)
    return {"closed": count}


OPS = {"keepalive": keepalive, "connect": connect_loop, "bulk": bulk, "latency": latency,
       "idle_open": idle_open, "idle_close": idle_close}


async def serve() -> None:
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": True}), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        command = json.loads(line)
        if command["op"] == "quit":
            return
        try:
            result = await OPS[command["op"]](loop, command)
        except Exception as exc:  # report it: the orchestrator prints it with the figure
            result = {"failure": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), flush=True)


def main() -> None:
    import uvloop

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(serve())


if __name__ == "__main__":
    main()
