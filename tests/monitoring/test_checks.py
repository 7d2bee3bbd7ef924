"""Probes against real servers on 127.0.0.1: each check type and each way a server can fail."""
import asyncio
import time

import pytest

from monitoring.checks import (
    CheckResult,
    ProbeError,
    build_request,
    host_header,
    probe,
    read_status,
    server_name,
    verdict,
)
from proxyworker.config import HealthCheck
from tests.conftest import free_port

HTTPS = HealthCheck(type="https", timeout=1.0)
HTTP = HealthCheck(type="http", timeout=1.0)
TCP = HealthCheck(type="tcp", timeout=1.0)


def run(port, check, **kwargs) -> CheckResult:
    return asyncio.run(probe("127.0.0.1", port, check, **kwargs))


# --- sans-io -----------------------------------------------------------------


def test_it_builds_vmwares_request():
    _conn, data = build_request(HealthCheck(), "10.0.0.5", 443)
    head = data.decode()
    assert head.startswith("GET /favicon.ico HTTP/1.1\r\n")
    assert "host: 10.0.0.5\r\n" in head.lower()
    assert "connection: close\r\n" in head.lower()


def test_it_puts_the_port_and_brackets_into_the_host_header():
    assert host_header(HTTPS, "10.0.0.5", 8443) == "10.0.0.5:8443"
    assert host_header(HTTP, "::1", 80) == "[::1]"
    assert host_header(HealthCheck(host="view.example.com"), "10.0.0.5", 8443) == "view.example.com"


def test_it_sends_sni_only_for_names():
    assert server_name(HTTPS) is None
    assert server_name(HealthCheck(host="10.1.1.1")) is None
    assert server_name(HealthCheck(host="view.example.com:8443")) == "view.example.com"
    assert server_name(HealthCheck(host="view.example.com", sni="uag1.example.com")) == "uag1.example.com"


def test_it_reads_a_status_split_over_several_reads():
    conn, _ = build_request(HTTP, "127.0.0.1", 80)
    assert read_status(conn, b"HTTP/1.1 50") is None
    assert read_status(conn, b"3 Service Unavailable\r\nContent-Length: 0\r\n\r\n") == 503


@pytest.mark.parametrize("data", [b"SSH-2.0-OpenSSH\r\n\r\n", b"\x00\xff\xfe\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n"])
def test_it_rejects_garbage(data):
    conn, _ = build_request(HTTP, "127.0.0.1", 80)
    with pytest.raises(ProbeError, match="not an HTTP response"):
        read_status(conn, data)


def test_it_rejects_a_close_before_the_head():
    conn, _ = build_request(HTTP, "127.0.0.1", 80)
    assert read_status(conn, b"HTTP/1.1 200 OK\r\n") is None
    with pytest.raises(ProbeError, match="closed before a response"):
        read_status(conn, b"")


def test_it_rejects_an_endless_head():
    conn, _ = build_request(HTTP, "127.0.0.1", 80)
    assert read_status(conn, b"HTTP/1.1 200 OK\r\n") is None
    with pytest.raises(ProbeError, match="not an HTTP response"):
        for _ in range(10):
            read_status(conn, b"X-Pad: " + b"a" * 4000 + b"\r\n")


def test_it_judges_statuses_like_horizon():
    assert verdict(HTTPS, 200, 1.0).outcome == "up"
    assert verdict(HTTPS, 503, 1.0).outcome == "drain"
    result = verdict(HTTPS, 404, 1.0)
    assert (result.outcome, result.error) == ("fail", "answered 404")
    custom = HealthCheck(expect_up=(200, 204), expect_drain=(429,))
    assert verdict(custom, 204, 1.0).outcome == "up"
    assert verdict(custom, 503, 1.0).outcome == "fail"


# --- real sockets ----------------------------------------------------------------


def test_tcp_connects(servers):
    listener = servers.start("tcp")
    result = run(listener.port, TCP)
    assert result.outcome == "up" and result.status is None and result.latency_ms > 0


