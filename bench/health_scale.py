"""Does health checking keep up at scale? N real servers, a real Celery worker and beat.

    .venv/bin/python bench/health_scale.py [--servers 500] [--interval 2] [--duration 30]
                                           [--kind http|https|tcp] [--pool threads] [--concurrency 8]

Starts N tiny listeners on 127.0.0.1 (one process, asyncio), publishes a
snapshot with them (pools of 50, one health check), starts `celery worker`
and `celery beat` as the Procfile does, and samples every server's last check
record in Redis. Lateness = time checked - time due; it includes the probe
itself. Prints percentiles, checks done versus expected, the longest gap
between two checks of one server, and the CPU the worker and beat used.
Everything runs under its own Redis prefix and a throwaway SQLite database.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxyworker.config import HealthCheck, Keys, Pool, RealServer, Snapshot  # noqa: E402

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: image/x-icon\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
POOL_SIZE = 50


# --- the servers: `health_scale.py --serve N [--tls CERT KEY]` ------------------


async def serve(count: int, hang: int, tls: tuple[str, str] | None):
    import ssl

    context = None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)

    async def hang_up(reader, writer):
        await reader.read()  # never answer: the checker's timeout ends it
        writer.close()

    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(hang_up if i < hang else handle, "127.0.0.1", 0, ssl=context, backlog=64)
               for i in range(count)]
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    await asyncio.Event().wait()


# --- the run --------------------------------------------------------------------


def main():
    args = parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.hang, args.tls))
        return
    prefix = f"vlbbench{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="health-bench-"))
    env = dict(os.environ, VIEWLB_REDIS_PREFIX=prefix, DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
               PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    procs = []
    try:
        ports, listeners = start_listeners(args, workdir)
        procs.append(listeners)
        client = redis_client()
        keys = Keys(prefix)
        snapshot = build_snapshot(ports, args)
        client.set(keys.config, snapshot.to_json())
        celery = start_celery(args, env, workdir, prefix)
        procs += celery.values()
        print(f"{args.servers} {args.kind} servers ({args.hang} hanging), interval {args.interval:g} s, "
              f"timeout {args.timeout:g} s, celery --pool {args.pool} -c {args.concurrency}, warming up ...", flush=True)
        wait_all_checked(client, keys, args.servers, timeout=30)
        cpu_before = {name: cpu_seconds(p.pid) for name, p in celery.items()}
        samples, elapsed = sample(client, keys, args.duration)
        cpu = {name: cpu_seconds(p.pid) - cpu_before[name] for name, p in celery.items()}
        report(args, samples, elapsed, cpu)
    finally:
        for proc in reversed(procs):
            stop(proc)
        cleanup(prefix)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=500)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured after warm-up")
    parser.add_argument("--kind", choices=["http", "https", "tcp"], default="http")
    parser.add_argument("--pool", default="threads", help="celery worker pool: threads or prefork")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--hang", type=int, default=0, help="this many servers accept and never answer")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tls", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args()


def start_listeners(args, workdir):
    command = [sys.executable, __file__, "--serve", str(args.servers), "--hang", str(args.hang)]
    if args.kind == "https":
        command += ["--tls", *self_signed(workdir)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    ports = json.loads(proc.stdout.readline())
    return ports, proc


def self_signed(workdir):
    sys.path.insert(0, str(ROOT))
    from tests.monitoring.servers import self_signed as make

    return [str(p) for p in make(workdir)]


def build_snapshot(ports, args) -> Snapshot:
    check = HealthCheck(type=args.kind, interval=args.interval, timeout=args.timeout, rise=2, fall=3)
    pools = []
    for start in range(0, len(ports), POOL_SIZE):
        name = f"bench{start // POOL_SIZE}"
        servers = tuple(RealServer(id=f"{name}/s{i}", name=f"s{i}", address="127.0.0.1", port=port)
                        for i, port in enumerate(ports[start : start + POOL_SIZE]))
        pools.append(Pool(name=name, servers=servers, health_check=check))
    return Snapshot(version=1, pools=tuple(pools), author="bench")


def start_celery(args, env, workdir, prefix):
    common = [sys.executable, "-m", "celery", "-A", "viewlb_site"]
    worker = subprocess.Popen(
        common + ["worker", "--pool", args.pool, "--concurrency", str(args.concurrency), "--queues",
                  f"{prefix}:celery", "--without-gossip", "--without-mingle", "--without-heartbeat",
                  "--loglevel", "WARNING"],
        cwd=ROOT, env=env, stdout=open(workdir / "worker.log", "wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    beat = subprocess.Popen(
        common + ["beat", "--schedule", str(workdir / "beat"), "--loglevel", "WARNING"],
        cwd=ROOT, env=env, stdout=open(workdir / "beat.log", "wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    return {"worker": worker, "beat": beat}


def redis_client():
    import redis

    return redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), decode_responses=True)


def wait_all_checked(client, keys, count, timeout):
    deadline = time.monotonic() + timeout
    while sum(1 for raw in client.hvals(keys.health_detail) if json.loads(raw).get("checked_at")) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"not every server was checked within {timeout} s: the checker cannot keep up")
        time.sleep(0.2)


def sample(client, keys, duration):
    """Every check record seen during `duration`: (id, checked_at, due_at, answered)."""
    seen: dict[tuple[str, float], tuple[float, bool]] = {}
    started = time.time()
    while time.time() - started < duration:
        for sid, raw in client.hgetall(keys.health_detail).items():
            record = json.loads(raw)
            if record.get("checked_at") and record["checked_at"] >= started and record.get("due_at"):
                seen[(sid, record["checked_at"])] = (record["due_at"], record["outcome"] != "fail")
        time.sleep(0.2)
    return [(sid, at, due, answered) for (sid, at), (due, answered) in seen.items()], time.time() - started


def cpu_seconds(pid) -> float:
    """utime + stime of a process and its children that are still alive (prefork / beat children)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (FileNotFoundError, IndexError):
            pass
    return total


