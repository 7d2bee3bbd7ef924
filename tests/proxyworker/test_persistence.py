"""Source-IP persistence end to end, through TWO worker processes sharing each VIP (SO_REUSEPORT).

Clients come from distinct loopback addresses (127.0.x.y), backends live on
distinct loopback hosts, so "same server" and "same host" are observable.
"""
import socket
import time
from collections import Counter, defaultdict

import pytest

from tests.backends import new_host, start_backend
from tests.conftest import free_port
from tests.proxyworker.harness import ask, connect, pool, read_line, recv_exact, server, service, source_ip, wait_for

pytestmark = pytest.mark.xdist_group("proxyworker-persistence")

HOSTS = 3


@pytest.fixture(scope="module")
def hosts():
    """Three server hosts, each with a backend on two ports: 'h1a' and 'h1b' share h1's address."""
    started = {}
    for i in range(1, HOSTS + 1):
        host = new_host()
        started[f"h{i}"] = (start_backend(f"h{i}a", host), start_backend(f"h{i}b", host))
    yield started
    for pair in started.values():
        for backend in pair:
            backend.stop()


@pytest.fixture(scope="module")
def workers(harness):
    pair = [harness.start_worker(), harness.start_worker()]
    yield pair
    for worker in pair:
        assert worker.stop() == 0
        worker.assert_clean_log()


def publish_vip(harness, hosts, side="a", name=None, pool_name=None, **options):
    port = free_port(options.get("address", "127.0.0.1"))
    pool_name = pool_name or f"pool{port}"
    servers = [server(pool_name, pair[0 if side == "a" else 1]) for pair in hosts.values()]
    vs = service(name or f"vs{port}", port, pool_name, **options)
    return port, vs, pool(pool_name, *servers)


def clients(block: int, count: int):
    return [f"127.0.{block}.{i}" for i in range(1, count + 1)]


def test_it_sticks_each_client_address_to_one_server_across_workers(harness, hosts, workers):
    port, vs, p = publish_vip(harness, hosts, persistence=source_ip())
    harness.apply([vs], [p])
    before = [w.heartbeat()["counters"]["connections"] for w in workers]
    reached = defaultdict(list)
    for _round in range(4):  # each connection has a new source port, so SO_REUSEPORT spreads them
        for client in clients(11, 12):
            reached[client].append(ask(port, source=client))
    assert all(len(set(names)) == 1 for names in reached.values()), dict(reached)
    assert len({names[0] for names in reached.values()}) == HOSTS  # and clients are balanced

    def both_served():  # heartbeats come every 2 s
        return all(w.heartbeat()["counters"]["connections"] > b for w, b in zip(workers, before, strict=True))

    wait_for(both_served, 5, message="both workers to have served some of the clients")
    for client, names in reached.items():  # the shared entry holds the server's host address
        host = hosts[names[0][:-1]][0].host
        assert harness.redis.get(harness.keys.persist(vs.group, client)) == host
        assert 0 < harness.redis.ttl(harness.keys.persist(vs.group, client)) <= 600


def test_it_groups_clients_by_ipv4_netmask(harness, hosts, workers):
    port, vs, p = publish_vip(harness, hosts, persistence=source_ip(ipv4_mask=24))
    harness.apply([vs], [p])
    by_network = {}
    for block in (21, 22, 23, 24):
        names = {ask(port, source=client) for client in clients(block, 6)}
        assert len(names) == 1, f"127.0.{block}.0/24 was split over {names}"
        by_network[block] = names.pop()
        assert harness.redis.get(harness.keys.persist(vs.group, f"127.0.{block}.0/24"))
    assert len(set(by_network.values())) > 1  # different networks still spread


def test_it_sticks_ipv6_clients(harness, hosts, workers):
    port, vs, p = publish_vip(harness, hosts, address="::1", persistence=source_ip())
    harness.apply([vs], [p])
    names = {ask(port, host="::1") for _ in range(8)}
    assert len(names) == 1
    assert harness.redis.get(harness.keys.persist(vs.group, "::1")) == hosts[names.pop()[:-1]][0].host


