"""Config life cycle end to end: hitless reloads, the disk copy, Redis outages, graceful stop."""
import asyncio
import json
import random
import socket
import threading
import time

import pytest

from proxyworker.config import Keys, Snapshot
from tests.backends import start_backend
from tests.conftest import free_port
from tests.proxyworker.harness import (
    Harness,
    ask,
    closed_by_peer,
    connect,
    pool,
    private_redis,
    read_line,
    recv_exact,
    server,
    service,
    source_ip,
    wait_for,
)

pytestmark = pytest.mark.xdist_group("proxyworker-lifecycle")


@pytest.fixture(scope="module")
def backends():
    started = [start_backend(f"s{i}") for i in (1, 2, 3)]
    yield started
    for backend in started:
        backend.stop()


@pytest.fixture
def solo(request, tmp_path):
    """A harness of this test's own, so the module's worker does not serve its VIPs too."""
    h = Harness(request.node.name.removeprefix("test_it_")[:20], tmp_path)
    yield h
    h.close()


@pytest.fixture(scope="module")
def worker(harness):
    worker = harness.start_worker()
    yield worker
    assert worker.stop() == 0
    worker.assert_clean_log()


async def _stream(port: int, stop: threading.Event, seed: int) -> tuple[int, int]:
    """Send varied chunks and check every echoed byte until told to stop; returns (sent, received)."""
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    sent = received = 0
    while not stop.is_set():
        chunk = rng.randbytes(rng.randint(1, 16_384))
        writer.write(chunk)
        sent += len(chunk)
        echoed = await reader.readexactly(len(chunk))
        assert echoed == chunk, f"stream {seed} corrupted after {received} bytes"
        received += len(echoed)
        await asyncio.sleep(rng.uniform(0, 0.03))
    writer.write_eof()
    assert await reader.read() == b""  # the clean end: the server's EOF after ours
    writer.close()
    return sent, received


def test_it_keeps_200_streams_whole_through_20_config_changes(harness, backends, worker):
    port, spare_port = free_port(), free_port()
    servers = [server("st", b) for b in backends]
    vs = service("stream", port, "st")
    harness.apply([vs], [pool("st", *servers)])
    stop, started = threading.Event(), threading.Event()
    results = []

    async def clients():
        tasks = [asyncio.create_task(_stream(port, stop, seed)) for seed in range(200)]
        await asyncio.sleep(0.3)
        started.set()
        results.extend(await asyncio.gather(*tasks, return_exceptions=True))

    thread = threading.Thread(target=lambda: asyncio.run(clients()))
    thread.start()
    assert started.wait(10)
    variants = [
        lambda: ([vs], [pool("st", *servers)]),
        lambda: ([vs.__class__(**{**vs.__dict__, "scheduler": "least_connections"})], [pool("st", *servers)]),
        lambda: ([vs], [pool("st", *servers[:1])]),  # two of the servers leave the pool
        lambda: ([vs, service("spare", spare_port, "st")], [pool("st", *servers)]),  # a listener opens
        lambda: ([service("spare", spare_port, "st")], [pool("st", *servers)]),  # the streams' listener closes
        lambda: ([vs.__class__(**{**vs.__dict__, "persistence": source_ip(), "idle_timeout": 60.0})],
                 [pool("st", *servers[1:])]),
    ]
    try:
        for i in range(20):
            harness.apply(*variants[i % len(variants)]())
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert len(results) == 200
    assert all(sent == received > 0 for sent, received in results)


def test_it_applies_new_pools_to_new_connections_only(harness, backends, worker, opened):
    port = free_port()
    harness.apply([service("moving", port, "mp")], [pool("mp", server("mp", backends[0]))])
    old = opened(connect(port))
    assert read_line(old) == "s1"
    harness.apply([service("moving", port, "mp")], [pool("mp", server("mp", backends[1]))])
    assert ask(port) == "s2"
    harness.apply([], [pool("mp", server("mp", backends[1]))])  # the VIP is gone ...
    wait_for(lambda: _refused(port), 2, message="listener closed")
    old.sendall(b"still mine")
    assert recv_exact(old, 10) == b"still mine"  # ... its established connection is not
    old.close()


def _refused(port, host="127.0.0.1"):
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_it_ignores_an_invalid_snapshot_and_keeps_serving(harness, backends, worker):
    port = free_port()
    version = harness.apply([service("keep", port, "kp")], [pool("kp", server("kp", backends[0]))])
    rejected = worker.heartbeat()["counters"]["config_rejected"]
    worker.expect_error("invalid config snapshot")
    harness.version += 1
    harness.publish_json("{not json")
    wait_for(lambda: worker.heartbeat()["counters"]["config_rejected"] == rejected + 1, 3, message="not JSON")
    harness.version += 1
    broken = json.loads(Snapshot(version=harness.version).to_json())
    broken["virtual_services"] = [{"name": "x", "address": "127.0.0.1", "port": 99999, "pool": "kp"}]
    harness.publish_json(json.dumps(broken))
    wait_for(lambda: worker.heartbeat()["counters"]["config_rejected"] == rejected + 2, 3, message="bad port")
    assert worker.heartbeat()["config_version"] == version
    assert ask(port) == "s1"
    assert "invalid config snapshot" in worker.log() and "virtual_services[0].port" in worker.log()
    harness.apply([service("keep", port, "kp")], [pool("kp", server("kp", backends[1]))])
    assert ask(port) == "s2"