def children(pid):
    try:
        direct = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    return [int(c) for c in direct] + [g for c in direct for g in children(int(c))]


def report(args, samples, elapsed, cpu):
    by_server: dict[str, list[float]] = {}
    for sid, at, _due, _answered in samples:
        by_server.setdefault(sid, []).append(at)
    gaps = [b - a for times in by_server.values() for a, b in zip(sorted(times), sorted(times)[1:], strict=False)]
    expected = args.servers * elapsed / args.interval

    print(f"measured {elapsed:.0f} s: {len(samples)} checks, expected ~{expected:.0f} "
          f"({len(samples) / expected:.1%}), servers seen {len(by_server)}/{args.servers}")
    answered = [s for s in samples if s[3]]
    print_lateness("lateness ms (servers that answered)", answered)
    if len(answered) < len(samples):
        print_lateness("lateness ms (all, a hang counts its timeout)", samples)
    print(f"longest gap between two checks of one server: {max(gaps):.2f} s (interval {args.interval:g} s)")
    print("cpu, % of one core: " + ", ".join(f"{name} {100 * s / elapsed:.0f}%" for name, s in cpu.items()))


def print_lateness(title, samples):
    late = sorted((at - due) * 1000 for _sid, at, due, _answered in samples)

    def pct(p):
        return late[min(len(late) - 1, int(p / 100 * len(late)))]

    print(f"{title}: p50 {pct(50):.0f}  p90 {pct(90):.0f}  p99 {pct(99):.0f}  max {late[-1]:.0f}  "
          f"mean {statistics.fmean(late):.0f}")


def stop(proc):
    if proc.poll() is not None:
        return
    own_group = os.getpgid(proc.pid) == proc.pid  # celery: end the worker and its pool children together
    try:
        if own_group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def cleanup(prefix):
    client = redis_client()
    for key in client.scan_iter(match=prefix + "*", count=1000):
        client.delete(key)


if __name__ == "__main__":
    main()
