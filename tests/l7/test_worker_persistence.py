"""Layer 7 through a real worker, real TLS and simulated Horizon servers: cookie persistence.

Every client connects from 127.0.0.1 unless a test says otherwise, so source-IP
persistence could not tell them apart: only the cookie can.
"""
import base64
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from demo import broker
from demo.websocket import FrameDecoder, accept_key, encode_frame
from proxyworker.l7.cookies import cookie_key
from tests.proxyworker.harness import wait_for

from .stack import (
    HorizonClient,
    L7Stack,
    PlainBackends,
    certificate,
    https,
    l7_service,
    read_head,
    read_line,
    read_until_closed,
    request,
    sim_pool,
    start_sims,
    stop_sims,
    tls_socket,
)

pytestmark = pytest.mark.xdist_group("l7-worker-persistence")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("l7persist")
    sims = start_sims(tmp / "certs", 3)
    plain = PlainBackends("p1", "p2")
    l7 = L7Stack("l7persist", tmp, workers=2)  # two workers on every VIP (SO_REUSEPORT) share one store
    portal, _ = certificate("portal", "view.example.com")
    services = [
        l7_service("learn", "uags", persistence_group="horizon"),
        l7_service("fallback", "uags", method="cookie_source_ip", persistence_group="horizon"),
        l7_service("insert", "uags", method="cookie_insert"),
        l7_service("insert-plain", "plain", method="cookie_insert", backend_tls=False),
        l7_service("ws-idle", "uags", idle_timeout=2.0),
    ]
    l7.publish(services, [sim_pool("uags", sims), plain.pool("plain")], [portal])
    l7.sims = {s["name"]: s for s in sims}
    l7.plain = plain
    yield l7
    for worker in l7.workers:
        worker.assert_clean_log()
    l7.close()
    plain.close()
    stop_sims(sims)


def persisted(stack, group="horizon"):
    """Redis persistence entries of a group: client key -> server host."""
    redis, keys = stack.harness.redis, stack.harness.keys
    prefix = keys.persist(group, "")
    return {key.removeprefix(prefix): redis.get(key)
            for key in redis.scan_iter(match=keys.persist_pattern(group), count=1000)}


def horizon_visit(port, user):
    """Phase 1 on two connections, the tunnel, and a request after it: the servers seen at each step."""
    client = HorizonClient(port, user)
    client.log_in()
    assert client.desktops() == []  # NOT_AUTHENTICATED here would mean another server got the cookie
    status, sock, buffer = client.tunnel()
    try:
        assert status == 101, status
        greeting = read_line(sock, buffer).split()
        sock.sendall(b"ping " + user.encode() + b"\n")
        echo = read_line(sock, buffer)
    finally:
        sock.close()
    assert greeting[0] == "TUNNEL" and greeting[2] == user and echo == f"ping {user}"
    assert client.desktops() == []
    return client, greeting[1]


def test_fifty_clients_behind_one_address_each_stay_on_the_server_that_issued_their_cookie(stack):
    port = stack.port("learn")
    with ThreadPoolExecutor(10) as pool:
        visits = list(pool.map(lambda n: horizon_visit(port, f"user{n:02d}"), range(50)))
    issued = {}
    for client, tunnel_server in visits:
        assert len(set(client.servers)) == 1, client.servers  # every request, on every connection
        assert tunnel_server == client.servers[0]
        issued[client.cookie] = client.servers[0]
    spread = {name: list(issued.values()).count(name) for name in stack.sims}
    assert sum(1 for count in spread.values() if count >= 5) >= 2, spread
    # shared in Redis under a digest of the cookie (never the session id itself), pointing at the server host
    entries = persisted(stack)
    for cookie, server in issued.items():
        assert entries[cookie_key(cookie.encode())] == stack.sims[server]["address"]
    assert not any(cookie in key for key in entries for cookie in issued)
    # both workers took part: a cookie learned by one was honoured by the other
    wait_for(lambda: all(w.heartbeat()["counters"]["connections"] >= 20 for w in stack.workers), 5,
             message="both workers to report their connections")


def test_a_cookie_another_server_issued_is_refused_by_that_server_so_routing_really_follows_it(stack):
    port = stack.port("learn")
    alice = HorizonClient(port, "alice")
    alice.log_in()
    # Forget the cookie in the proxy's view: a request whose cookie nobody knows is balanced, and
    # the simulators answer NOT_AUTHENTICATED to sessions they did not issue.
    stranger = HorizonClient(port, "stranger")
    stranger.cookie = "0123456789ABCDEF0123456789ABCDEF"
    answers = {tuple(stranger.desktops()) for _ in range(6)}
    assert answers == {("NOT_AUTHENTICATED",)}
    assert len(set(stranger.servers)) >= 2  # balanced round robin (per worker), not stuck anywhere
    assert cookie_key(stranger.cookie.encode()) not in persisted(stack)  # an invented cookie is not stored


