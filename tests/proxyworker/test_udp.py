"""UDP virtual services end to end: real worker processes, real UDP and TCP servers, real Redis.

What Blast (8443/udp) and PCoIP (4172/udp) need: datagrams echoed whole and
in order, a client's UDP flows on the host its TCP 443 session reached (two
workers share every VIP, so following goes through the shared persistence
entry), idle flows expiring after the VIP's idle timeout, and a bounded queue
per flow while its server is being chosen.
"""
import json
import socket
import time

import pytest

from proxyworker.config import Keys, Snapshot
from proxyworker.server import UDP_PENDING_MAX
from tests.backends import start_backend
from tests.conftest import REDIS_URL, free_port
from tests.proxyworker.harness import pool, private_redis, server, service, source_ip, wait_for
from tests.proxyworker.horizon import GROUP, Farm, sessions

pytestmark = pytest.mark.xdist_group("proxyworker-udp")

CHANNELS = ("443/tcp", "8443/udp", "4172/udp")


@pytest.fixture(scope="module")
def farm():
    started = Farm(hosts=3, channels=CHANNELS)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def echo():
    """A lone UDP echo server, for VIPs outside the farm."""
    backend = start_backend("echo", udp=True)
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def workers(harness, farm, echo):
    pair = [harness.start_worker(), harness.start_worker()]
    services, pools = farm.config()
    harness.echo_port, harness.idle_port = free_port(kind=socket.SOCK_DGRAM), free_port(kind=socket.SOCK_DGRAM)
    services += [service("echo", harness.echo_port, "pecho", protocol="udp"),
                 service("idle", harness.idle_port, "pecho", protocol="udp", idle_timeout=1.0)]
    pools.append(pool("pecho", server("pecho", echo)))
    harness.apply(services, pools)
    yield pair
    for worker in pair:
        assert worker.stop() == 0
        worker.assert_clean_log()


