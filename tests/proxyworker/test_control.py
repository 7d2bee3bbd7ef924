"""Session control end to end: the console's kill (and move) of one Horizon session.

Two real worker processes share every VIP (SO_REUSEPORT), so one client's
connections are spread over both and a kill must reach both. The test plays
the console's part of contracts7: DELETE (kill) or SET (move) the persistence
entry, then PUBLISH a `ControlMessage` on `Keys.control`.
"""
import json
import re
import socket
import ssl

import pytest

from proxyworker.messages import parse_control
from proxyworker.persistence import PersistenceTable
from tests.l7.stack import INSECURE, PORTAL, L7Stack, PlainBackends, certificate, l7_service, read_head
from tests.proxyworker.harness import closed_by_peer, recv_exact, wait_for
from tests.proxyworker.horizon import GROUP, Farm, sessions

pytestmark = pytest.mark.xdist_group("proxyworker-control")

CHANNELS = ("443/tcp", "8443/udp", "4172/tcp")


@pytest.fixture(scope="module")
def farm():
    started = Farm(hosts=3, channels=CHANNELS)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def workers(harness, farm):
    pair = [harness.start_worker(), harness.start_worker()]
    harness.apply(*farm.config())
    yield pair
    for worker in pair:
        assert worker.stop() == 0
        worker.assert_clean_log()


