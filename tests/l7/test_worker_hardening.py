"""Layer 7 through a real worker: what it refuses, and that refusing never disturbs anyone else.

Smuggling and slowloris cases get 400/408 (or a close) for their own connection
while good clients keep being served; TLS versions and SNI; re-encryption with
and without verification and plain HTTP towards the servers; forwarding headers;
redispatch; a server that answers with bad framing.
"""
import dataclasses
import socket
import ssl
import threading
import time

import pytest

from proxyworker.config import Pool, RealServer, Snapshot
from tests.conftest import free_port
from tests.proxyworker.harness import Harness, service, wait_for

from .stack import (
    APPS,
    HEAD_TIMEOUT,
    PORTAL,
    L7Stack,
    PlainBackends,
    certificate,
    client_context,
    https,
    l7_service,
    read_head,
    read_until_closed,
    request,
    sim_pool,
    start_sims,
    stop_sims,
    tls_socket,
)

pytestmark = pytest.mark.xdist_group("l7-worker-hardening")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("l7hard")
    sims = start_sims(tmp / "certs", 2)
    plain = PlainBackends("p1", "p2")
    l7 = L7Stack("l7hard", tmp)
    portal, portal_pem = certificate("portal", PORTAL)
    apps, apps_pem = certificate("apps", APPS, "*." + APPS)
    sim_ca = "".join((tmp / "certs" / f"{s['name']}.crt").read_text() for s in sims)
    dead = socket.socket()  # a bound port nobody listens on: connects are refused
    dead.bind(("127.0.0.1", 0))
    l7.pools = [
        plain.pool("plain"),
        sim_pool("uags", sims),
        Pool("halfdead", (RealServer("halfdead/dead", "dead", "127.0.0.1", dead.getsockname()[1]),
                          *plain.pool("x").servers[:1])),
        Pool("single", plain.pool("single").servers[:1]),
    ]
    l7.certificates = [portal, apps]
    l7.base = [
        l7_service("plain", "plain", certificates=("portal", "apps"), backend_tls=False, method="none"),
        l7_service("verified", "uags", backend_verify=True, backend_ca=sim_ca),
        l7_service("unverified", "uags", backend_verify=False),
        l7_service("wrong-ca", "uags", backend_verify=True, backend_ca=portal_pem),
        l7_service("halfdead", "halfdead", backend_tls=False, method="none"),
        l7_service("single", "single", backend_tls=False, method="none"),
    ]
    l7.publish(l7.base, l7.pools, l7.certificates)
    l7.pem = {"portal": portal_pem, "apps": apps_pem}
    l7.plain = plain
    yield l7
    l7.worker.assert_clean_log()
    l7.close()
    plain.close()
    dead.close()
    stop_sims(sims)


@pytest.fixture
def good_clients(stack):
    """Clients that keep doing ordinary requests while a test misbehaves; all must succeed."""
    stop, errors, done = threading.Event(), [], []
    port = stack.port("plain")

    def run(n):
        while not stop.is_set():
            try:
                conn = https(port)
                for i in range(3):
                    status, _, body = request(conn, "GET", f"/good/{n}/{i}")
                    assert status == 200 and f'"/good/{n}/{i}"'.encode() in body, (status, body[:200])
                    done.append(1)
                conn.close()
            except Exception as exc:  # collected: an assertion in a thread would be lost
                errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(done) >= 3 or errors, 5, message="good clients to start")
    yield
    served = len(done)
    wait_for(lambda: len(done) >= served + 6 or errors, 5, message="good clients to go on")  # after the bad case too
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors[:3]


def received(stack, marker: str) -> list:
    return [r for b in stack.plain.backends for r in b.requests if marker in r["target"] or marker in r["body"]]


def raw_exchange(port, data: bytes, pause: float = 0.0) -> bytes:
    """Sends `data` over a new TLS connection and returns everything until the proxy closes it."""
    with tls_socket(port) as sock:
        sock.sendall(data)
        if pause:
            time.sleep(pause)
        return read_until_closed(sock, limit=5)


