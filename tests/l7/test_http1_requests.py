"""Good requests: events, framing, keep-alive, pipelining, upgrade and tunnel hand-over, limits."""
import pytest

from proxyworker.l7.http1 import (
    Body,
    EndOfMessage,
    Limits,
    Passthrough,
    ProtocolError,
    RequestHead,
    RequestParser,
)

from .helpers import feed_all, requests_of, summary

GET = b"GET /broker/xml?x=1 HTTP/1.1\r\nHost: view.example.com\r\nUser-Agent: t\r\n\r\n"
POST_CL = b"POST /broker/xml HTTP/1.1\r\nHost: view.example.com\r\nContent-Length: 11\r\n\r\nhello world"
POST_CHUNKED = (b"POST /broker/xml HTTP/1.1\r\nHost: view.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6;ext=1;q=\"a b\"\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n")
PIPELINE = GET + POST_CL + POST_CHUNKED + GET


def test_it_parses_a_get_head_with_everything_the_worker_needs():
    parser = RequestParser()
    events = parser.feed(GET)
    head, end = events
    assert isinstance(head, RequestHead) and isinstance(end, EndOfMessage)
    assert (head.method, head.target, head.version, head.framing) == (b"GET", b"/broker/xml?x=1", b"1.1", "none")
    assert head.headers == [(b"Host", b"view.example.com"), (b"User-Agent", b"t")]
    assert head.get(b"host") == b"view.example.com" and head.keep_alive and not head.upgrade and not head.tunnel
    assert parser.state == "waiting" and parser.paused


def test_it_reads_a_content_length_body_exactly():
    [(head, body, trailers)] = requests_of(POST_CL)
    assert head.framing == "length" and head.content_length == 11
    assert body == b"hello world" and trailers == []


def test_it_decodes_a_chunked_body_with_extensions_and_trailers():
    [(head, body, trailers)] = requests_of(POST_CHUNKED)
    assert head.framing == "chunked"
    assert body == b"hello world"
    assert trailers == [(b"X-Trailer", b"yes")]
    assert head.get_all(b"x-trailer") == []  # trailers are not mixed into the head


@pytest.mark.parametrize("step", [None, 1, 2, 3, 7, 64])
def test_it_gives_the_same_requests_however_the_bytes_are_split(step):
    whole = summary(requests_of(PIPELINE))
    assert len(whole) == 4
    assert summary(requests_of(PIPELINE, step)) == whole


def test_it_holds_a_pipelined_request_until_the_worker_asks_for_it():
    parser = RequestParser()
    events = parser.feed(GET + POST_CL)
    assert [type(e) for e in events] == [RequestHead, EndOfMessage]
    assert parser.paused and parser.buffered == len(POST_CL)
    assert parser.feed(b"") == []  # still held
    events = parser.next_request()
    assert events[0].method == b"POST" and events[1] == Body(b"hello world")


def test_a_body_arriving_later_comes_out_as_it_arrives():
    parser = RequestParser()
    events = parser.feed(POST_CL[:-6])
    assert [type(e) for e in events] == [RequestHead, Body]
    assert not parser.in_head  # the head is complete: the slowloris clock stops
    assert parser.feed(b" worl") == [Body(b" worl")]
    assert parser.feed(b"d") == [Body(b"d"), EndOfMessage()]


def test_in_head_is_true_only_while_a_head_is_incomplete():
    parser = RequestParser()
    assert not parser.in_head
    parser.feed(GET[:10])
    assert parser.in_head
    parser.feed(GET[10:])
    assert not parser.in_head


@pytest.mark.parametrize("version, connection, keep_alive", [
    (b"1.1", b"", True), (b"1.1", b"Connection: close\r\n", False),
    (b"1.1", b"Connection: foo, Close\r\n", False), (b"1.0", b"", False),
    (b"1.0", b"Connection: keep-alive\r\n", True),
])
def test_keep_alive_follows_the_version_and_connection_header(version, connection, keep_alive):
    [(head, _, _)] = requests_of(b"GET / HTTP/" + version + b"\r\nHost: a\r\n" + connection + b"\r\n")
    assert head.keep_alive is keep_alive


def test_an_http10_request_without_host_is_accepted():
    [(head, _, _)] = requests_of(b"GET / HTTP/1.0\r\n\r\n")
    assert head.version == b"1.0" and head.get(b"host") is None


def test_empty_lines_before_a_request_are_ignored():
    [(head, _, _)] = requests_of(b"\r\n\r\n" + GET)
    assert head.method == b"GET"