def test_the_tunnel_follows_the_cookie_on_a_new_connection_and_survives_longer_than_a_request_head(stack):
    client = HorizonClient(stack.port("learn"), "longstay")
    client.log_in()
    status, sock, buffer = client.tunnel()
    try:
        assert status == 101
        assert read_line(sock, buffer) == f"TUNNEL {client.servers[0]} longstay"
        deadline = time.monotonic() + 2.5  # > the 1 s head timeout: a tunnel is bound by the idle timeout only
        n = 0
        while time.monotonic() < deadline:
            sock.sendall(b"line %d\n" % n)
            assert read_line(sock, buffer) == f"line {n}"
            n += 1
            time.sleep(0.2)
    finally:
        sock.close()


def test_the_session_is_reported_with_the_server_of_its_latest_request(stack):
    client = HorizonClient(stack.port("learn"), "reported")
    client.log_in()
    status, sock, buffer = client.tunnel()
    try:
        assert status == 101
        harness = stack.harness
        server_id = f"uags/{client.servers[0]}"

        def listed():  # in the sessions hash of whichever worker took the connection
            sessions = [s for w in stack.workers for s in harness.redis.hgetall(harness.keys.sessions(w.id)).values()]
            return [s for s in sessions if '"vs":"learn"' in s and server_id in s]

        wait_for(listed, 5, message="the tunnel in the sessions hash")
    finally:
        sock.close()


def test_insert_mode_pins_clients_with_the_appliances_cookie_without_any_store(stack):
    port = stack.port("insert")
    clients = []
    for _ in range(6):
        conn = https(port)
        status, found, _ = request(conn, "POST", "/broker/xml", broker.get_configuration())
        conn.close()
        assert status == 200
        cookies = dict(c.split(";")[0].split("=", 1) for c in found["set-cookie"])
        assert set(cookies) == {"VIEWLBSRV", "JSESSIONID"}
        assert "Secure" in [c for c in found["set-cookie"] if c.startswith("VIEWLBSRV")][0]
        clients.append((cookies, found["x-sim-server"][0]))
    assert len({server for _, server in clients}) == 3  # round robin before any cookie
    for cookies, server in clients:
        header = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()), "Content-Type": "text/xml"}
        for _ in range(2):
            conn = https(port)
            status, found, data = request(conn, "POST", "/broker/xml", broker.submit_authentication("u", "p"), header)
            conn.close()
            assert (status, found["x-sim-server"][0]) == (200, server)
            assert "set-cookie" not in found  # known pin: nothing new to set
            assert b"NOT_AUTHENTICATED" not in data
    assert persisted(stack, "insert") == {}


def test_insert_cookie_is_not_seen_by_servers_and_cannot_be_forged(stack):
    port = stack.port("insert-plain")
    conn = https(port)
    status, found, data = request(conn, "GET", "/first")
    token = found["set-cookie"][0].split(";")[0]
    first = found["x-server"][0]
    for _ in range(3):
        status, found, data = request(conn, "GET", "/again", headers={"Cookie": f"{token}; other=1"})
        assert found["x-server"][0] == first
        assert "set-cookie" not in found
    conn.close()
    seen = [r for b in stack.plain.backends for r in b.requests if r["target"] == "/again"]
    assert seen and all(["cookie", "other=1"] in [[k.lower(), v] for k, v in r["headers"]] for r in seen)
    # a made-up token pins nothing: the request is balanced and gets a real cookie
    forged = "VIEWLBSRV=" + base64.urlsafe_b64encode(os.urandom(18)).decode()
    servers = set()
    for _ in range(2):
        conn = https(port)
        _, found, _ = request(conn, "GET", "/forged", headers={"Cookie": forged})
        conn.close()
        servers.add(found["x-server"][0])
        assert found["set-cookie"][0].startswith("VIEWLBSRV=") and forged not in found["set-cookie"][0]
    assert servers == {"p1", "p2"}


def test_fallback_sends_clients_by_address_until_a_cookie_is_known(stack):
    fallback, learn = stack.port("fallback"), stack.port("learn")

    def ask(source, cookie=None):
        conn = https(fallback)
        conn.source_address = (source, 0)
        headers = {"Content-Type": "text/xml"}
        if cookie:
            headers["Cookie"] = f"JSESSIONID={cookie}"
        status, found, data = request(conn, "POST", "/broker/xml", broker.simple("get-desktops"), headers)
        conn.close()
        return found["x-sim-server"][0], broker.cookie_value(found.get("set-cookie", []))

    first, _ = ask("127.0.0.21")
    assert [ask("127.0.0.21")[0] for _ in range(3)] == [first] * 3  # no cookie sent: by address
    others = {ask(f"127.0.0.{n}")[0] for n in range(22, 26)}
    assert len(others | {first}) >= 2  # other addresses are balanced
    assert persisted(stack)["127.0.0.21"] == stack.sims[first]["address"]
    # a client at that address whose cookie another server issued (same persistence group) goes there
    for n in range(10):
        client = HorizonClient(learn, f"fb{n}")
        client.log_in()
        if client.servers[0] != first:
            break
    assert client.servers[0] != first
    assert ask("127.0.0.21", client.cookie)[0] == client.servers[0]
    assert ask("127.0.0.21")[0] == first  # without it, the address still decides


