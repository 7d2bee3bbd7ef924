"""UDP benchmark: datagrams per second and latency, direct and through viewlb, in the same run.

    .venv/bin/python bench/udp.py [--rounds N] [--duration S] [--flows N] [--window N] [--size BYTES] [--pings N]

Starts, on 127.0.0.0/8 only:
- a UDP echo backend (this script with `--serve`, one uvloop process) on two
  server hosts 127.79.0.1/.2;
- one viewlb worker (`python -m proxyworker`, started like bench/l4.py does)
  with one UDP VIP over those two servers: source-IP persistence with a
  90-minute timeout, as for Blast 8443/udp or PCoIP 4172/udp;
and measures from this process (uvloop), the two paths taking turns round
after round (the machine is shared):
- rate: `--flows` client sockets (one viewlb flow each), each keeping
  `--window` datagrams of `--size` bytes in flight, for `--duration` s;
  datagrams echoed per second, and the worker's CPU time per echoed datagram;
- latency: one flow, one datagram at a time (`--pings` of them), round-trip
  p50 and p99 on an otherwise idle path.
A figure is the median round; a ratio the median of the rounds' viewlb/direct.

No HAProxy column: HAProxy's community edition has no UDP load balancing
(only QUIC for HTTP/3 and syslog forwarding; UDP proxying is an HAProxy
Enterprise module), so there is nothing like-for-like to run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
from l4 import PY, REDIS_URL, Stack, cpu_ns, percentile, start_viewlb  # noqa: E402

from proxyworker.config import Keys, Persistence, Pool, RealServer, Snapshot, VirtualService  # noqa: E402

SERVER_HOSTS = ("127.79.0.1", "127.79.0.2")
VIP_HOST = "127.0.0.1"
NO_HAPROXY = ("HAProxy: not compared. Its community edition has no UDP load balancing (only QUIC for HTTP/3 "
              "and syslog forwarding); UDP proxying is an HAProxy Enterprise module.")
TICK = 0.05  # how often a flow with no echo for that long refills its window (datagrams lost)


# --- the backend -------------------------------------------------------------------------


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def serve(hosts) -> None:
    loop = asyncio.get_running_loop()
    ports = []
    for host in hosts:
        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=(host, 0))
        ports.append(transport.get_extra_info("sockname")[1])
    print(json.dumps(ports), flush=True)
    await asyncio.Event().wait()


def start_backend(stack: Stack) -> list[int]:
    proc = stack.spawn([PY, str(Path(__file__).resolve()), "--serve", *SERVER_HOSTS], "backend", pipe=True)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("the UDP backend did not start: see its log")
    return json.loads(line)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((VIP_HOST, 0))
        return s.getsockname()[1]


def udp_snapshot(backend_ports, vip_port: int) -> Snapshot:
    servers = tuple(RealServer(id=f"blast/s{i + 1}", name=f"s{i + 1}", address=host, port=port)
                    for i, (host, port) in enumerate(zip(SERVER_HOSTS, backend_ports, strict=True)))
    vs = VirtualService(name="blast", address=VIP_HOST, port=vip_port, pool="blast", protocol="udp",
                        persistence=Persistence(method="source_ip", timeout=5400))
    return Snapshot(version=1, virtual_services=(vs,), pools=(Pool(name="blast", servers=servers),))


def start_worker(stack: Stack, backend_ports) -> tuple[int, int]:
    """The worker on a snapshot published under a private prefix (bench/l4.py's start); (pid, VIP port)."""
    prefix = f"vlbbench{uuid.uuid4().hex[:8]}"
    stack.prefixes.append(prefix)
    vip_port = free_udp_port()
    snapshot = udp_snapshot(backend_ports, vip_port)
    client = redis.Redis.from_url(REDIS_URL)
    client.set(Keys(prefix).config, snapshot.to_json())
    client.close()
    proc, _, _ = start_viewlb(stack, None, worker_id="bench-udp", prefix=prefix, snapshot=snapshot)
    return proc.pid, vip_port


# --- the load ------------------------------------------------------------------------------


class Flood(asyncio.DatagramProtocol):
    """One flow keeping `window` datagrams in flight: each echo sends the next one."""

    def __init__(self, payload: bytes, window: int):
        self.payload, self.window = payload, window
        self.sent = self.received = self.lost = 0
        self._seen = 0

    def connection_made(self, transport):
        self.transport = transport

    def refill(self):
        for _ in range(self.window):
            self.transport.sendto(self.payload)
        self.sent += self.window

    def datagram_received(self, data, addr):
        self.received += 1
        self.transport.sendto(self.payload)
        self.sent += 1

    def tick(self):
        """No echo since the last tick: what was in flight is lost (UDP may drop); start again."""
        if self.received == self._seen:
            self.lost += self.sent - self.received - self.lost
            self.refill()
        self._seen = self.received


async def rate(addr, args, pid: int | None) -> dict:
    loop = asyncio.get_running_loop()
    payload = b"x" * args.size
    floods = []
    for _ in range(args.flows):
        _, flood = await loop.create_datagram_endpoint(lambda: Flood(payload, args.window), remote_addr=addr)
        floods.append(flood)
    try:
        for flood in floods:
            flood.refill()
        samples = {}
        for phase, seconds in (("warmup", args.warmup), ("window", args.duration)):
            started, cpu = time.perf_counter(), cpu_ns(pid) if pid else 0
            received = sum(f.received for f in floods)
            while time.perf_counter() - started < seconds:
                await asyncio.sleep(TICK)
                for flood in floods:
                    flood.tick()
            samples[phase] = (time.perf_counter() - started, sum(f.received for f in floods) - received,
                              (cpu_ns(pid) - cpu) if pid else 0)
        elapsed, echoed, cpu = samples["window"]
        return {"dps": echoed / elapsed, "lost": sum(f.lost for f in floods),
                "cpu_us": cpu / 1000 / echoed if pid and echoed else None}
    finally:
        for flood in floods:
            flood.transport.close()


class Ping(asyncio.DatagramProtocol):
    def __init__(self):
        self.waiter = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


async def latency(addr, args) -> dict:
    loop = asyncio.get_running_loop()
    transport, ping = await loop.create_datagram_endpoint(Ping, remote_addr=addr)
    payload = b"p" * args.size
    times, lost = [], 0
    try:
        for n in range(args.pings):
            ping.waiter = loop.create_future()
            started = time.perf_counter_ns()
            transport.sendto(payload)
            try:
                await asyncio.wait_for(ping.waiter, 0.5)
            except TimeoutError:
                lost += 1
                continue
            if n >= 20:  # the first few warm the path (the flow is created by the first one)
                times.append((time.perf_counter_ns() - started) / 1000)
    finally:
        transport.close()
    times.sort()
    return {"p50": percentile(times, 50), "p99": percentile(times, 99), "lost": lost}


async def measure(targets, args) -> dict:
    results = {name: [] for name in targets}
    order = list(targets)
    for round_ in range(args.rounds):
        for name in order:
            addr, pid = targets[name]
            entry = await rate(addr, args, pid)
            entry.update(await latency(addr, args))
            results[name].append(entry)
        print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
            f"{n} {results[n][-1]['dps']:,.0f}/s p50 {results[n][-1]['p50']:.0f} µs" for n in order), flush=True)
        order.reverse()  # who goes first alternates
    return results


