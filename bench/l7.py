"""Layer-7 benchmark: TLS termination through viewlb and through HAProxy, measured in the same run.

    .venv/bin/python bench/l7.py [--rounds 3] [--duration 3] [--connections 50] [--no-pin] [--no-yardstick]

Starts, on 127.0.0.0/8 only:
- a backend: HAProxy answering every request itself (`http-request return`),
  on two server hosts 127.78.0.1/.2: C speed, so the backend is not what is measured;
- one viewlb worker (`python -m proxyworker`, uvloop) under a private Redis
  prefix, with one layer-7 VIP: TLS 1.2/1.3 with an EC P-256 certificate,
  `cookie_learn` persistence on JSESSIONID, round robin, plain HTTP to the servers;
- HAProxy doing the same work with one thread (`nbthread 1`): the same
  certificate, `balance roundrobin`, a stick table learning JSESSIONID from
  responses (`stick store-response res.cook(JSESSIONID)` + `stick on
  req.cook(JSESSIONID)`), `option forwardfor`, X-Forwarded-Proto;
- `wrk` as the load generator (a C client; installed with apt like HAProxy);
- as a yardstick, a bare uvloop TLS terminator forwarding bytes 1:1 to one
  server (`tls-fwd`: no HTTP parsing, no routing): what the event loop and
  OpenSSL cost before any layer-7 work.

Three figures per target:
- keep-alive: small requests over N persistent TLS connections (requests/s, p99),
  each one balanced on its own (no cookie known: round robin per request);
- the same with the cookie the server set on /login: every request is routed by
  the learned JSESSIONID (the Horizon case);
- handshakes: every request on a new connection (`Connection: close`), so each
  costs a full TLS handshake (wrk never resumes sessions) plus one request.
The targets are measured one at a time, interleaved round after round; the
best round of each is reported (the machine is shared: the least disturbed
round is the closest to what a target can do). With `--pin` (default) the proxy under test gets
CPU 0 and the load generator and backend CPU 1, so that on this 2-core machine
the proxy is not starved by its own load. The CPU time the proxy used in the
window is read from /proc: requests per CPU-second compare the work itself,
even where the client, not the proxy, was the limit.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from proxyworker.config import (  # noqa: E402
    Certificate,
    Keys,
    Persistence,
    Pool,
    RealServer,
    Snapshot,
    Tls,
    VirtualService,
)
from proxyworker.tlsconf import encrypt_private_key, generate_cert_key, generate_self_signed  # noqa: E402

SERVER_HOSTS = ("127.78.0.1", "127.78.0.2")
VIP_HOST = "127.0.0.1"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
TARGET_RATIO = 0.5
COOKIE = "JSESSIONID=bench-session"  # set by the backend on /login; the proxies learn it there
TESTS = {
    "keepalive": "keep-alive requests/s",
    "sticky": "  same, JSESSIONID known",
    "handshakes": "TLS handshakes/s (+1 req)",
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- tools and processes -------------------------------------------------------------------


def ensure_installed(command: str, package: str) -> str:
    found = shutil.which(command) or (f"/usr/sbin/{command}" if os.path.exists(f"/usr/sbin/{command}") else None)
    if found:
        return found
    print(f"{command} not found: installing {package} with apt-get", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update", "-q"], check=False, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-q", package], check=True, env=env)
    found = shutil.which(command) or f"/usr/sbin/{command}"
    if not os.path.exists(found):
        sys.exit(f"{package} did not install {command}")
    return found


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((VIP_HOST, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 10.0):
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


def pin(pid: int, cpus):
    if cpus is not None:
        os.sched_setaffinity(pid, cpus)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


BACKEND_CFG = """
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend servers
    {binds}
    http-request return status 200 content-type text/plain string "hello from the server" hdr Set-Cookie "JSESSIONID=bench-session; Path=/; Secure; HttpOnly" if {{ path /login }}
    http-request return status 200 content-type text/plain string "hello from the server"