def only_response(answer: bytes) -> bool:
    """The answer is exactly one response that announces the close, and nothing follows it."""
    head, _, body = answer.partition(b"\r\n\r\n")
    length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    return b"\r\nConnection: close\r\n" in head and length == [len(body)]


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
CASES = {
    "CL.TE": b"POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: 39\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE.CL": b"POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n27\r\n" + SMUGGLED + b"\r\n0\r\n\r\n",
    "TE obfuscated value": b"POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE with space before colon": b"POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE twice": b"POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE chunked, identity": b"POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE with underscore": b"POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: 39\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "duplicate CL": b"POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 39\r\n\r\n" + SMUGGLED,
    "CL list": b"POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: 39, 0\r\n\r\n" + SMUGGLED,
    "non-numeric CL": b"POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: 3a\r\n\r\n" + SMUGGLED,
    "negative CL": b"POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n" + SMUGGLED,
    "plus-signed CL": b"POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: +39\r\n\r\n" + SMUGGLED,
    "chunk size not hex": b"POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk size overflow": b"POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1" + b"0" * 16 + b"\r\nhello\r\n0\r\n\r\n",
    "chunk size with space": b"POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    "chunk without CRLF": b"POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "CL in trailer": b"POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 39\r\n\r\n" + SMUGGLED,
    "obs-fold": b"GET /case HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
    "bare LF": b"GET /case HTTP/1.1\nHost: x\n\n",
    "space in header name": b"GET /case HTTP/1.1\r\nHost: x\r\nContent Length: 5\r\n\r\n",
    "two Hosts": b"GET /case HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "head over 64 KiB": b"GET /case HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
    "too many headers": b"GET /case HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(101)) + b"\r\n",
    "HTTP/1.0 with TE": b"POST /case HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_ambiguous_framing_is_refused_with_400_and_nothing_reaches_the_server(stack, good_clients, case):
    marker = f"/case-{case}".replace(" ", "-")
    data = CASES[case].replace(b"/case", marker.encode(), 1)
    before = len(received(stack, "/smuggled"))
    answer = raw_exchange(stack.port("plain"), data)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert only_response(answer)  # one answer, then the connection is closed
    time.sleep(0.05)
    assert received(stack, marker) == [] and len(received(stack, "/smuggled")) == before


def test_connect_is_refused_with_405_and_closed(stack):
    answer = raw_exchange(stack.port("plain"), b"CONNECT 10.0.0.1:22 HTTP/1.1\r\nHost: 10.0.0.1:22\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405 ") and only_response(answer)


def test_a_good_request_on_the_same_connection_after_an_answered_one_still_works(stack):
    """Control for the cases above: a well-framed chunked request and a pipelined follower go through."""
    body = b"5\r\nhello\r\n0\r\n\r\n"
    data = (b"POST /ctl-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body +
            b"GET /ctl-next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = raw_exchange(stack.port("plain"), data)
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer
    (first,) = received(stack, "/ctl-chunked")
    assert first["body"] == "hello"
    assert received(stack, "/ctl-next")


def test_a_slow_request_head_gets_408_after_the_head_timeout(stack, good_clients):
    with tls_socket(stack.port("plain")) as sock:
        started = time.monotonic()
        sock.settimeout(0.1)
        answer = b""
        for byte in b"GET /slowloris HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
                answer += sock.recv(65536)
            except TimeoutError:
                continue
            except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
                break
            if answer:
                break
        elapsed = time.monotonic() - started
        answer += read_until_closed(sock, limit=3)
    assert answer.startswith(b"HTTP/1.1 408 ") and only_response(answer), answer[:200]
    assert HEAD_TIMEOUT * 0.9 < elapsed < HEAD_TIMEOUT + 1.5
    assert received(stack, "/slowloris") == []


def test_a_client_that_says_nothing_after_the_handshake_is_closed_without_a_word(stack, good_clients):
    with tls_socket(stack.port("plain")) as sock:
        started = time.monotonic()
        assert read_until_closed(sock, limit=5) == b""
        assert HEAD_TIMEOUT * 0.9 < time.monotonic() - started < HEAD_TIMEOUT + 1.5


def test_a_client_that_never_finishes_the_tls_handshake_is_closed(stack, good_clients):
    with socket.create_connection(("127.0.0.1", stack.port("plain")), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and no more
        started = time.monotonic()
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < HEAD_TIMEOUT + 1.5


def test_a_keep_alive_connection_may_idle_between_requests_longer_than_the_head_timeout(stack):
    conn = https(stack.port("plain"))
    assert request(conn, "GET", "/idle/1")[0] == 200
    time.sleep(HEAD_TIMEOUT + 0.5)
    assert request(conn, "GET", "/idle/2")[0] == 200
    conn.close()


def test_forwarding_headers_are_set_and_host_is_preserved(stack):
    conn = https(stack.port("plain"))
    status, found, _ = request(conn, "GET", "/hdr?x=1", headers={
        "Host": "view.example.com:8443", "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "http"})
    conn.close()
    assert status == 200
    (seen,) = received(stack, "/hdr?x=1")
    headers = [(k.lower(), v) for k, v in seen["headers"]]
    assert ("host", "view.example.com:8443") in headers
    assert [v for k, v in headers if k == "x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert [v for k, v in headers if k == "x-forwarded-proto"] == ["https"]


def test_a_chunked_response_and_a_head_request_keep_their_framing(stack):
    conn = https(stack.port("plain"))
    status, found, body = request(conn, "POST", "/echo-body", body=b"x" * 100_000)
    assert status == 200 and b'"/echo-body"' in body
    status, found, body = request(conn, "HEAD", "/head")
    assert status == 200 and body == b"" and int(found["content-length"][0]) > 0
    assert request(conn, "GET", "/after-head")[0] == 200  # the HEAD's missing body did not confuse anyone
    conn.close()
    (seen,) = received(stack, "/echo-body")
    assert len(seen["body"]) == 100_000


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_2_and_1_3_are_accepted_and_older_versions_refused(stack):
    port = stack.port("plain")
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_context(minimum_version=version, maximum_version=version)
        with tls_socket(port, ctx=ctx) as sock:
            assert sock.version() == version.name.replace("v1_", "v1.")
            assert sock.selected_alpn_protocol() in (None, "http/1.1")
    old = client_context()
    old.set_ciphers("ALL:@SECLEVEL=0")
    old.minimum_version, old.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as refused:
        tls_socket(port, ctx=old).close()
    # refused by the proxy (an alert or a close in the middle of the handshake), not by our own client
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value)
    assert isinstance(refused.value, ssl.SSLEOFError | ConnectionResetError) or "PROTOCOL_VERSION" in str(refused.value)


@pytest.mark.parametrize(("server_name", "certificate_name"), [
    (PORTAL, "portal"), ("desk." + APPS, "apps"), (None, "portal"), ("unknown.example.org", "portal")])
def test_sni_selects_among_the_vips_certificates(stack, server_name, certificate_name):
    ctx = client_context(trust=stack.pem[certificate_name])
    ctx.check_hostname = server_name is not None and server_name != "unknown.example.org"
    with tls_socket(stack.port("plain"), server_name=server_name, ctx=ctx) as sock:  # verification proves the choice
        sock.sendall(b"GET /sni HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")


def test_re_encryption_with_and_without_verification(stack):
    for name in ("verified", "unverified"):
        conn = https(stack.port(name))
        status, found, _ = request(conn, "GET", "/favicon.ico")
        conn.close()
        assert status == 200 and found["x-sim-server"], name
    conn = https(stack.port("wrong-ca"))
    status, _, body = request(conn, "GET", "/favicon.ico")
    conn.close()
    assert status == 503, body
    assert "CERTIFICATE_VERIFY_FAILED" in stack.worker.log() or "certificate verify failed" in stack.worker.log()


def test_a_refused_server_is_skipped_within_the_request(stack):
    for n in range(6):
        conn = https(stack.port("halfdead"))
        status, found, _ = request(conn, "GET", f"/redispatch/{n}")
        conn.close()
        assert status == 200 and found["x-server"] == ["p1"]


def test_a_server_answer_with_ambiguous_framing_becomes_502(stack, good_clients):
    answer = raw_exchange(stack.port("plain"), b"GET /bad-framing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 502 ") and only_response(answer), answer[:200]
    assert b"Transfer-Encoding" not in answer


def test_a_new_certificate_applies_to_new_connections_and_keeps_established_ones(stack):
    port = stack.port("plain")
    conn = https(port)
    assert request(conn, "GET", "/before")[0] == 200
    renewed, renewed_pem = certificate("renewed", PORTAL)
    services = [vs if vs.name != "plain" else _with_certificates(vs, ("renewed", "apps")) for vs in stack.base]
    stack.publish(services, stack.pools, [*stack.certificates, renewed])
    try:
        assert request(conn, "GET", "/after")[0] == 200  # the established connection went on
        ctx = client_context(trust=renewed_pem)
        with tls_socket(port, server_name=PORTAL, ctx=ctx) as sock:
            sock.sendall(b"GET /renewed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")
    finally:
        conn.close()
        stack.publish(stack.base, stack.pools, stack.certificates)


def _with_certificates(vs, names):
    return dataclasses.replace(vs, tls=dataclasses.replace(vs.tls, certificates=names))



def test_server_connections_are_pooled_across_client_connections(stack):
    p1, port = stack.plain.backends[0], stack.port("single")
    conn = https(port)
    assert request(conn, "GET", "/pool-warm")[0] == 200
    conn.close()
    before = p1.connections
    for n in range(10):  # phase 1 opens several short connections: they need not cost a server handshake each
        conn = https(port)
        assert request(conn, "GET", f"/pooled/{n}")[0] == 200
        conn.close()
    assert p1.connections - before <= 3


def test_a_server_connection_closed_under_a_request_is_retried_only_when_that_is_safe(stack):
    p1, port = stack.plain.backends[0], stack.port("single")
    conn = https(port)
    assert request(conn, "GET", "/then-drop")[0] == 200
    status, found, _ = request(conn, "GET", "/retried")  # the server closes instead of answering
    conn.close()
    assert status == 200 and found["x-server"] == ["p1"]
    assert p1.dropped.count("/retried") == 1 and len([r for r in p1.requests if r["target"] == "/retried"]) == 1
    conn = https(port)
    assert request(conn, "GET", "/then-drop")[0] == 200
    status, _, _ = request(conn, "POST", "/not-retried", body=b"a form")  # may have had effects: never sent twice
    conn.close()
    assert status == 502
    assert p1.dropped.count("/not-retried") == 1 and not [r for r in p1.requests if r["target"] == "/not-retried"]


def test_sigterm_closes_idle_keep_alive_connections_and_lets_a_response_finish(stack, tmp_path):
    draining = L7Stack("l7drain", tmp_path)
    try:
        vs = l7_service("plain", "plain", backend_tls=False, method="none")
        draining.publish([vs], [stack.plain.pool("plain")], stack.certificates)
        idle = https(vs.port)
        assert request(idle, "GET", "/before-stop")[0] == 200
        with tls_socket(vs.port) as busy:
            busy.sendall(b"GET /slow/800 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.2)  # the request is at the server
            started = time.monotonic()
            draining.worker.terminate()
            answer = read_until_closed(busy)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: close\r\n" in answer
        assert read_until_closed(idle.sock, limit=3) == b""
        idle.close()
        assert draining.worker.proc.wait(10) == 0
        assert time.monotonic() - started < 5  # not the 30 s drain deadline
        draining.worker.assert_clean_log()
    finally:
        draining.close()


def test_a_client_that_does_not_read_stops_the_server_instead_of_filling_the_proxy(stack):
    p1, port = stack.plain.backends[0], stack.port("single")
    size = 64 << 20
    with tls_socket(port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        before = p1.streamed
        sock.sendall(b"GET /big/64 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(1.0)  # the client reads nothing: every buffer on the way fills, then the server waits
        held = p1.streamed - before
        assert held < 24 << 20, held  # kernel buffers and one high-water mark per side, not the whole body
        buffer = bytearray()
        status, headers, _ = read_head(sock, buffer)
        got = len(buffer)
        sock.settimeout(10)
        while got < size:
            chunk = sock.recv(1 << 20)
            assert chunk, got
            got += len(chunk)
    assert status == 200 and got == size and p1.streamed - before == size


def test_a_worker_without_the_certificate_key_says_so_and_serves_its_other_vips(stack, tmp_path):
    harness = Harness("l7nokey", tmp_path)
    try:
        worker = harness.start_worker(VIEWLB_CERT_KEY="")
        worker.expect_error("VIEWLB_CERT_KEY is not set")
        harness.version += 1
        l4 = service("l4", free_port(), "plain")
        l7 = l7_service("l7", "plain", backend_tls=False)
        snapshot = Snapshot(version=harness.version, virtual_services=(l4, l7), pools=(stack.plain.pool("plain"),),
                            certificates=tuple(stack.certificates))
        harness.publish_json(snapshot.to_json())
        worker.wait_version(harness.version)
        wait_for(lambda: "VIEWLB_CERT_KEY is not set" in worker.log(), 5, message="the reason in the log")
        with socket.create_connection(("127.0.0.1", l4.port), timeout=5) as sock:  # layer 4 is served
            sock.sendall(b"GET /l4-still-served HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", l7.port), timeout=2).close()
        worker.assert_clean_log()
    finally:
        harness.close()


def test_expect_100_continue_passes_the_interim_answer_before_the_body(stack):
    with tls_socket(stack.port("single")) as sock:
        sock.sendall(b"POST /expect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        buffer = bytearray()
        status, _, _ = read_head(sock, buffer)
        assert status == 100  # the server asked for the body, through the proxy
        sock.sendall(b"hello")
        status, headers, _ = read_head(sock, buffer)
        assert status == 200
    (seen,) = received(stack, "/expect")
    assert seen["body"] == "hello"


def test_a_body_without_length_reaches_http_1_1_clients_chunked_and_http_1_0_clients_until_close(stack):
    conn = https(stack.port("single"))
    status, found, body = request(conn, "GET", "/unsized")
    assert status == 200 and found["transfer-encoding"] == ["chunked"] and b'"/unsized"' in body
    assert request(conn, "GET", "/after-unsized")[0] == 200  # and the connection goes on
    conn.close()
    answer = raw_exchange(stack.port("single"), b"GET /unsized HTTP/1.0\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body.startswith(b"{") and body.endswith(b"}")  # the whole body, ended by the close
