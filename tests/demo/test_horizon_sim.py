"""The simulated Horizon server, over real TLS sockets, as a balancer and a client see it."""
import base64
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from demo import broker
from demo.websocket import FrameDecoder, encode_frame
from tests.demo.conftest import ROOT, control, get, https, read_head, read_line, tls_socket

pytestmark = pytest.mark.xdist_group("demo_sim")
XML = {"Content-Type": "text/xml"}


def login(sim, user="alice"):
    """Phase 1 on one keep-alive connection; returns the JSESSIONID."""
    conn = https(sim)
    try:
        conn.request("POST", "/broker/xml", body=broker.get_configuration(), headers=XML)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200 and broker.results(body) == [("configuration", "ok", "")]
        cookie = broker.cookie_value([resp.headers["Set-Cookie"]])
        conn.request("POST", "/broker/xml", body=broker.submit_authentication(user, "pw"),
                     headers={**XML, "Cookie": f"JSESSIONID={cookie}"})
        resp = conn.getresponse()
        assert broker.results(resp.read()) == [("submit-authentication", "ok", "")]
        assert resp.headers.get("Set-Cookie") is None  # only the first answer sets it
        return cookie
    finally:
        conn.close()


def wait_for(predicate, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_it_serves_tls_1_2_or_later_with_its_own_certificate(sim):
    with tls_socket(sim["address"], sim["https_port"]) as s:
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        cert = s.getpeercert(binary_form=True)
    assert b"sim1" in cert


def test_it_answers_favicon_200_503_when_quiesced_and_200_after_resume(sim):
    status, headers, body = get(sim, "GET", "/favicon.ico", headers={"Connection": "close"})
    assert (status, headers["Content-Type"], body[:4]) == (200, "image/x-icon", b"\x00\x00\x01\x00")
    assert headers["X-Sim-Server"] == "sim1"
    assert control(sim, "quiesce")["quiesced"] is True
    try:
        assert get(sim, "GET", "/favicon.ico")[0] == 503
        assert get(sim, "HEAD", "/favicon.ico")[0] == 503
    finally:
        assert control(sim, "resume")["quiesced"] is False
    status, _headers, body = get(sim, "HEAD", "/favicon.ico")
    assert (status, body) == (200, b"")


def test_it_toggles_quiesce_on_sigusr1(sim):
    sim["proc"].send_signal(signal.SIGUSR1)
    try:
        assert wait_for(lambda: get(sim, "GET", "/favicon.ico")[0] == 503)
    finally:
        sim["proc"].send_signal(signal.SIGUSR1)
    assert wait_for(lambda: get(sim, "GET", "/favicon.ico")[0] == 200)


def test_it_sets_jsessionid_and_knows_it_on_a_new_connection(sim):
    status, headers, _body = get(sim, "POST", "/broker/xml", broker.get_configuration(), XML)
    set_cookie = headers["Set-Cookie"]
    assert set_cookie.startswith("JSESSIONID=") and "; Path=/; Secure; HttpOnly" in set_cookie
    cookie = login(sim, "bob")
    status, headers, body = get(sim, "POST", "/broker/xml", broker.get_desktop_connection(),
                                {**XML, "Cookie": f"JSESSIONID={cookie}"})
    assert status == 200 and headers["X-Sim-Server"] == "sim1"
    assert broker.results(body) == [("desktop-connection", "ok", "")]
    assert b"<username>bob</username>" in body
    assert "bob" in control(sim, "stats", "GET")["users"]


def test_it_refuses_an_unknown_jsessionid_like_an_expired_session(sim):
    status, headers, body = get(sim, "POST", "/broker/xml", broker.get_configuration(),
                                {**XML, "Cookie": "JSESSIONID=0123456789ABCDEF"})
    assert status == 200 and "Set-Cookie" not in headers
    assert broker.results(body) == [("configuration", "error", "NOT_AUTHENTICATED")]


def test_it_wants_a_login_before_desktops_and_rejects_bad_xml(sim):
    _status, headers, body = get(sim, "POST", "/broker/xml", broker.simple("get-desktops"), XML)
    assert broker.results(body) == [("desktops", "error", "NOT_AUTHENTICATED")]
    status, _headers, body = get(sim, "POST", "/broker/xml", b"<broker><unclosed>", XML)
    assert status == 400 and b"BAD_REQUEST" in body
    assert get(sim, "GET", "/broker/xml")[0] == 405


def open_tunnel(sim, cookie, upgrade=True):
    s = tls_socket(sim["address"], sim["https_port"])
    upgrade_headers = "Connection: Upgrade\r\nUpgrade: ice-tunnel\r\n" if upgrade else ""
    s.sendall(f"POST /ice/tunnel HTTP/1.1\r\nHost: sim\r\nCookie: JSESSIONID={cookie}\r\n"
              f"{upgrade_headers}Content-Length: 0\r\n\r\n".encode())
    status, headers, rest = read_head(s)
    return s, status, headers, bytearray(rest)


def test_the_tunnel_greets_echoes_and_sends_heartbeats_for_its_own_session(sim):
    cookie = login(sim, "carol")
    s, status, headers, buffer = open_tunnel(sim, cookie)
    with s:
        assert (status, headers["upgrade"], headers["x-sim-server"]) == (101, "ice-tunnel", "sim1")
        assert read_line(s, buffer) == "TUNNEL sim1 carol"
        assert control(sim, "stats", "GET")["connections"]["tunnel"] == 1
        for i in range(3):
            s.sendall(f"frame {i}\n".encode())
            assert read_line(s, buffer) == f"frame {i}"
        assert read_line(s, buffer, skip_heartbeats=False).startswith("HEARTBEAT sim1 ")  # every 0.5 s
    assert wait_for(lambda: control(sim, "stats", "GET")["connections"]["tunnel"] == 0)


def test_the_tunnel_refuses_a_session_it_did_not_authenticate(sim):
    for cookie in ("FFFFFFFFFFFFFFFF", ""):
        s, status, headers, _buffer = open_tunnel(sim, cookie)
        s.close()
        assert (status, headers["x-sim-server"]) == (403, "sim1")
    _status, headers, _body = get(sim, "POST", "/broker/xml", broker.get_configuration(), XML)
    not_logged_in = broker.cookie_value([headers["Set-Cookie"]])
    s, status, _headers, _buffer = open_tunnel(sim, not_logged_in)
    s.close()
    assert status == 403
    s, status, _headers, _buffer = open_tunnel(sim, login(sim), upgrade=False)
    s.close()
    assert status == 400


def test_the_bypass_ports_greet_with_the_server_name_and_echo(sim):
    for port in sim["tcp_ports"]:
        with socket.create_connection((sim["address"], port), timeout=5, source_address=("127.0.0.42", 0)) as s:
            buffer = bytearray()
            assert read_line(s, buffer) == f"sim1 {port}"
            s.sendall(b"rdp bytes\n")
            assert read_line(s, buffer) == "rdp bytes"


def test_the_udp_ports_answer_with_the_server_name(sim):
    (port,) = sim["udp_ports"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"pcoip", (sim["address"], port))
        reply, _addr = s.recvfrom(2048)
    assert reply == f"sim1 {port} pcoip".encode()


def test_websocket_handshake_and_echo(sim):
    with tls_socket(sim["address"], sim["https_port"]) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        status, headers, rest = read_head(s)
        assert status == 101
        assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3
        mask = b"\x01\x02\x03\x04"
        payload = b"blast over websocket"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)  # a client's masked text frame
        reply = bytearray(rest)
        while len(reply) < 2 + len(payload):
            reply += s.recv(65536)
        assert bytes(reply) == bytes([0x81, len(payload)]) + payload  # unmasked echo from the server
        s.sendall(encode_frame(0x8, (1000).to_bytes(2, "big"), mask=True))
        frames = FrameDecoder().feed(s.recv(65536))
        assert frames == [(True, 0x8, (1000).to_bytes(2, "big"))]
    bad_key = base64.b64encode(b"short").decode()
    with tls_socket(sim["address"], sim["https_port"]) as s:
        s.sendall(f"GET /ws HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {bad_key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        assert read_head(s)[0] == 400


def test_stop_drops_every_connection_and_start_serves_again(sim):
    cookie = login(sim, "dave")
    s, status, _headers, buffer = open_tunnel(sim, cookie)
    assert status == 101 and read_line(s, buffer) == "TUNNEL sim1 dave"
    assert control(sim, "stop")["serving"] is False
    with s, pytest.raises((ConnectionError, OSError)):
        read_line(s, buffer)  # the server is gone, and so is the tunnel
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((sim["address"], sim["https_port"]), timeout=5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((sim["address"], sim["tcp_ports"][0]), timeout=5)
    assert control(sim, "start")["serving"] is True
    assert get(sim, "GET", "/favicon.ico")[0] == 200
    s, status, _headers, buffer = open_tunnel(sim, cookie)  # the session survived, as on a restarted UAG service
    with s:
        assert status == 101 and read_line(s, buffer) == "TUNNEL sim1 dave"


def test_it_explains_bad_command_lines(tmp_path):
    result = subprocess.run([sys.executable, "-m", "demo.horizon_sim", "--name", "x", "--tcp-ports", "3389,rdp"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30, env=dict(os.environ))
    assert result.returncode == 2 and "'rdp' is not a port number" in result.stderr