def websocket_handshake(sock, key):
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: view.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buffer = bytearray()
    status, headers, _ = read_head(sock, buffer)
    return status, headers, buffer


def websocket_echo(sock, buffer, decoder, payload: bytes):
    sock.sendall(encode_frame(0x1, payload, mask=True))
    frames = decoder.feed(bytes(buffer))
    buffer.clear()
    while not frames:
        frames = decoder.feed(sock.recv(65536))
    return frames[0]


def test_websocket_passes_through_and_is_bound_by_the_idle_timeout_only(stack):
    key = base64.b64encode(os.urandom(16)).decode()
    with tls_socket(stack.port("ws-idle")) as sock:
        status, headers, buffer = websocket_handshake(sock, key)
        assert status == 101 and headers["sec-websocket-accept"] == [accept_key(key)]
        decoder = FrameDecoder()
        assert websocket_echo(sock, buffer, decoder, b"hello") == (True, 0x1, b"hello")
        big = os.urandom(300_000)  # several TLS records and reads: passthrough keeps every byte in order
        assert websocket_echo(sock, buffer, decoder, big) == (True, 0x1, big)
        time.sleep(1.5)  # longer than the head timeout, shorter than the idle timeout (2 s)
        assert websocket_echo(sock, buffer, decoder, b"still here") == (True, 0x1, b"still here")
        started = time.monotonic()
        assert read_until_closed(sock, limit=6) == b""  # silent: the sweep closes it after ~2 s idle
        assert 1.0 < time.monotonic() - started < 5.0


def test_many_clients_in_parallel_with_pipelined_keep_alive_requests(stack):
    """Several requests written at once on one connection: each is routed and answered in order."""
    port = stack.port("insert-plain")
    errors = []

    def client(n):
        try:
            with tls_socket(port) as sock:
                sock.sendall(b"".join(b"GET /pipe/%d/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (n, i) for i in range(5)))
                buffer = bytearray()
                for i in range(5):
                    status, headers, _ = read_head(sock, buffer)
                    size = int(headers["content-length"][0])
                    while len(buffer) < size:
                        buffer += sock.recv(65536)
                    body, buffer[:] = bytes(buffer[:size]), buffer[size:]
                    assert status == 200 and b'"/pipe/%d/%d"' % (n, i) in body
        except Exception as exc:  # collected: an assertion in a thread would be lost
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors[:3]


def set_state(stack, server_id, state):
    stack.harness.set_admin(server_id, state)
    for worker in stack.workers:
        worker.wait_server_state(server_id, {"enabled": "up"}.get(state, state))


def test_drain_keeps_cookie_clients_and_takes_no_new_ones_disabled_moves_them(stack):
    port = stack.port("learn")
    alice = HorizonClient(port, "alice-drain")
    alice.log_in()
    home = alice.servers[0]
    server_id = f"uags/{home}"
    for _ in range(6):  # an insert-mode client pinned to the same server (round robin gets there)
        _, found, _ = request(https(stack.port("insert")), "GET", "/favicon.ico")
        if found["x-sim-server"][0] == home:
            break
    assert found["x-sim-server"][0] == home
    pin = found["set-cookie"][0].split(";")[0]
    set_state(stack, server_id, "drain")
    try:
        assert alice.desktops() == [] and alice.servers[-1] == home  # stuck clients stay
        _, found, _ = request(https(stack.port("insert")), "GET", "/favicon.ico", headers={"Cookie": pin})
        assert found["x-sim-server"][0] == home
        newcomers = [HorizonClient(port, f"new{n}") for n in range(6)]
        for client in newcomers:
            client.log_in()
        assert home not in {c.servers[0] for c in newcomers}
        set_state(stack, server_id, "disabled")
        assert alice.desktops() == ["NOT_AUTHENTICATED"]  # its server is gone: another one does not know it
        assert alice.servers[-1] != home
        _, found, _ = request(https(stack.port("insert")), "GET", "/favicon.ico", headers={"Cookie": pin})
        assert found["x-sim-server"][0] != home and found["set-cookie"][0].startswith("VIEWLBSRV=")
    finally:
        set_state(stack, server_id, "enabled")


def test_a_refused_upgrade_leaves_the_connection_speaking_http(stack):
    with tls_socket(stack.port("learn")) as sock:
        status, refused, buffer = websocket_handshake(sock, "not-a-valid-key")
        assert status == 400
        size = int(refused["content-length"][0])
        while len(buffer) < size:
            buffer += sock.recv(65536)
        del buffer[:size]
        sock.sendall(b"GET /favicon.ico HTTP/1.1\r\nHost: view.example.com\r\n\r\n")
        status, headers, _ = read_head(sock, buffer)
        assert status == 200 and headers["content-type"] == ["image/x-icon"]
