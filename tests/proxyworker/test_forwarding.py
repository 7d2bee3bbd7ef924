"""Layer-4 forwarding end to end: a real worker process, real backends, real Redis."""
import asyncio
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from channels_redis.core import RedisChannelLayer

from tests.backends import blackhole, new_host, start_backend
from tests.conftest import REDIS_URL, free_port
from tests.proxyworker.harness import (
    ROOT,
    ask,
    closed_by_peer,
    connect,
    pool,
    read_line,
    recv_exact,
    server,
    service,
    source_ip,
    wait_for,
)

pytestmark = [
    pytest.mark.xdist_group("proxyworker-forwarding"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:channels_redis"),
]


@pytest.fixture(scope="module")
def backends():
    started = [start_backend(f"s{i}") for i in (1, 2, 3)]
    yield started
    for backend in started:
        backend.stop()


@pytest.fixture(scope="module")
def worker(harness):
    worker = harness.start_worker()
    yield worker
    assert worker.stop() == 0
    worker.assert_clean_log()


@pytest.fixture
def vip(harness, backends, worker):
    """Publish one VIP over the module's backends and return its port."""

    def publish(pool_name="p", servers=None, **options):
        port = free_port()
        servers = servers or [server(pool_name, b) for b in backends]
        harness.apply([service(f"vs{port}", port, pool_name, **options)], [pool(pool_name, *servers)])
        return port

    return publish


def test_it_rotates_round_robin_over_real_connections(vip):
    port = vip(scheduler="round_robin")
    seen = [ask(port) for _ in range(9)]
    assert Counter(seen) == {"s1": 3, "s2": 3, "s3": 3}
    assert seen[0:3] == seen[3:6] == seen[6:9]  # a rotation, not a random spread


def test_it_weights_weighted_round_robin(vip, backends):
    servers = [server("wp", backends[0], weight=3), server("wp", backends[1], weight=1)]
    port = vip("wp", servers, scheduler="weighted_round_robin")
    assert Counter(ask(port) for _ in range(8)) == {"s1": 6, "s2": 2}


def test_it_sends_new_clients_to_the_least_connected_server(vip, backends):
    port = vip("lp", [server("lp", b) for b in backends[:2]], scheduler="least_connections")
    held = [connect(port) for _ in range(4)]
    more = []
    try:
        names = [read_line(sock) for sock in held]
        assert Counter(names) == {"s1": 2, "s2": 2}
        for sock, name in zip(held, names, strict=True):
            if name == "s1":
                sock.close()
        # The close travels client -> worker -> backend and back; the worker counts it last.
        wait_for(lambda: backends[0].open_connections == 0, 3, message="s1's connections closed")
        time.sleep(0.1)
        more = [connect(port) for _ in range(2)]
        assert [read_line(sock) for sock in more] == ["s1", "s1"]  # round robin would give s1, s2
    finally:
        for sock in held + more:
            sock.close()


def test_it_keeps_backups_for_when_no_primary_is_up(harness, vip, worker, backends):
    servers = [server("fa", backends[0]), server("fa", backends[1]), server("fa", backends[2], backup=True)]
    port = vip("fa", servers, scheduler="first_available")
    assert {ask(port) for _ in range(4)} == {"s1"}
    harness.set_admin("fa/s1", "disabled")
    worker.wait_server_state("fa/s1", "disabled")
    assert {ask(port) for _ in range(4)} == {"s2"}
    harness.set_health("fa/s2", "down")
    worker.wait_server_state("fa/s2", "down")
    assert {ask(port) for _ in range(4)} == {"s3"}  # the backup, only now
    harness.set_admin("fa/s1", "enabled")
    worker.wait_server_state("fa/s1", "up")
    assert {ask(port) for _ in range(4)} == {"s1"}


def test_it_half_closes_in_both_directions(vip):
    port = vip()
    with connect(port) as sock:
        assert read_line(sock)
        payload = os.urandom(200_000)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # client done sending; the server may still answer
        assert recv_exact(sock, len(payload)) == payload
        assert sock.recv(1) == b""  # and then the server's own EOF comes through


def test_it_refuses_connections_beyond_max_connections(vip, worker, opened):
    port = vip(max_connections=2)
    first, second = opened(connect(port)), opened(connect(port))
    assert read_line(first) and read_line(second)
    third = opened(connect(port))
    assert read_line(third) == ""  # closed without reaching a server
    first.close()
    wait_for(lambda: ask(port), 3, message="a free slot once a connection closed")
    second.close()
    third.close()


def test_it_closes_idle_connections_but_not_busy_ones(vip, opened):
    port = vip(idle_timeout=1.0)
    idle, busy = opened(connect(port)), opened(connect(port))
    assert read_line(idle) and read_line(busy)
    started = time.monotonic()
    while time.monotonic() - started < 2.6:
        busy.sendall(b"ping")
        assert recv_exact(busy, 4) == b"ping"
        time.sleep(0.3)
    assert closed_by_peer(idle, timeout=0.5)
    busy.sendall(b"still")
    assert recv_exact(busy, 5) == b"still"
    idle.close()
    busy.close()


def test_it_redispatches_when_a_server_is_killed(harness, worker):
    procs = []
    for name in ("k1", "k2"):
        host = new_host()
        proc = subprocess.Popen([sys.executable, "-m", "tests.backends", "--name", name, "--listen", f"{host}:0"],
                                cwd=ROOT, stdout=subprocess.PIPE, text=True)
        port = int(proc.stdout.readline().split()[1])
        procs.append((proc, type("B", (), {"name": name, "host": host, "port": port})))
    try:
        vip_port = free_port()
        before = worker.heartbeat()["counters"]["redispatches"]
        harness.apply([service("killed", vip_port, "kp")], [pool("kp", *(server("kp", b) for _, b in procs))])
        assert Counter(ask(vip_port) for _ in range(4)) == {"k1": 2, "k2": 2}
        procs[0][0].kill()
        procs[0][0].wait()
        answers = [ask(vip_port) for _ in range(20)]
        assert answers == ["k2"] * 20  # zero failed client connections
        wait_for(lambda: worker.heartbeat()["counters"]["redispatches"] > before, 3, message="redispatch counted")
    finally:
        for proc, _ in procs:
            proc.kill()
            proc.wait()


def test_it_redispatches_when_a_server_connect_times_out(vip, backends):
    listener, fillers, port = blackhole()
    try:
        hanging = type("B", (), {"name": "hang", "host": listener.getsockname()[0], "port": port})
        vip_port = vip("tp", [server("tp", hanging), server("tp", backends[0])], scheduler="first_available",
                       connect_timeout=0.3)
        started = time.monotonic()
        assert ask(vip_port) == "s1"
        assert 0.25 < time.monotonic() - started < 2.0  # waited for the timeout, then went on at once
    finally:
        for sock in [listener, *fillers]:
            sock.close()


def test_it_is_not_disturbed_by_broken_clients(vip, worker, opened):
    port = vip()
    good = opened(connect(port))
    assert read_line(good)
    errors = []

    def keep_talking():
        try:
            for i in range(40):
                message = f"message {i}".encode()
                good.sendall(message)
                if recv_exact(good, len(message)) != message:
                    errors.append(i)
                time.sleep(0.02)
        except OSError as exc:
            errors.append(exc)

    talker = threading.Thread(target=keep_talking)
    talker.start()
    linger_rst = struct.pack("ii", 1, 0)
    half_open = []
    for i in range(30):
        sock = connect(port)
        kind = i % 3
        if kind == 0:  # reset at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_rst)
            sock.close()
        elif kind == 1:  # garbage, then reset mid-stream
            sock.sendall(os.urandom(random.randint(1, 50_000)))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_rst)
            sock.close()
        else:  # half-open: says nothing more and never reads
            sock.shutdown(socket.SHUT_WR)
            half_open.append(opened(sock))
    talker.join()
    assert errors == []
    assert ask(port)  # new clients are still served
    for sock in half_open:
        sock.close()
    good.close()
    worker.check_alive()
    wait_for(lambda: worker.heartbeat()["counters"]["active"] == 0, 4, message="every session accounted for")
    worker.assert_clean_log()