def test_tcp_refused():
    result = run(free_port(), TCP)
    assert (result.outcome, result.error) == ("fail", "connection refused")


def test_http_200_is_up_and_sends_the_request_vmware_asks_for(servers):
    listener = servers.start("http")
    result = run(listener.port, HTTP)
    assert (result.outcome, result.status) == ("up", 200)
    request = listener.requests[-1]
    assert (request.method, request.target) == ("GET", "/favicon.ico")
    assert request.headers["connection"] == "close"
    assert request.headers["host"] == f"127.0.0.1:{listener.port}"


def test_http_head_and_host_header(servers):
    listener = servers.start("http")
    check = HealthCheck(type="http", method="HEAD", path="/broker/ping", host="view.example.com", timeout=1.0)
    assert run(listener.port, check).outcome == "up"
    request = listener.requests[-1]
    assert (request.method, request.target, request.headers["host"]) == ("HEAD", "/broker/ping", "view.example.com")


def test_https_self_signed_is_up_without_verification(servers):
    listener = servers.start("https")
    result = run(listener.port, HTTPS)
    assert (result.outcome, result.status, result.error) == ("up", 200, "")
    assert listener.requests[-1].sni is None  # an IP is never sent as SNI


def test_https_sends_sni_and_host(servers):
    listener = servers.start("https")
    check = HealthCheck(type="https", host="view.example.com", sni="uag1.example.com", timeout=1.0)
    assert run(listener.port, check).outcome == "up"
    request = listener.requests[-1]
    assert (request.sni, request.headers["host"]) == ("uag1.example.com", "view.example.com")


def test_https_verification_refuses_a_self_signed_certificate(servers):
    listener = servers.start("https")
    result = run(listener.port, HealthCheck(type="https", verify_certificate=True, timeout=1.0))
    assert result.outcome == "fail"
    assert result.error.startswith("TLS: certificate not trusted")
    assert listener.requests == []


def test_https_verification_accepts_a_trusted_certificate(servers, certificate):
    listener = servers.start("https")
    check = HealthCheck(type="https", verify_certificate=True, sni="localhost", timeout=1.0)
    assert run(listener.port, check, cafile=str(certificate[0])).outcome == "up"
    wrong_name = HealthCheck(type="https", verify_certificate=True, sni="other.example.com", timeout=1.0)
    result = run(listener.port, wrong_name, cafile=str(certificate[0]))
    assert result.outcome == "fail" and "certificate not trusted" in result.error


def test_https_503_is_drain_like_a_quiesced_horizon_server(servers):
    listener = servers.start("https", status=503)
    result = run(listener.port, HTTPS)
    assert (result.outcome, result.status) == ("drain", 503)


def test_http_404_is_a_failure(servers):
    listener = servers.start("http", status=404)
    result = run(listener.port, HTTP)
    assert (result.outcome, result.status, result.error) == ("fail", 404, "answered 404")


def test_garbage_is_a_failure(servers):
    listener = servers.start("garbage")
    result = run(listener.port, HTTP)
    assert result.outcome == "fail" and result.error.startswith("not an HTTP response")


def test_https_against_a_plain_server_is_a_failure(servers):
    listener = servers.start("http")
    result = run(listener.port, HTTPS)
    assert result.outcome == "fail"
    assert result.error in ("connect and TLS handshake: connection closed by the server", "TLS: WRONG_VERSION_NUMBER")


def test_a_hang_fails_after_the_timeout(servers):
    listener = servers.start("hang")
    started = time.monotonic()
    result = run(listener.port, HealthCheck(type="http", timeout=0.3))
    elapsed = time.monotonic() - started
    assert result.outcome == "fail"
    assert result.error == "no answer within 0.3 s (waiting for the response)"
    assert 0.25 < elapsed < 1.0


def test_a_tls_hang_names_the_handshake(servers):
    listener = servers.start("hang")
    result = run(listener.port, HealthCheck(type="https", timeout=0.3))
    assert result.error == "no answer within 0.3 s (connect and TLS handshake)"