def _publish(client, keys, version, services, pools):
    snapshot = Snapshot(version=version, virtual_services=tuple(services), pools=tuple(pools))
    client.set(keys.config, snapshot.to_json())
    client.publish(keys.config, str(version))


def test_it_starts_from_its_disk_copy_and_resyncs_when_redis_returns(harness, backends):
    redis_port, port_a, port_b = free_port(), free_port(), free_port()
    keys = Keys(harness.prefix)
    url = f"redis://127.0.0.1:{redis_port}/0"
    pools = [pool("dp", server("dp", backends[0]))]
    with private_redis(redis_port) as client:
        _publish(client, keys, 7, [service("disk", port_a, "dp")], pools)
        first = harness.start_worker("disk-1", REDIS_URL=url)
        wait_for(lambda: client.get(keys.worker(first.id)), 5, message="first worker up")
        assert ask(port_a) == "s1"
        assert first.stop() == 0
    assert json.loads((first.state_dir / "config.json").read_text())["version"] == 7

    # Redis is gone: a new worker with the same state dir serves the saved version.
    second = harness.start_worker("disk-2", state_dir=first.state_dir, REDIS_URL=url)
    wait_for(lambda: not _refused(port_a), 5, message="worker serving from disk")
    assert ask(port_a) == "s1"
    assert "applied from disk" in second.log()

    with private_redis(redis_port) as client:  # Redis returns (empty): the worker resyncs
        _publish(client, keys, 8, [service("disk", port_a, "dp"), service("more", port_b, "dp")], pools)
        wait_for(lambda: not _refused(port_b), 6, message="version 8 applied after resync")
        wait_for(lambda: json.loads(client.get(keys.worker(second.id)) or "{}").get("config_version") == 8, 3,
                 message="heartbeat after resync")
        live = connect(port_b)
        assert read_line(live) == "s1"
    # And Redis goes away again: service continues, established connections too.
    assert ask(port_a) == "s1" and ask(port_b) == "s1"
    live.sendall(b"outage")
    assert recv_exact(live, 6) == b"outage"
    live.close()
    assert second.stop() == 0


def test_it_lets_connections_finish_on_sigterm(solo, backends):
    harness = solo
    port = free_port()
    version = harness.publish([service("term", port, "tp")], [pool("tp", server("tp", backends[0]))])
    stopping = harness.start_worker("term-1", wait_version=version, VIEWLB_DRAIN_SECONDS=10)
    running = connect(port)
    assert read_line(running) == "s1"
    stopping.terminate()
    wait_for(lambda: _refused(port), 3, message="no new connections after SIGTERM")
    for i in range(3):
        running.sendall(b"work %d" % i)
        assert recv_exact(running, 6) == b"work %d" % i
        time.sleep(0.1)
    assert stopping.proc.poll() is None  # still waiting for the running connection
    running.close()
    assert stopping.proc.wait(3) == 0  # exits once it finished, long before the deadline
    assert harness.redis.get(harness.keys.worker(stopping.id)) is None


def test_it_cuts_connections_at_the_drain_deadline(solo, backends):
    harness = solo
    port = free_port()
    version = harness.publish([service("deadline", port, "dl")], [pool("dl", server("dl", backends[0]))])
    stopping = harness.start_worker("term-2", wait_version=version, VIEWLB_DRAIN_SECONDS=1)
    lingering = connect(port)
    assert read_line(lingering) == "s1"
    started = time.monotonic()
    stopping.terminate()
    assert stopping.proc.wait(5) == 0
    assert 0.9 < time.monotonic() - started < 4
    assert closed_by_peer(lingering, 1)
    lingering.close()


def test_it_retries_a_listener_that_could_not_open(harness, backends, worker):
    port = free_port()
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))  # no SO_REUSEPORT: the worker cannot share it
    squatter.listen(1)
    worker.expect_error("could not open")
    version = harness.apply([service("late", port, "lt")], [pool("lt", server("lt", backends[2]))])
    assert worker.heartbeat()["config_version"] == version
    assert "could not open" in worker.log()
    squatter.close()
    wait_for(lambda: not _refused(port), 8, message="the listener opened once the port was free")
    assert ask(port) == "s3"