"""

HAPROXY_CFG = """
global
    nbthread 1
    maxconn 8000
    ssl-default-bind-options ssl-min-ver TLSv1.2
    ssl-default-bind-ciphers ECDHE+AESGCM:ECDHE+CHACHA20
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    option http-keep-alive
    option forwardfor
frontend vip
    bind {vip}:{port} ssl crt {pem} alpn http/1.1
    http-request set-header X-Forwarded-Proto https
    default_backend servers
backend servers
    balance roundrobin
    stick-table type string len 64 size 1m expire 90m
    stick on req.cook(JSESSIONID)
    stick store-response res.cook(JSESSIONID)
    {servers}
"""


class Bench:
    def __init__(self, args, tmp: Path):
        self.args, self.tmp = args, tmp
        self.procs: list[subprocess.Popen] = []
        self.haproxy = ensure_installed("haproxy", "haproxy")
        self.wrk_path = ensure_installed("wrk", "wrk")
        self.proxy_cpus = {0} if args.pin and os.cpu_count() >= 2 else None
        self.load_cpus = {1} if self.proxy_cpus else None
        self.prefix = f"vlbbench-l7-{uuid.uuid4().hex[:8]}"
        self.redis = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        cert_pem, key_pem = generate_self_signed("bench.example.com", ["127.0.0.1"])
        self.cert_pem, self.key_pem = cert_pem, key_pem
        self.server_port = free_port()

    def spawn(self, argv, cpus, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(argv, **kwargs)
        self.procs.append(proc)
        pin(proc.pid, cpus)
        return proc

    def start_backend(self):
        binds = "\n    ".join(f"bind {host}:{self.server_port}" for host in SERVER_HOSTS)
        cfg = self.tmp / "backend.cfg"
        cfg.write_text(BACKEND_CFG.format(binds=binds))
        self.spawn([self.haproxy, "-db", "-f", str(cfg)], self.load_cpus, stdout=subprocess.DEVNULL)
        wait_port(SERVER_HOSTS[0], self.server_port)

    def start_haproxy(self) -> tuple[int, int]:
        port = free_port()
        pem = self.tmp / "haproxy.pem"
        pem.write_text(self.cert_pem + self.key_pem)
        servers = "\n    ".join(f"server s{i + 1} {host}:{self.server_port}" for i, host in enumerate(SERVER_HOSTS))
        cfg = self.tmp / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(vip=VIP_HOST, port=port, pem=pem, servers=servers))
        proc = self.spawn([self.haproxy, "-db", "-f", str(cfg)], self.proxy_cpus, stdout=subprocess.DEVNULL)
        wait_port(VIP_HOST, port)
        return port, proc.pid

    def start_forwarder(self) -> tuple[int, int]:
        port = free_port()
        cert, key = self.tmp / "forwarder.crt", self.tmp / "forwarder.key"
        cert.write_text(self.cert_pem)
        key.write_text(self.key_pem)
        proc = self.spawn([sys.executable, __file__, "--forwarder", str(cert), str(key), str(port), SERVER_HOSTS[0],
                           str(self.server_port)], self.proxy_cpus)
        wait_port(VIP_HOST, port)
        return port, proc.pid

    def start_viewlb(self) -> tuple[int, int]:
        port = free_port()
        cert_key = generate_cert_key()
        certificate = Certificate("bench", self.cert_pem, encrypt_private_key(self.key_pem, cert_key))
        pool = Pool("servers", tuple(RealServer(f"servers/s{i + 1}", f"s{i + 1}", host, self.server_port)
                                     for i, host in enumerate(SERVER_HOSTS)))
        vs = VirtualService("vip", VIP_HOST, port, "servers", mode="l7", scheduler="round_robin",
                            persistence=Persistence(method="cookie_learn", timeout=5400),
                            tls=Tls(certificates=("bench",), backend_tls=False))
        snapshot = Snapshot(version=1, virtual_services=(vs,), pools=(pool,), certificates=(certificate,))
        keys = Keys(self.prefix)
        self.redis.set(keys.config, snapshot.to_json())
        env = dict(os.environ, VIEWLB_REDIS_PREFIX=self.prefix, VIEWLB_CERT_KEY=cert_key, REDIS_URL=REDIS_URL,
                   VIEWLB_WORKER_ID="bench-l7", LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
        log = open(self.tmp / "worker.log", "wb")
        proc = self.spawn([sys.executable, "-m", "proxyworker", "--id", "bench-l7", "--state-dir",
                           str(self.tmp / "worker")], self.proxy_cpus, env=env, cwd=ROOT, stdout=log, stderr=log)
        wait_port(VIP_HOST, port)
        return port, proc.pid

    def check(self, port: int):
        """Real requests through the target before measuring it: 200 and the server's answer; then a
        login whose JSESSIONID the target learns, and requests carrying it all reach one server."""
        import http.client
        import ssl

        ctx = ssl.create_default_context(cadata=self.cert_pem)
        ctx.check_hostname = False
        conn = http.client.HTTPSConnection(VIP_HOST, port, context=ctx, timeout=5)
        for target, headers in (("/check", {}), ("/login", {}), ("/check", {"Cookie": COOKIE})):
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or body != b"hello from the server":
                raise RuntimeError(f"port {port} answered {response.status} {body[:100]!r}")
        conn.close()

    def load(self, port: int, pid: int, test: str, duration: float) -> dict:
        connections = self.args.handshake_connections if test == "handshakes" else self.args.connections
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency", "--timeout", "5s"]
        if test == "handshakes":
            argv += ["-H", "Connection: close"]
        elif test == "sticky":
            argv += ["-H", f"Cookie: {COOKIE}"]
        argv.append(f"https://{VIP_HOST}:{port}/small")
        argv[0] = self.wrk_path
        cpu_before = cpu_seconds(pid)
        proc = self.spawn(argv, self.load_cpus, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started = time.monotonic()
        out, _ = proc.communicate(timeout=duration + 30)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(pid) - cpu_before
        return parse_wrk(out, cpu, elapsed)

    def close(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for key in self.redis.scan_iter(match=self.prefix + ":*", count=1000):
            self.redis.delete(key)


def parse_wrk(out: str, cpu: float, elapsed: float) -> dict:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out)
    if not rate or not total:
        raise RuntimeError(f"wrk said:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    requests = int(total.group(1))
    return {
        "rate": float(rate.group(1)),
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "cpu_pct": 100.0 * cpu / elapsed,
        "per_cpu_s": requests / cpu if cpu else float("nan"),
        "errors": (sum(map(int, errors.groups())) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0),
        "requests": requests,
    }


# --- the yardstick: TLS termination and nothing else -----------------------------------------------


def run_forwarder(cert: str, key: str, port: int, host: str, server_port: int):
    """A uvloop TLS terminator that forwards bytes 1:1 to one server: no HTTP parsing, no routing.
    What the same event loop and OpenSSL cost before any layer-7 work (`--yardstick`)."""
    import asyncio
    import ssl

    import uvloop

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    class Server(asyncio.Protocol):
        def __init__(self, client):
            self.client = client

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.client.transport.write(data)

        def connection_lost(self, exc):
            self.client.transport.close()

    class Client(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.server, self.pending = transport, None, []
            self.task = asyncio.get_running_loop().create_task(self.connect())

        async def connect(self):
            _, self.server = await asyncio.get_running_loop().create_connection(lambda: Server(self), host,
                                                                                server_port)
            for data in self.pending:
                self.server.transport.write(data)

        def data_received(self, data):
            if self.server is None:
                self.pending.append(data)
            else:
                self.server.transport.write(data)

        def connection_lost(self, exc):
            if self.server is not None:
                self.server.transport.close()

    async def serve():
        await asyncio.get_running_loop().create_server(Client, VIP_HOST, port, ssl=ctx, backlog=4096)
        await asyncio.Event().wait()

    uvloop.run(serve())


# --- the run ------------------------------------------------------------------------------------


def best_round(results: list[dict]) -> dict:
    """The round with the highest rate (its other figures belong to the same round): on a shared
    machine the least disturbed round is the closest to what the target can do."""
    return max(results, key=lambda r: r["rate"])


def report(summary, rounds, args):
    print()
    print(f"layer 7, TLS terminated, {rounds} rounds of {args.duration:g} s, best round of each target; "
          f"wrk -t1, {args.connections} keep-alive / {args.handshake_connections} handshake connections"
          f"{', proxy pinned to CPU 0, load + backend to CPU 1' if args.pin else ''}")
    header = f"{'test':<28}{'viewlb':>12}{'haproxy':>12}{'ratio':>8}{'target':>8}  result  {'tls-fwd':>8}"
    print(header)
    print("-" * len(header))
    passed = True
    for test, label in TESTS.items():
        v, h = summary[test]["viewlb"], summary[test]["haproxy"]
        ratio = v["rate"] / h["rate"]
        ok = ratio >= TARGET_RATIO and not v["errors"]
        passed &= ok
        fwd = summary[test].get("tls-fwd")
        yardstick = f"{fwd['rate']:>8.0f}" if fwd else ""
        print(f"{label:<28}{v['rate']:>12.0f}{h['rate']:>12.0f}{ratio:>8.2f}{'>= 0.5':>8}  "
              f"{'PASS' if ok else 'FAIL':<6}  {yardstick}")
        print(f"{'  p99 latency (ms)':<28}{v['p99_ms']:>12.2f}{h['p99_ms']:>12.2f}")
        print(f"{'  proxy CPU (% of a core)':<28}{v['cpu_pct']:>12.0f}{h['cpu_pct']:>12.0f}")
        per = v["per_cpu_s"] / h["per_cpu_s"]
        yardstick = f"{'':>16}  {'':<6}  {fwd['per_cpu_s']:>8.0f}" if fwd else ""
        print(f"{'  requests per CPU-second':<28}{v['per_cpu_s']:>12.0f}{h['per_cpu_s']:>12.0f}{per:>8.2f}{yardstick}")
        if v["errors"] or h["errors"]:
            print(f"{'  errors':<28}{v['errors']:>12}{h['errors']:>12}")
    return passed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=3, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=50, help="keep-alive connections")
    parser.add_argument("--handshake-connections", type=int, default=20)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes to CPUs")
    parser.add_argument("--no-yardstick", dest="yardstick", action="store_false",
                        help="skip the bare uvloop TLS forwarder (keep-alive and handshakes)")
    parser.add_argument("--forwarder", nargs=5, metavar=("CERT", "KEY", "PORT", "HOST", "SERVER_PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.forwarder:
        cert, key, port, host, server_port = args.forwarder
        run_forwarder(cert, key, int(port), host, int(server_port))
        return 0
    with tempfile.TemporaryDirectory(prefix="viewlb-bench-l7-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.start_backend()
            targets = {"viewlb": bench.start_viewlb(), "haproxy": bench.start_haproxy()}
            for port, _pid in targets.values():
                bench.check(port)
            if args.yardstick:
                targets["tls-fwd"] = bench.start_forwarder()
            results = {test: {name: [] for name in targets} for test in TESTS}
            for round_ in range(args.rounds):
                for test in results:
                    for name, (port, pid) in targets.items():
                        if name == "tls-fwd" and test == "sticky":
                            continue  # without HTTP it is the same as keep-alive
                        bench.load(port, pid, test, 1.0)  # warm up (connections, caches, pools)
                        result = bench.load(port, pid, test, args.duration)
                        results[test][name].append(result)
                        print(f"round {round_ + 1} {test:<10} {name:<8} {result['rate']:>9.0f}/s "
                              f"p99 {result['p99_ms']:6.2f} ms  cpu {result['cpu_pct']:4.0f}%  "
                              f"errors {result['errors']}", flush=True)
            summary = {test: {name: best_round(runs) for name, runs in by.items() if runs} for test, by in results.items()}
            passed = report(summary, args.rounds, args)
        finally:
            bench.close()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