# --- the report ----------------------------------------------------------------------------


def median_of(rounds, key):
    values = [r[key] for r in rounds if r[key] is not None]
    return statistics.median(values) if values else None


def paired(results, key) -> float:
    return statistics.median(v[key] / d[key] for d, v in zip(results["direct"], results["viewlb"], strict=True))


def report(results) -> None:
    rows = [("datagrams/s echoed (rate)", "dps", "{:,.0f}"), ("latency p50, µs", "p50", "{:.0f}"),
            ("latency p99, µs", "p99", "{:.0f}")]
    lines = [("figure", "direct", "viewlb", "viewlb/direct")]
    for label, key, form in rows:
        lines.append((label, form.format(median_of(results["direct"], key)),
                      form.format(median_of(results["viewlb"], key)), f"{paired(results, key):.2f}x"))
    cpu = median_of(results["viewlb"], "cpu_us")
    lines.append(("worker CPU per echoed datagram, µs", "-", f"{cpu:.1f}" if cpu else "-", "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    for i, line in enumerate(lines):
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(line, widths, strict=False))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    lost = {name: sum(r["lost"] for r in rounds) for name, rounds in results.items()}
    print(f"\ndatagrams lost (refilled): {lost}")
    print(NO_HAPROXY)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", nargs="+", metavar="HOST", help=argparse.SUPPRESS)  # the backend process
    parser.add_argument("--rounds", type=int, default=5, help="rounds per path (default 5)")
    parser.add_argument("--duration", type=float, default=1.0, help="rate window per round, s (default 1)")
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds of load before each window")
    parser.add_argument("--flows", type=int, default=8, help="client flows for the rate (default 8)")
    parser.add_argument("--window", type=int, default=16, help="datagrams in flight per flow (default 16)")
    parser.add_argument("--size", type=int, default=1000, help="datagram size, bytes (default 1000)")
    parser.add_argument("--pings", type=int, default=2000, help="round trips per latency sample (default 2000)")
    args = parser.parse_args(argv)
    args.pin = False  # bench/l4.py's Stack asks
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import uvloop

    if args.serve:
        uvloop.run(serve(args.serve))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="udp-bench-"))
    stack = Stack(args, workdir)
    began = time.monotonic()
    try:
        backend_ports = start_backend(stack)
        pid, vip_port = start_worker(stack, backend_ports)
        targets = {"direct": ((SERVER_HOSTS[0], backend_ports[0]), None), "viewlb": ((VIP_HOST, vip_port), pid)}
        print(f"udp benchmark: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {args.rounds} rounds, "
              f"{args.flows} flows x {args.window} in flight, {args.size}-byte datagrams, logs in {workdir}",
              flush=True)
        results = uvloop.run(measure(targets, args))
    finally:
        stack.close()
    (workdir / "results.json").write_text(json.dumps(results))
    print()
    report(results)
    print(f"took {time.monotonic() - began:.0f} s; load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
