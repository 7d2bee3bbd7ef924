"""Layer-4 benchmark: a direct connection, viewlb and HAProxy, measured in the same run.

    .venv/bin/python bench/l4.py [--quick] [--tests keepalive,connect,bulk,latency,idle,apply]
                                 [--rounds N] [--duration S] [--idle N] [--plain] [--compare CHECKOUT]
                                 [--load-policy batch|normal]

Starts, on 127.0.0.0/8 only:
- backends (`l4_backend.py`, one uvloop process, two server hosts 127.77.0.1/.2,
  each with an echo, a one-shot and a streaming port);
- one viewlb worker (`python -m proxyworker`) under a private Redis prefix,
  with three VIPs (round robin, source-IP persistence, 90-minute timeout);
- HAProxy with the same work: `mode tcp`, `nbthread 1`, `balance roundrobin`,
  `stick-table type ip size 1m expire 90m` + `stick on src` (installed with
  apt if missing);
- with `--plain`, the plain 40-line uvloop proxy (`plain_proxy.py`) as a yardstick;
- two load processes (`l4_load.py`); they and the backends stand in for
  clients and servers on other machines, so by default they run SCHED_BATCH
  and never preempt the proxy under test when woken (`--load-policy normal`
  to compete at normal priority; bench/README.md has both).
Each test runs the same load against one target at a time, the targets
interleaved and rotated round after round (the machine is shared); a figure
is the median round, a ratio the median of the rounds' viewlb/HAProxy pairs.
It also reads the CPU time each proxy process used in the measuring window
(CPU per operation is far less sensitive to other load than a rate is).
Then: RSS of each proxy holding N idle connections, and the time from a
config publication to its application on two workers. `--compare` runs the
worker of another checkout too, in the same rounds (A/B of a change).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from proxyworker.config import Keys, Persistence, Pool, RealServer, Snapshot, VirtualService  # noqa: E402

PY = sys.executable
BENCH = Path(__file__).resolve().parent
SERVER_HOSTS = ("127.77.0.1", "127.77.0.2")
VIP_HOST = "127.0.0.1"
KINDS = ("echo", "oneshot", "source")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
LOADERS = 2
THROUGHPUT_TESTS = ("keepalive", "connect", "bulk", "latency")
ALL_TESTS = THROUGHPUT_TESTS + ("idle", "apply")


# --- processes -------------------------------------------------------------------


def raise_file_limit(wanted=65536) -> int:
    """10,000 proxied connections need 20,000 descriptors in the proxy; children inherit this.

    Returns the limit we got: without CAP_SYS_RESOURCE (containers) the hard limit stays.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def max_proxied(file_limit: int) -> int:
    """Connections one proxy process can hold: two descriptors each, plus listeners, Redis, logs."""
    return (file_limit - 100) // 2


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if found:
        return found
    print("haproxy not found: installing it with apt-get", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update", "-q"], check=False, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "haproxy"], check=True, env=env)
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((VIP_HOST, 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection((VIP_HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within {timeout} s")


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` so far (schedstat: nanoseconds on a CPU)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def user_ticks(pid: int) -> int:
    """User-mode CPU of `pid` in clock ticks: the share spent in Python and uvloop, not the kernel."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[11])


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Stack:
    """Every process of the run; `close()` stops them all."""

    def __init__(self, args, workdir: Path):
        self.args, self.workdir = args, workdir
        self.procs: list[subprocess.Popen] = []
        self.pins: dict[int, set[int]] = {}
        self.prefixes: list[str] = []

    def spawn(self, command, log_name: str, pipe=False, cpus=None, cwd=ROOT, load=False, **kwargs) -> subprocess.Popen:
        """Start a process. `load`: it stands in for clients or servers, which in a farm run on other
        machines: with --load-policy batch (the default) it runs SCHED_BATCH, so that waking it never
        preempts the proxy under test (on two shared cores it would, at every request)."""
        log = open(self.workdir / f"{log_name}.log", "wb")
        proc = subprocess.Popen(command, cwd=cwd, stderr=log, stdout=subprocess.PIPE if pipe else log,
                                stdin=subprocess.PIPE if pipe else subprocess.DEVNULL, **kwargs)
        self.procs.append(proc)
        if cpus is not None and self.args.pin:
            os.sched_setaffinity(proc.pid, cpus)
        if load and self.args.load_policy == "batch":
            os.sched_setscheduler(proc.pid, os.SCHED_BATCH, os.sched_param(0))
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        client = redis.Redis.from_url(REDIS_URL)
        for prefix in self.prefixes:
            for key in client.scan_iter(match=prefix + ":*", count=1000):
                client.delete(key)
        client.close()


# --- targets ---------------------------------------------------------------------


class Target:
    def __init__(self, name: str, ports: dict[str, int], pid: int | None, host: str = VIP_HOST):
        self.name, self.ports, self.pid, self.host = name, ports, pid, host


def start_backends(stack: Stack) -> dict[str, list[int]]:
    proc = stack.spawn([PY, str(BENCH / "l4_backend.py"), *SERVER_HOSTS], "backend", pipe=True, cpus={0}, load=True)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("the backend did not start: see its log")
    return json.loads(line)


def viewlb_snapshot(backends, ports, version=1) -> Snapshot:
    persistence = Persistence(method="source_ip", timeout=5400)
    pools, services = [], []
    for kind in KINDS:
        servers = tuple(RealServer(id=f"{kind}/s{i + 1}", name=f"s{i + 1}", address=host, port=backends[kind][i])
                        for i, host in enumerate(SERVER_HOSTS))
        pools.append(Pool(name=kind, servers=servers))
        services.append(VirtualService(name=kind, address=VIP_HOST, port=ports[kind], pool=kind,
                                       scheduler="round_robin", persistence=persistence))
    return Snapshot(version=version, virtual_services=tuple(services), pools=tuple(pools))


def start_viewlb(stack: Stack, backends, worker_id="bench-l4", prefix=None, snapshot=None, cpus=None, cwd=ROOT):
    """One worker process on a snapshot published under a private prefix; returns (proc, ports, keys).

    `cwd`: the checkout whose `proxyworker` package runs (`--compare` runs a second one).
    """
    if prefix is None:
        prefix = f"vlbbench{uuid.uuid4().hex[:8]}"
        stack.prefixes.append(prefix)
    keys = Keys(prefix)
    ports = {kind: free_port() for kind in KINDS}
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    if snapshot is None:
        snapshot = viewlb_snapshot(backends, ports)
        client.set(keys.config, snapshot.to_json())
    env = dict(os.environ, VIEWLB_REDIS_PREFIX=prefix, REDIS_URL=REDIS_URL, LOG_LEVEL="INFO")
    proc = stack.spawn([PY, "-m", "proxyworker", "--id", worker_id, "--state-dir",
                        str(stack.workdir / f"state-{worker_id}")], worker_id, env=env, cpus=cpus, cwd=cwd)
    # A worker under a profiler (valgrind, cProfile) needs longer to start: L4_BENCH_START_TIMEOUT.
    deadline = time.monotonic() + float(os.environ.get("L4_BENCH_START_TIMEOUT", "10"))
    while time.monotonic() < deadline:
        beat = client.get(keys.worker(worker_id))
        if beat and json.loads(beat)["config_version"] == snapshot.version:
            break
        if proc.poll() is not None:
            raise SystemExit(f"viewlb worker exited with {proc.returncode}: see {stack.workdir}/{worker_id}.log")
        time.sleep(0.05)
    else:
        raise SystemExit(f"viewlb worker did not apply the snapshot: see {stack.workdir}/{worker_id}.log")
    client.close()
    return proc, ports, keys


HAPROXY_CONFIG = """\
global
    nbthread 1
    maxconn {maxconn}

defaults
    mode tcp
    maxconn {maxconn}
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    option redispatch
"""


def haproxy_section(kind: str, port: int, backends) -> str:
    servers = "".join(f"    server s{i + 1} {host}:{backends[kind][i]}\n" for i, host in enumerate(SERVER_HOSTS))
    return (f"\nlisten {kind}\n    bind {VIP_HOST}:{port}\n    balance roundrobin\n"
            f"    stick-table type ip size 1m expire 90m\n    stick on src\n{servers}")


def start_haproxy(stack: Stack, backends) -> Target:
    ports = {kind: free_port() for kind in KINDS}
    config = stack.workdir / "haproxy.cfg"
    maxconn = max_proxied(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    config.write_text(HAPROXY_CONFIG.format(maxconn=maxconn) + "".join(haproxy_section(k, ports[k], backends) for k in KINDS))
    proc = stack.spawn([haproxy_binary(), "-db", "-f", str(config)], "haproxy", cpus={1})
    for port in ports.values():
        wait_listening(port, proc, "haproxy")
    return Target("haproxy", ports, proc.pid)


def start_plain(stack: Stack, backends) -> Target:
    ports = {kind: free_port() for kind in KINDS}
    routes = [f"{VIP_HOST}:{ports[k]}=" + ",".join(f"{h}:{backends[k][i]}" for i, h in enumerate(SERVER_HOSTS))
              for k in KINDS]
    proc = stack.spawn([PY, str(BENCH / "plain_proxy.py"), *routes], "plain", cpus={1})
    for port in ports.values():
        wait_listening(port, proc, "plain proxy")
    return Target("plain", ports, proc.pid)


# --- load ------------------------------------------------------------------------


class Loaders:
    """The load processes; a command goes to all of them and every answer is collected."""

    def __init__(self, stack: Stack):
        self.procs = [stack.spawn([PY, str(BENCH / "l4_load.py")], f"load{i}", pipe=True, cpus={0}, load=True)
                      for i in range(LOADERS)]
        for proc in self.procs:
            if not proc.stdout.readline():
                raise SystemExit("a load process did not start: see its log")

    def run(self, commands: list[dict]) -> list[dict]:
        self.send(commands)
        return self.collect()

    def send(self, commands: list[dict]) -> None:
        for proc, command in zip(self.procs, commands, strict=True):
            proc.stdin.write((json.dumps(command) + "\n").encode())
            proc.stdin.flush()

    def collect(self) -> list[dict]:
        answers = [json.loads(proc.stdout.readline() or b'{"failure": "load process died"}') for proc in self.procs]
        for answer in answers:
            if "failure" in answer:
                raise SystemExit(f"load failed: {answer['failure']}")
        return answers


def sources(index: int, count: int = 250) -> list[str]:
    """Client addresses of load process `index`: distinct clients for the persistence tables."""
    return [f"127.78.{index}.{n + 1}" for n in range(count)]


def measure(loaders: Loaders, target: Target, test: str, args) -> dict:
    """One round of `test` against `target`: rate (per second) or latency samples, and proxy CPU."""
    kind = {"keepalive": "echo", "latency": "echo", "connect": "oneshot", "bulk": "source"}[test]
    start = time.time() + 0.1
    base = {"op": test, "addr": [target.host, target.ports[kind]], "start": start,
            "warmup": args.warmup, "duration": args.duration}
    extra = {"keepalive": {"conns": 25}, "bulk": {"conns": 2}, "latency": {"conns": 20, "interval": 0.02},
             "connect": {"concurrency": 16}}[test]
    commands = [dict(base, **extra) for _ in range(LOADERS)]
    if test == "connect":
        for i, command in enumerate(commands):
            command["sources"] = sources(i)
    loaders.send(commands)
    cpu = user = None
    if target.pid:
        time.sleep(max(start + args.warmup - time.time(), 0))
        cpu0, user0 = cpu_ns(target.pid), user_ticks(target.pid)
        time.sleep(max(start + args.warmup + args.duration - time.time(), 0))
        cpu = cpu_ns(target.pid) - cpu0
        user = (user_ticks(target.pid) - user0) * 1e9 / os.sysconf("SC_CLK_TCK")
    answers = loaders.collect()
    if test == "latency":
        samples = sorted(s for a in answers for s in a["samples"])
        return {"samples": samples, "late": sum(a["late"] for a in answers), "cpu": cpu, "user": user,
                "ops": len(samples)}
    count = sum(a["count"] for a in answers)
    errors = sum(a["errors"] for a in answers)
    return {"rate": count / args.duration, "errors": errors, "cpu": cpu, "user": user, "ops": count}


def percentile(values, p):
    if not values:
        return float("nan")
    return values[min(int(len(values) * p / 100), len(values) - 1)]


def run_throughput(loaders, targets, args) -> dict:
    """results[test][target] = list of rounds."""
    tests = [t for t in THROUGHPUT_TESTS if t in args.tests]
    results: dict = {test: {t.name: [] for t in targets} for test in tests}
    for round_no in range(args.rounds):
        for test in results:
            # Rotate the order each round: no target always runs right after the same one.
            shift = round_no % len(targets)
            for target in targets[shift:] + targets[:shift]:
                results[test][target.name].append(measure(loaders, target, test, args))
        print(f"  round {round_no + 1}/{args.rounds} done", flush=True)
    return results


def run_idle(loaders, targets, count: int) -> dict:
    out = {}
    for target in targets:
        if not target.pid:
            continue
        before = rss_kb(target.pid)
        commands = [{"op": "idle_open", "addr": [VIP_HOST, target.ports["echo"]], "conns": count // LOADERS}
                    for _ in range(LOADERS)]
        answers = loaders.run(commands)
        time.sleep(1.0)  # let periodic work (reporting, sweeps) run once with every connection open
        after = rss_kb(target.pid)
        loaders.run([{"op": "idle_close"}] * LOADERS)
        opened = sum(a["opened"] for a in answers)
        per_conn = (after - before) / max(opened, 1)
        out[target.name] = {"opened": opened, "failed": sum(a["failed"] for a in answers),
                            "rss_mb": after / 1024, "per_conn_kb": per_conn,
                            "rss_10k_mb": (before + per_conn * 10_000) / 1024}
        time.sleep(0.5)
    return out


def run_config_apply(stack: Stack, backends, publishes: int) -> dict:
    """Two workers on one prefix; time from SET+PUBLISH of a version to both heartbeats showing it."""
    prefix = f"vlbbench{uuid.uuid4().hex[:8]}"
    stack.prefixes.append(prefix)
    keys = Keys(prefix)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    ports = {kind: free_port() for kind in KINDS}
    extra_port = free_port()
    first = viewlb_snapshot(backends, ports)
    client.set(keys.config, first.to_json())
    ids = ["bench-apply-1", "bench-apply-2"]
    for worker_id in ids:
        start_viewlb(stack, backends, worker_id, prefix, first)
    delays = []
    for version in range(2, publishes + 2):
        snapshot = viewlb_snapshot(backends, ports, version)
        if version % 2 == 0:  # every other version adds a listener, the next removes it: a real diff
            vs = snapshot.virtual_services[0]
            extra = VirtualService(name="extra", address=VIP_HOST, port=extra_port, pool=vs.pool,
                                   persistence=vs.persistence)
            snapshot = Snapshot(version=version, virtual_services=snapshot.virtual_services + (extra,),
                                pools=snapshot.pools)
        text = snapshot.to_json()
        seen: dict[str, float] = {}
        t0 = time.perf_counter()
        client.set(keys.config, text)
        client.publish(keys.config, str(version))
        while len(seen) < len(ids) and time.perf_counter() - t0 < 5:
            beats = client.mget([keys.worker(w) for w in ids])
            now = time.perf_counter()
            for worker_id, beat in zip(ids, beats, strict=True):
                if worker_id not in seen and beat and json.loads(beat)["config_version"] == version:
                    seen[worker_id] = (now - t0) * 1000
            time.sleep(0.0005)
        delays.append(max(seen.values()) if len(seen) == len(ids) else float("inf"))
        time.sleep(0.1)
    client.close()
    return {"delays": sorted(delays)}


# --- report ----------------------------------------------------------------------


def paired_ratio(per_target: dict, key: str) -> float:
    """Median over rounds of viewlb/haproxy within each round: the two ran seconds apart,
    so a disturbance that lasts a while (other work on the machine) touches both."""
    pairs = zip(per_target["viewlb"], per_target["haproxy"], strict=True)
    return statistics.median(v[key] / h[key] for v, h in pairs if h[key])


def summarise(results, idle, apply) -> list[tuple]:
    """Rows: (figure, {target: value}, ratio viewlb/haproxy, target text, pass)."""
    rows = []
    units = {"keepalive": ("keep-alive requests/s", 1), "connect": ("new connections/s (source IP)", 1),
             "bulk": ("bulk MB/s", 1e-6)}
    goals = {"keepalive": 0.9, "connect": 0.6, "bulk": 1.0}
    for test, (label, scale) in units.items():
        if test not in results:
            continue
        values = {name: statistics.median(r["rate"] for r in rounds) * scale for name, rounds in results[test].items()}
        ratio = paired_ratio(results[test], "rate")
        rows.append((label, values, ratio, f">= {goals[test]}x", ratio >= goals[test]))
    if "latency" in results:
        p99 = {name: statistics.median(percentile(r["samples"], 99) for r in rounds)
               for name, rounds in results["latency"].items()}
        rows.append(("p99 latency ms (2000 req/s)", p99, p99["viewlb"] / p99["haproxy"], "(lower is better)", None))
    if "viewlb" in idle:
        mem = {name: v["rss_mb"] for name, v in idle.items()}
        rows.append((f"RSS MB, {idle['viewlb']['opened']} idle conns held", mem, mem["viewlb"] / mem["haproxy"], "", None))
        if idle["viewlb"]["opened"] < 10_000:
            mem = {name: v["rss_10k_mb"] for name, v in idle.items()}
            rows.append(("RSS MB, 10,000 idle conns (extrapolated)", mem, mem["viewlb"] / mem["haproxy"],
                         "<= 200 MB", mem["viewlb"] <= 200))
        else:
            rows[-1] = rows[-1][:3] + ("<= 200 MB", mem["viewlb"] <= 200)
        per = {name: v["per_conn_kb"] for name, v in idle.items()}
        rows.append(("RSS KB per idle conn", per, per["viewlb"] / per["haproxy"], "", None))
    if apply:
        worst = max(apply["delays"])
        rows.append((f"config applied on 2 workers, ms (max of {len(apply['delays'])})", {"viewlb": worst},
                     None, "<= 100 ms", worst <= 100))
        rows.append(("  same, median ms", {"viewlb": statistics.median(apply["delays"])}, None, "", None))
    return rows


def cpu_rows(results) -> list[tuple]:
    rows = []
    for test, label in (("keepalive", "CPU us per keep-alive request"), ("connect", "CPU us per new connection"),
                        ("bulk", "CPU us per MB (bulk)")):
        if test not in results:
            continue
        scale = 1e6 if test == "bulk" else 1
        for key, suffix in (("cpu", ""), ("user", ", user mode")):
            values = {}
            for name, rounds in results[test].items():
                per = [r[key] / 1000 / max(r["ops"], 1) * scale for r in rounds if r[key] is not None]
                if per:
                    values[name] = statistics.median(per)
            rows.append((label + suffix, values, values["viewlb"] / values["haproxy"], "", None))
    return rows


def fmt(value) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def print_table(rows, names) -> None:
    header = ["figure", *names, "viewlb/haproxy", "target", "result"]
    lines = [header]
    for label, values, ratio, goal, ok in rows:
        lines.append([label, *(fmt(values.get(n)) for n in names), f"{ratio:.2f}x" if ratio else "-", goal,
                      "-" if ok is None else ("PASS" if ok else "FAIL")])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(line, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one round per test (< 1 min)")
    parser.add_argument("--rounds", type=int, help="rounds per test (default 6, quick 1)")
    parser.add_argument("--duration", type=float, default=1.0, help="measuring window per round, s (default 1)")
    parser.add_argument("--warmup", type=float, default=0.4, help="seconds before each window")
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections for the memory figure")
    parser.add_argument("--publishes", type=int, default=20, help="config versions for the apply latency")
    parser.add_argument("--plain", action="store_true", help="also measure the plain uvloop proxy of the issue (plain_proxy.py)")
    parser.add_argument("--tests", default=",".join(ALL_TESTS),
                        help=f"comma-separated subset of {','.join(ALL_TESTS)} (default: all)")
    parser.add_argument("--compare", type=Path, metavar="CHECKOUT", action="append", default=[],
                        help="also run the proxyworker package of another checkout (target 'candidateN'; repeatable)")
    parser.add_argument("--load-policy", choices=("batch", "normal"), default="batch",
                        help="scheduling of the load and backend processes: batch (default; they never preempt "
                             "the proxy when woken, as clients and servers on other machines would not) or normal")
    parser.add_argument("--pin", action="store_true",
                        help="pin the proxies to CPU 1 and the load and backends to CPU 0")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 6)
    args.tests = args.tests.split(",")
    unknown = set(args.tests) - set(ALL_TESTS)
    if unknown:
        parser.error(f"unknown tests: {', '.join(sorted(unknown))}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    file_limit = raise_file_limit()
    if args.idle > max_proxied(file_limit):
        print(f"open-file limit {file_limit} (hard, cannot be raised here): holding {max_proxied(file_limit)} "
              f"idle connections instead of {args.idle}, the 10,000 figure is extrapolated", flush=True)
        args.idle = max_proxied(file_limit)
    workdir = Path(tempfile.mkdtemp(prefix="l4-bench-"))
    stack = Stack(args, workdir)
    began = time.monotonic()
    try:
        backends = start_backends(stack)
        # "direct" talks to the first server host itself.
        direct = Target("direct", {kind: backends[kind][0] for kind in KINDS}, None, SERVER_HOSTS[0])
        proc, ports, _ = start_viewlb(stack, backends, cpus={1})
        viewlb = Target("viewlb", ports, proc.pid)
        haproxy = start_haproxy(stack, backends)
        targets = [direct, viewlb, haproxy] + ([start_plain(stack, backends)] if args.plain else [])
        for i, checkout in enumerate(args.compare, 1):
            name = f"candidate{i}"
            proc, ports, _ = start_viewlb(stack, backends, f"bench-l4-{name}", cpus={1}, cwd=checkout)
            targets.append(Target(name, ports, proc.pid))
        loaders = Loaders(stack)
        print(f"l4 benchmark: {os.cpu_count()} CPUs, load and backends {args.load_policy.upper()}, "
              f"load average {os.getloadavg()[0]:.1f}, "
              f"{args.rounds} round(s) of {args.duration} s, logs in {workdir}", flush=True)
        results = run_throughput(loaders, targets, args)
        idle = run_idle(loaders, targets, args.idle) if "idle" in args.tests else {}
        apply = run_config_apply(stack, backends, args.publishes) if "apply" in args.tests else None
    finally:
        stack.close()
    names = [t.name for t in targets]
    raw = {"results": results, "idle": idle, "apply": apply}
    (workdir / "results.json").write_text(json.dumps(raw))
    print()
    print_table(summarise(results, idle, apply), names)
    print()
    print_table(cpu_rows(results), [n for n in names if n != "direct"])
    errors = {f"{test}/{name}": sum(r.get("errors", 0) for r in rounds)
              for test, per in results.items() for name, rounds in per.items()}
    failed = {k: v for k, v in errors.items() if v}
    print(f"\nclient errors: {failed or 'none'}; idle: "
          + ", ".join(f"{n} {v['opened']} held/{v['failed']} failed" for n, v in idle.items()))
    print(f"took {time.monotonic() - began:.0f} s; load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