def test_content_length_zero_ends_the_message_at_once():
    [(head, body, _)] = requests_of(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert head.framing == "length" and head.content_length == 0 and body == b""


WEBSOCKET = (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_a_websocket_upgrade_waits_for_the_servers_answer_then_passes_through():
    parser = RequestParser()
    events = parser.feed(WEBSOCKET + b"\x81\x05early")
    assert events[0].upgrade == b"websocket" and isinstance(events[1], EndOfMessage)
    assert parser.state == "upgrade" and parser.paused
    assert parser.next_request() == []  # only the server's answer can release it
    assert parser.upgrade_accepted() == [Passthrough(b"\x81\x05early")]
    assert parser.feed(b"GET / HTTP/1.1\r\n\r\n") == [Passthrough(b"GET / HTTP/1.1\r\n\r\n")]


def test_a_refused_upgrade_goes_on_as_http():
    parser = RequestParser()
    parser.feed(WEBSOCKET + GET)
    events = parser.upgrade_refused()
    assert events[0].target == b"/broker/xml?x=1"
    assert parser.state == "waiting"


def test_an_upgrade_to_anything_but_websocket_is_an_ordinary_request():
    # h2c smuggling: an h2c upgrade forwarded would let the client speak HTTP/2 past the proxy
    parser = RequestParser()
    events = parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                         b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
    assert events[0].upgrade == b"" and parser.state == "waiting"


def test_upgrade_without_connection_upgrade_is_not_an_upgrade():
    [(head, _, _)] = requests_of(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
    assert head.upgrade == b""


def test_the_horizon_tunnel_request_switches_to_passthrough_after_its_head():
    parser = RequestParser()
    head_bytes = b"POST /ice/tunnel?abc HTTP/1.1\r\nHost: a\r\nCookie: JSESSIONID=1\r\n\r\n"
    events = parser.feed(head_bytes + b"\x00\x01binary tunnel frames\r\n\r\n")
    assert events[0].tunnel and events[1] == Passthrough(b"\x00\x01binary tunnel frames\r\n\r\n")
    assert len(events) == 2
    assert parser.feed(b"more") == [Passthrough(b"more")]


def test_a_path_that_merely_contains_the_tunnel_path_is_ordinary():
    [(head, _, _)] = requests_of(b"GET /broker/ice/tunnel HTTP/1.1\r\nHost: a\r\n\r\n")
    assert not head.tunnel


def test_tunnel_paths_can_be_configured():
    parser = RequestParser(tunnel_paths=(b"/custom",))
    events = parser.feed(b"GET /custom HTTP/1.1\r\nHost: a\r\n\r\nxyz")
    assert events[0].tunnel and events[1] == Passthrough(b"xyz")


def test_a_head_exactly_at_the_limit_is_accepted_and_one_byte_more_is_not():
    limits = Limits(max_head=200)
    base = b"GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n"
    exact = base.replace(b"X: ", b"X: " + b"v" * (200 - len(base)))
    assert len(exact) == 200
    assert isinstance(RequestParser(limits).feed(exact)[0], RequestHead)
    over = exact.replace(b"X: ", b"X: v")
    [error] = RequestParser(limits).feed(over)
    assert isinstance(error, ProtocolError) and error.status == 400 and "head larger" in error.reason


def test_an_endless_head_is_refused_before_it_is_complete():
    parser = RequestParser()
    events = feed_all(parser, b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Filler: " + b"a" * 70000, step=4096)
    assert isinstance(events[-1], ProtocolError) and events[-1].status == 400
    assert parser.state == "error"
    assert parser.feed(b"\r\n\r\n") == []  # nothing more is parsed on that connection


def test_the_default_head_limit_is_64_kib():
    assert Limits().max_head == 64 * 1024 and Limits().max_headers == 100


def test_header_count_limit():
    def request(n):
        return b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(n - 1)) + b"Host: a\r\n\r\n"

    assert isinstance(RequestParser().feed(request(100))[0], RequestHead)
    [error] = RequestParser().feed(request(101))
    assert error.status == 400 and "more than 100 header fields" in error.reason


def test_custom_limits_apply():
    [error] = RequestParser(Limits(max_headers=2)).feed(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n")
    assert isinstance(error, ProtocolError)


def test_a_large_chunked_body_in_many_chunks_is_decoded_exactly():
    chunks = [bytes([65 + i % 26]) * (i * 37 % 5000 + 1) for i in range(200)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    data = b"PUT /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body + GET
    for step in (None, 1000, 4093):
        results = requests_of(data, step)
        assert results[0][1] == b"".join(chunks)
        assert results[1][0].target == b"/broker/xml?x=1"


def test_header_values_lose_surrounding_whitespace_only():
    [(head, _, _)] = requests_of(b"GET / HTTP/1.1\r\nHost:   a  \r\nX-A:\tb  c\t\r\n\r\n")
    assert head.headers == [(b"Host", b"a"), (b"X-A", b"b  c")]


def test_a_tunnel_request_keeps_its_own_upgrade_token_and_may_carry_a_body():
    # the demo simulator (and UAG-style tunnels) upgrade /ice/tunnel to a protocol of their own
    parser = RequestParser()
    events = parser.feed(b"POST /ice/tunnel HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: ice-tunnel\r\n"
                         b"Content-Length: 4\r\n\r\nDATA")
    assert events[0].tunnel and events[0].upgrade == b"ice-tunnel"
    assert events[1] == Passthrough(b"DATA")


def test_underscores_in_ordinary_header_names_are_fine():
    [(head, _, _)] = requests_of(b"GET / HTTP/1.1\r\nHost: a\r\nX_Custom_Field: 1\r\n\r\n")
    assert head.get(b"x_custom_field") == b"1"