@pytest.mark.parametrize("text, reason", [
    ("nope", "not JSON"),
    (None, "not JSON"),
    ("[]", "not a JSON object"),
    ('{"group": "g", "client_key": "k", "by": "u"}', "unknown type None"),
    ('{"type": "session.move", "group": "g", "client_key": "k", "by": "u"}', "unknown type 'session.move'"),
    ('{"type": "session.kill", "client_key": "k", "by": "u"}', "group must be a string"),
    ('{"type": "session.kill", "group": "g", "client_key": 1, "by": "u"}', "client_key must be a string"),
    ('{"type": "session.kill", "group": "g", "client_key": "k"}', "by must be a string"),
    ('{"type": "session.kill", "group": "", "client_key": "k", "by": "u"}', "group must not be empty"),
])
def test_it_says_what_is_wrong_with_a_control_message(text, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_control(text)


def test_it_reads_a_kill_message():
    text = '{"type": "session.kill", "group": "g", "client_key": "10.0.0.0/24", "by": "ops", "extra": 1}'
    assert parse_control(text) == {"type": "session.kill", "group": "g", "client_key": "10.0.0.0/24", "by": "ops"}


def test_it_forgets_an_entry_and_its_pending_refresh():
    table = PersistenceTable()
    table.remember("g", "k", "h1", ttl=600, now=0.0, confirmed=False)  # not yet in Redis: queued
    table.remember("g", "other", "h2", ttl=600, now=0.0, confirmed=False)
    assert table.forget("g", "k") is True
    assert table.lookup("g", "k", 1.0) == (None, False)
    assert [item[1] for item in table.take_dirty()] == ["other"]  # the refresh must not recreate it
    assert table.forget("g", "k") is False


def kill(harness, client_key, group=GROUP, by="tester"):
    harness.redis.publish(harness.keys.control, json.dumps(
        {"type": "session.kill", "group": group, "client_key": client_key, "by": by}))


def horizon_session(farm, harness, workers, opened, client):
    """One client's Horizon session: TCP 443 connections on both workers, a UDP 8443 flow, TCP 4172."""
    tcp, hosts = [], set()
    for _ in range(24):  # SO_REUSEPORT spreads connections by source port: open until both workers have one
        sock, host = farm.tcp("443/tcp", client)
        tcp.append(opened(sock))
        hosts.add(host)
        if len(tcp) >= 2 and len({s["worker"] for s in sessions(harness, workers, client)}) == 2:
            break
    flow = opened(farm.udp(client))
    hosts.add(farm.ask_udp(flow, "8443/udp"))
    sock, host = farm.tcp("4172/tcp", client)
    tcp.append(opened(sock))
    hosts.add(host)
    assert len(hosts) == 1, f"{client}'s channels must follow its 443 host: {hosts}"
    count = len(tcp) + 1
    listed = wait_for(lambda: len(found := sessions(harness, workers, client)) == count and found, 3,
                      message=f"{count} sessions of {client} listed")
    assert {s["worker"] for s in listed} == {w.id for w in workers}, "the session spans both workers"
    assert {s["group"] for s in listed} == {GROUP}
    return tcp, flow, hosts.pop()


def closed_counts(worker, client) -> int:
    pattern = re.compile(rf"session\.kill by tester: group {GROUP}, client {re.escape(client)}: (\d+) closed")
    return sum(int(n) for n in pattern.findall(worker.log_path.read_text()))


def test_it_kills_one_horizon_session_on_every_worker_and_channel(harness, farm, workers, opened):
    victim, bystander = "127.0.41.1", "127.0.41.2"
    tcp, flow, host = horizon_session(farm, harness, workers, opened, victim)
    other_tcp, other_flow, _ = horizon_session(farm, harness, workers, opened, bystander)
    other_ids = {s["id"] for s in sessions(harness, workers, bystander)}
    before = sum(closed_counts(w, victim) for w in workers)

    harness.redis.delete(harness.keys.persist(GROUP, victim))  # the console's part: entry first
    kill(harness, victim)

    assert all(closed_by_peer(sock, 3) for sock in tcp), "every TCP channel of the victim sees EOF or a reset"
    wait_for(lambda: not sessions(harness, workers, victim), 3, message="the victim's sessions (UDP too) gone")
    wait_for(lambda: sum(closed_counts(w, victim) for w in workers) - before == len(tcp) + 1, 3,
             message="both workers to log what they closed")
    assert all(closed_counts(w, victim) > 0 for w in workers), "the kill reached both workers"
    # The bystander keeps everything: same sessions, bytes still flow.
    assert {s["id"] for s in sessions(harness, workers, bystander)} == other_ids
    for sock in other_tcp:
        sock.sendall(b"still here")
        assert recv_exact(sock, 10) == b"still here"
    assert farm.ask_udp(other_flow, "8443/udp")
    # The victim's next datagram opens a new flow (the old one is gone), and it follows the new 443 session.
    fresh, new_host = farm.tcp("443/tcp", victim)
    opened(fresh)
    assert farm.ask_udp(flow, "8443/udp") == new_host


def test_it_moves_a_session_to_the_host_the_console_chose(harness, farm, workers, opened):
    client = "127.0.42.1"
    tcp, flow, host = horizon_session(farm, harness, workers, opened, client)
    target = next(name for name in farm.hosts if name != host)
    # Move: the console re-points the shared entry, then kills. Each worker must forget its local
    # (trusted, seconds old) entry, or the client's reconnects would return to the old host.
    harness.redis.set(harness.keys.persist(GROUP, client), farm.hosts[target], ex=600)
    kill(harness, client)
    assert all(closed_by_peer(sock, 3) for sock in tcp)
    wait_for(lambda: not sessions(harness, workers, client), 3, message="the moved client's sessions gone")
    for _ in range(6):  # new connections land on both workers; each one reaches the new host on every channel
        sock, reached = farm.tcp("443/tcp", client)
        opened(sock)
        assert reached == target
        sock, reached = farm.tcp("4172/tcp", client)
        opened(sock)
        assert reached == target
    assert farm.ask_udp(flow, "8443/udp") == target
    assert harness.redis.get(harness.keys.persist(GROUP, client)) == farm.hosts[target]


def test_it_ignores_malformed_control_messages(harness, farm, workers, opened):
    client = "127.0.43.1"
    tcp, flow, _ = horizon_session(farm, harness, workers, opened, client)
    ids = {s["id"] for s in sessions(harness, workers, client)}
    for bad in ("not json", "[1, 2]", json.dumps({"type": "session.kill"}),
                json.dumps({"type": "session.explode", "group": GROUP, "client_key": client, "by": "x"}),
                json.dumps({"type": "session.kill", "group": GROUP, "client_key": 5, "by": "x"}),
                json.dumps({"type": "session.kill", "group": GROUP, "client_key": "", "by": "x"})):
        harness.redis.publish(harness.keys.control, bad)
    kill(harness, client, group="another-group")  # well-formed, but not this client's group
    wait_for(lambda: all(w.log_path.read_text().count("control message ignored") >= 6 for w in workers), 3,
             message="both workers to log the malformed messages")
    for sock in tcp:
        assert not closed_by_peer(sock, 0.05)
        sock.sendall(b"fine")
        assert recv_exact(sock, 4) == b"fine"
    assert farm.ask_udp(flow, "8443/udp")
    assert {s["id"] for s in sessions(harness, workers, client)} == ids
    # The link to the control plane is alive: a good message after the bad ones still works.
    kill(harness, client)
    assert all(closed_by_peer(sock, 3) for sock in tcp)
    for worker in workers:
        worker.check_alive()


def _https_from(port: int, source: str) -> ssl.SSLSocket:
    """A TLS connection to the VIP from `source`, after one exchange (so it is routed and counted)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=3, source_address=(source, 0))
    sock = INSECURE.wrap_socket(raw, server_hostname=PORTAL)
    sock.sendall(f"HEAD / HTTP/1.1\r\nHost: {PORTAL}\r\n\r\n".encode())
    status, headers, _ = read_head(sock, bytearray())
    assert status == 200
    return sock


def _tls_closed(sock: ssl.SSLSocket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def test_it_kills_layer7_connections_too(tmp_path, opened):
    """443 terminated at layer 7 (source-IP persistence in the Horizon group): the kill cuts them as well."""
    stack, web = L7Stack("control7", tmp_path), PlainBackends("web1", "web2")
    try:
        cert, _ = certificate("portal", PORTAL, PORTAL)
        vs = l7_service("portal", "pweb", method="source_ip", backend_tls=False, persistence_group=GROUP)
        stack.publish([vs], [web.pool("pweb")], [cert])
        victim = [opened(_https_from(vs.port, "127.0.44.1")) for _ in range(2)]
        bystander = opened(_https_from(vs.port, "127.0.44.2"))
        listed = wait_for(lambda: len(found := sessions(stack.harness, stack.workers)) == 3 and found, 3,
                          message="three layer-7 sessions listed")
        assert {s["client_key"] for s in listed} == {"127.0.44.1", "127.0.44.2"}
        assert {s["group"] for s in listed} == {GROUP}
        kill(stack.harness, "127.0.44.1")
        assert all(_tls_closed(sock, 3) for sock in victim)
        assert not _tls_closed(bystander, 0.1)
        bystander.sendall(f"HEAD /again HTTP/1.1\r\nHost: {PORTAL}\r\n\r\n".encode())
        assert read_head(bystander, bytearray())[0] == 200
        wait_for(lambda: [s["client_key"] for s in sessions(stack.harness, stack.workers)] == ["127.0.44.2"], 3,
                 message="only the bystander's session listed")
        worker = stack.worker
        bystander.close()  # a TLS close waits for the client's close_notify: no client, no quick stop
        assert "session.kill by tester: group horizon, client 127.0.44.1: 2 closed" in worker.log()
        assert worker.stop() == 0
        worker.assert_clean_log()
    finally:
        stack.close()
        web.close()