def test_it_stops_reading_a_client_whose_answers_are_not_read(vip, worker, opened):
    port = vip()
    rss_before = _rss(worker.proc.pid)
    sock = opened(connect(port))
    assert read_line(sock)
    sock.setblocking(False)
    chunk, sent = b"x" * 65536, 0
    while sent < 256 * 2**20:
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            break
    grown = _rss(worker.proc.pid) - rss_before
    print(f"accepted {sent / 2**20:.1f} MiB before blocking; worker grew {grown / 2**20:.1f} MiB")
    assert sent < 160 * 2**20, "the worker kept reading: no back-pressure"
    assert grown < 24 * 2**20
    sock.setblocking(True)
    sock.settimeout(5)
    assert recv_exact(sock, sent) == chunk * (sent // len(chunk)) + chunk[: sent % len(chunk)]
    sock.close()


def _rss(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_it_reports_heartbeat_sessions_and_stats(harness, vip, worker):
    port = vip("rp", scheduler="round_robin", persistence=source_ip())
    keys = harness.keys

    async def scenario():
        layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=keys.channels_prefix)
        channel = await layer.new_channel()
        await layer.group_add("sessions", channel)
        await layer.group_add("stats", channel)
        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(None, connect, port)
        name = await loop.run_in_executor(None, read_line, sock)
        opened = closed = stats = released = None
        deadline = loop.time() + 5
        while loop.time() < deadline and not (opened and closed and stats and released):
            message = await asyncio.wait_for(layer.receive(channel), deadline - loop.time())
            if message["type"] == "sessions.batch":
                if opened is None:
                    opened = next((s for s in message["opened"] if s["vs"] == f"vs{port}"), None)
                    if opened:  # the live-sessions hash has it too, then the client leaves
                        hashed = harness.redis.hget(keys.sessions(worker.id), opened["id"])
                        assert json.loads(hashed)["server"] == opened["server"]
                        sock.close()
                if opened:
                    closed = closed or next((c for c in message["closed"] if c["id"] == opened["id"]), None)
            elif message["type"] == "stats.batch" and message["services"].get(f"vs{port}", {}).get("total"):
                stats = stats or message
                if closed and message["servers"][f"rp/{name}"]["active"] == 0:
                    released = message
        await layer.close_pools()
        return name, opened, closed, stats, released

    name, opened, closed, stats, released = asyncio.run(scenario())
    assert released, "the server's active count returns to zero"
    assert opened and opened["server"] == f"rp/{name}" and opened["client_key"] == "127.0.0.1"
    assert opened["id"].startswith(worker.id + ":") and opened["protocol"] == "tcp" and opened["port"] == port
    assert closed and closed["bytes_out"] == len(name) + 1  # the greeting line
    assert stats["worker"] == worker.id and stats["servers"][f"rp/{name}"]["total"] >= 1
    beat = worker.heartbeat()
    assert beat["config_version"] == harness.version and beat["pid"] == worker.proc.pid
    assert any(item["port"] == port for item in beat["listeners"])
    assert harness.redis.ttl(harness.keys.worker(worker.id)) > 0
    wait_for(lambda: not harness.redis.hexists(keys.sessions(worker.id), opened["id"]), 2, message="session removed")


def test_it_forwards_udp_flows_with_persistence(harness, worker):
    udp = [start_backend(f"u{i}", udp=True) for i in (1, 2)]
    try:
        port = free_port(kind=socket.SOCK_DGRAM)
        harness.apply([service("udpvip", port, "up", protocol="udp", persistence=source_ip(), idle_timeout=1.0)],
                      [pool("up", *(server("up", b) for b in udp))])
        answers = {}
        for client_ip in ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"):
            for _flow in range(3):  # three flows (source ports) per client address
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.bind((client_ip, 0))
                    sock.settimeout(2)
                    for n in range(3):
                        sock.sendto(f"hello {n}".encode(), ("127.0.0.1", port))
                        name, _, echoed = sock.recv(100).decode().partition("|")
                        assert echoed == f"hello {n}"
                        answers.setdefault(client_ip, set()).add(name)
        assert all(len(names) == 1 for names in answers.values()), answers  # each client stays put
        assert {next(iter(n)) for n in answers.values()} == {"u1", "u2"}  # and clients spread

        def udp_sessions():
            live = harness.redis.hvals(harness.keys.sessions(worker.id))
            return [s for s in map(json.loads, live) if s["vs"] == "udpvip"]

        assert wait_for(udp_sessions, 2, message="udp flows listed as sessions")[0]["protocol"] == "udp"
        wait_for(lambda: not udp_sessions(), 4, message="idle udp flows to end")
    finally:
        for backend in udp:
            backend.stop()


def test_it_redispatches_a_udp_flow_away_from_a_closed_port(harness, worker):
    live = start_backend("alive", udp=True)
    closed_port = free_port(live.host, kind=socket.SOCK_DGRAM)
    dead = type("B", (), {"name": "dead", "host": live.host, "port": closed_port})
    try:
        port = free_port(kind=socket.SOCK_DGRAM)
        harness.apply([service("udpfail", port, "uf", protocol="udp", scheduler="first_available")],
                      [pool("uf", server("uf", dead), server("uf", live))])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.3)

            def answer():  # datagrams sent before the redispatch are lost, as UDP allows
                sock.sendto(b"hello", ("127.0.0.1", port))
                try:
                    return sock.recv(100)
                except TimeoutError:
                    return None

            assert wait_for(answer, 4, interval=0) == b"alive|hello"
            assert answer() == b"alive|hello"
    finally:
        live.stop()