def test_it_follows_a_client_across_ports_in_one_group(harness, hosts, workers):
    options = dict(persistence=source_ip(), persistence_group="horizon")
    port_a, vs_a, pool_a = publish_vip(harness, hosts, "a", **options)
    port_b, vs_b, pool_b = publish_vip(harness, hosts, "b", **options)
    harness.apply([vs_a, vs_b], [pool_a, pool_b])
    first_a = {c: ask(port_a, source=c) for c in clients(31, 9)}  # phase 1 on one port ...
    first_b = {c: ask(port_b, source=c) for c in clients(32, 9)}  # ... or the other one first
    for client, name in first_a.items():
        assert ask(port_b, source=client) == name[:-1] + "b"  # same host on the other port
    for client, name in first_b.items():
        assert ask(port_a, source=client) == name[:-1] + "a"
    assert len({name[:-1] for name in first_a.values()}) > 1


def test_it_keeps_stuck_clients_on_a_draining_server_and_sends_it_no_new_ones(harness, hosts, workers, opened):
    port, vs, p = publish_vip(harness, hosts, persistence=source_ip())
    harness.apply([vs], [p])
    stuck = {c: ask(port, source=c) for c in clients(41, 9)}
    drained = Counter(stuck.values()).most_common(1)[0][0]
    drained_id = f"{p.name}/{drained}"
    live = opened(connect(port, source=next(c for c, n in stuck.items() if n == drained)))
    assert read_line(live) == drained
    harness.set_admin(drained_id, "drain")
    for worker in workers:
        worker.wait_server_state(drained_id, "drain")
    for client, name in stuck.items():
        assert ask(port, source=client) == name  # its clients keep going there
    newcomers = [ask(port, source=c) for c in clients(42, 12)]
    assert drained not in newcomers
    live.sendall(b"still here")
    assert recv_exact(live, 10) == b"still here"  # and its established connection is untouched
    live.close()


def test_it_moves_clients_of_a_down_server_and_every_worker_agrees(harness, hosts, workers):
    port, vs, p = publish_vip(harness, hosts, persistence=source_ip())
    harness.apply([vs], [p])
    stuck = {c: ask(port, source=c) for c in clients(51, 9)}
    victim = Counter(stuck.values()).most_common(1)[0][0]
    harness.set_health(f"{p.name}/{victim}", "down")
    for worker in workers:
        worker.wait_server_state(f"{p.name}/{victim}", "down")
    for client, name in stuck.items():
        answers = {ask(port, source=client) for _ in range(4)}  # through both workers
        assert len(answers) == 1 and (victim not in answers)
        if name != victim:
            assert answers == {name}  # the others stay where they are
        else:
            host = hosts[answers.pop()[:-1]][0].host
            assert harness.redis.get(harness.keys.persist(vs.group, client)) == host


def test_it_spreads_clients_without_persistence(harness, hosts, workers):
    port, vs, p = publish_vip(harness, hosts)
    harness.apply([vs], [p])
    answers = [ask(port, source="127.0.61.1") for _ in range(12)]
    assert len(set(answers)) == HOSTS
    assert not list(harness.redis.scan_iter(match=harness.keys.persist_pattern(vs.group)))


def test_it_listens_on_ipv6_and_ipv4_separately(harness, hosts, workers):
    port = free_port("::1")
    with socket.socket(socket.AF_INET) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            pytest.skip("port taken on IPv4")
    p = pool("dual", server("dual", hosts["h1"][0]))
    harness.apply([service("v6", port, "dual", address="::1"), service("v4", port, "dual")], [p])
    assert ask(port, host="::1") == "h1a"
    assert ask(port, host="127.0.0.1") == "h1a"


def test_it_keeps_entries_of_active_clients_and_lets_idle_ones_expire(harness, hosts, workers, opened):
    port, vs, p = publish_vip(harness, hosts, persistence=source_ip(timeout=3))
    harness.apply([vs], [p])
    busy, idle = "127.0.71.1", "127.0.71.2"
    sock = opened(connect(port, source=busy))
    name = read_line(sock)
    assert ask(port, source=idle)
    started = time.monotonic()
    while time.monotonic() - started < 4.5:  # longer than the timeout, with traffic all along
        sock.sendall(b"tick")
        assert recv_exact(sock, 4) == b"tick"
        time.sleep(0.25)
    assert harness.redis.ttl(harness.keys.persist(vs.group, busy)) > 0  # refreshed by activity
    assert harness.redis.get(harness.keys.persist(vs.group, idle)) is None  # expired
    assert ask(port, source=busy) == name
    sock.close()