def udp_client(source="127.0.0.1", timeout=2.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.settimeout(timeout)
    return sock


def flow_of(harness, workers, sock, vs) -> list[dict]:
    """The session(s) listed for this client socket's flow on VIP `vs`."""
    host, port = sock.getsockname()
    client = f"{host}:{port}"
    return [s for s in sessions(harness, workers) if s["vs"] == vs and s["client"] == client]


def test_it_echoes_datagrams_whole_and_in_order(harness, workers):
    sizes = [1, 100, 1400, 8000, 60000] + [64] * 195  # up to nearly the largest UDP payload
    with udp_client() as sock:
        for n, size in enumerate(sizes):
            payload = (b"%05d" % n + b"x" * size)[:size]
            sock.sendto(payload, ("127.0.0.1", harness.echo_port))
            assert sock.recv(65536) == b"echo|" + payload
        entry = wait_for(lambda: [s for s in flow_of(harness, workers, sock, "echo") if s["bytes_in"] == sum(sizes)],
                         4, message="the flow's byte counts in the sessions hash")[0]
        assert entry["protocol"] == "udp" and entry["port"] == harness.echo_port
        assert entry["bytes_out"] == sum(sizes) + len(b"echo|") * len(sizes)
        assert entry["server"] == "pecho/echo" and entry["client_key"] == "127.0.0.1"


def test_udp_flows_follow_the_tcp_443_host_across_workers(harness, farm, workers, opened):
    reached = {}
    for i in range(1, 9):
        client = f"127.0.51.{i}"
        tcp_first = i % 2 == 1  # half the clients begin with TCP 443, half with a UDP channel
        hosts = []
        if tcp_first:
            sock, host = farm.tcp("443/tcp", client)
            opened(sock)
            hosts.append(host)
        for channel in ("8443/udp", "4172/udp"):
            for _flow in range(2):  # two source ports per channel: flows land on either worker
                with farm.udp(client) as sock:
                    hosts += [farm.ask_udp(sock, channel, b"hello %d" % n) for n in range(3)]
        if not tcp_first:
            sock, host = farm.tcp("443/tcp", client)
            opened(sock)
            hosts.append(host)
        assert len(set(hosts)) == 1, f"{client} reached {hosts}"
        reached[client] = hosts[0]
        assert harness.redis.get(harness.keys.persist(GROUP, client)) == farm.hosts[hosts[0]]
    assert len(set(reached.values())) > 1, "clients were spread over the hosts (else following proves nothing)"


def test_udp_flows_are_listed_like_tcp_sessions(harness, farm, workers, opened):
    client = "127.0.52.1"
    tcp, host = farm.tcp("443/tcp", client)
    opened(tcp)
    flows = [opened(farm.udp(client)) for _ in range(6)]
    for sock in flows:
        farm.ask_udp(sock, "8443/udp")

    def listed():
        found = sessions(harness, workers, client)
        return found if sum(s["protocol"] == "udp" for s in found) == len(flows) else None

    found = wait_for(listed, 3, message="the client's UDP flows in the sessions hashes")
    udp = [s for s in found if s["protocol"] == "udp"]
    assert {s["group"] for s in found} == {GROUP} and {s["client_key"] for s in found} == {client}
    assert {s["server_address"].rsplit(":", 1)[0] for s in found} == {farm.hosts[host]}
    assert {s["port"] for s in udp} == {farm.ports["8443/udp"]} and {s["vs"] for s in udp} == {"vs8443udp"}
    assert {s["worker"] for s in udp} == {w.id for w in workers}, "six flows, spread over both workers"


def test_an_idle_flow_expires_and_the_next_datagram_opens_a_new_one(harness, workers):
    vip = ("127.0.0.1", harness.idle_port)
    with udp_client() as sock:
        sock.sendto(b"one", vip)
        assert sock.recv(100) == b"echo|one"
        first = wait_for(lambda: flow_of(harness, workers, sock, "idle"), 2, message="the flow listed")[0]["id"]
        for n in range(8):  # active for 2.4 s, over twice the idle timeout: it stays the same flow
            time.sleep(0.3)
            sock.sendto(b"more %d" % n, vip)
            assert sock.recv(100) == b"echo|more %d" % n
        assert [s["id"] for s in flow_of(harness, workers, sock, "idle")] == [first]
        quiet = time.monotonic()
        wait_for(lambda: not flow_of(harness, workers, sock, "idle"), 4, message="the idle flow to expire")
        assert time.monotonic() - quiet >= 0.9, "not before the idle timeout"
        sock.sendto(b"again", vip)
        assert sock.recv(100) == b"echo|again"
        second = wait_for(lambda: flow_of(harness, workers, sock, "idle"), 2, message="a new flow listed")
        assert second[0]["id"] != first


def test_a_flow_queues_at_most_udp_pending_max_datagrams_while_its_server_is_chosen(harness, echo):
    """Redis paused: the flow waits for the persistence claim (then decides locally); what comes
    meanwhile is queued up to UDP_PENDING_MAX datagrams and the rest dropped, not buffered."""
    redis_port, port = free_port(), free_port(kind=socket.SOCK_DGRAM)
    keys = Keys(harness.prefix)
    snapshot = Snapshot(version=1, virtual_services=(
        service("bounded", port, "pb", protocol="udp", persistence=source_ip()),), pools=(pool("pb", server("pb", echo)),))
    with private_redis(redis_port) as client:
        client.set(keys.config, snapshot.to_json())
        worker = harness.start_worker("udp-bounded", REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
        wait_for(lambda: json.loads(client.get(keys.worker(worker.id)) or "{}").get("config_version") == 1, 5,
                 message="the worker on the private Redis")
        burst = UDP_PENDING_MAX + 36  # small enough for the socket buffers: only the flow's bound drops
        with udp_client("127.0.53.1", timeout=1.5) as sock:
            client.execute_command("CLIENT", "PAUSE", 1500)
            for n in range(burst):
                sock.sendto(b"%03d" % n, ("127.0.0.1", port))
            answers = []
            try:
                while True:
                    answers.append(sock.recv(100))
            except TimeoutError:
                pass
            assert answers == [b"echo|%03d" % n for n in range(UDP_PENDING_MAX)]
            wait_for(lambda: client.ping(), 3, message="redis back")
            sock.sendto(b"after", ("127.0.0.1", port))
            assert sock.recv(100) == b"echo|after"

            def counted():
                for raw in client.hvals(keys.sessions(worker.id)):
                    entry = json.loads(raw)
                    if entry["bytes_in"] == 3 * UDP_PENDING_MAX + 5:  # dropped datagrams are not counted
                        return entry
                return None

            wait_for(counted, 5, message="the flow's bytes_in without the dropped datagrams")
            wait_for(lambda: json.loads(client.get(keys.worker(worker.id)))["counters"]["udp_dropped"] == burst
                     - UDP_PENDING_MAX, 5, message="the drops counted in the heartbeat")
        assert worker.stop() == 0
    assert "redis unreachable" in worker.log()  # the claim timed out: decided locally
    worker.assert_clean_log()


def test_a_full_socket_pauses_the_flow_and_datagrams_are_dropped_not_queued(harness, echo, tmp_path):
    """Past the high-water mark of its queue towards the server (or towards the clients) the event loop
    pauses the flow (`pause_writing`), which then drops datagrams in that direction until `resume_writing`.
    Loopback never fills a socket's send buffer, so this drives an in-process worker (real sockets, real
    Redis) and makes the transport's calls itself."""
    import asyncio

    import redis.asyncio as aioredis

    from proxyworker.reporting import Reporter
    from proxyworker.worker import Settings, Worker

    port = free_port(kind=socket.SOCK_DGRAM)
    snapshot = Snapshot(version=1, virtual_services=(service("paused", port, "pp", protocol="udp"),),
                        pools=(pool("pp", server("pp", echo)),))

    async def scenario():
        worker = Worker(Settings(worker_id="udp-pause", prefix=harness.prefix, state_dir=tmp_path))
        worker.loop = loop = asyncio.get_running_loop()
        worker.redis = aioredis.from_url(REDIS_URL, decode_responses=True)
        worker.shared.attach(worker.redis)
        worker.reporter = Reporter(worker)
        await worker.apply(snapshot, "test")
        listener = next(iter(worker.listeners.values()))
        client = udp_client()
        client.setblocking(False)
        vip = ("127.0.0.1", port)

        async def ask(payload) -> bytes | None:
            client.sendto(payload, vip)
            try:
                async with asyncio.timeout(0.5):
                    return await loop.sock_recv(client, 100)
            except TimeoutError:
                return None

        assert await ask(b"one") == b"echo|one"
        flow = listener.flows[client.getsockname()]
        flow.pause_writing()  # the socket towards the server is full
        assert await ask(b"two") is None
        flow.resume_writing()
        assert await ask(b"three") == b"echo|three"
        listener.pause_writing()  # the socket towards the clients is full
        assert await ask(b"four") is None
        listener.resume_writing()
        assert await ask(b"five") == b"echo|five"
        dropped, bytes_in, bytes_out = worker.totals["udp_dropped"], flow.bytes_in, flow.bytes_out
        client.close()
        listener.close()
        await worker.reporter.close()
        await worker.redis.aclose()
        return dropped, bytes_in, bytes_out

    dropped, bytes_in, bytes_out = asyncio.run(scenario())
    assert dropped == 2
    assert bytes_in == len(b"one" b"three" b"four" b"five")  # "two" never went to the server
    assert bytes_out == len(b"echo|one" b"echo|three" b"echo|five")  # "echo|four" never went to the client
