"""Server responses: every way a response body can be framed, interim answers, hand-over, bad servers."""
import pytest

from proxyworker.l7.http1 import (
    Body,
    EndOfMessage,
    Passthrough,
    ProtocolError,
    ResponseHead,
    ResponseParser,
)

from .helpers import feed_all


def respond(data, method=b"GET", upgrade=False, tunnel=False, step=None, eof=False):
    parser = ResponseParser()
    parser.expect(method, upgrade, tunnel)
    events = feed_all(parser, data, step)
    if eof:
        events += parser.feed_eof()
    return parser, events


def body_of(events):
    return b"".join(e.data for e in events if isinstance(e, Body))


OK_CL = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 5\r\n\r\nhello"
OK_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\nX-T: 1\r\n\r\n"


@pytest.mark.parametrize("step", [None, 1, 4])
def test_content_length_response(step):
    parser, events = respond(OK_CL, step=step)
    head = events[0]
    assert isinstance(head, ResponseHead) and head.status == 200 and head.reason == b"OK"
    assert head.framing == "length" and head.content_length == 5 and head.keep_alive
    assert body_of(events) == b"hello" and isinstance(events[-1], EndOfMessage)
    assert parser.idle


@pytest.mark.parametrize("step", [None, 1, 5])
def test_chunked_response_with_trailers(step):
    parser, events = respond(OK_CHUNKED, step=step)
    assert events[0].framing == "chunked"
    assert body_of(events) == b"hello"
    assert events[-1] == EndOfMessage([(b"X-T", b"1")])
    assert parser.idle


def test_a_response_without_length_ends_when_the_server_closes():
    parser, events = respond(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstream of bytes")
    assert events[0].framing == "close" and not events[0].keep_alive
    assert body_of(events) == b"stream of bytes" and not isinstance(events[-1], EndOfMessage)
    assert parser.feed_eof() == [EndOfMessage()]


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_ignore_content_length(status):
    parser, events = respond(b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status)
    assert events[0].framing == "none" and isinstance(events[1], EndOfMessage) and parser.idle


def test_a_head_response_has_no_body_whatever_it_announces():
    parser, events = respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", method=b"HEAD")
    assert events[0].framing == "none" and events[0].get(b"content-length") == b"1234"
    assert isinstance(events[1], EndOfMessage) and parser.idle


def test_interim_responses_come_before_the_final_one():
    _, events = respond(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + OK_CL)
    heads = [e for e in events if isinstance(e, ResponseHead)]
    assert [h.status for h in heads] == [100, 103, 200]
    assert heads[0].interim and heads[1].interim and not heads[2].interim
    assert [type(e) for e in events].count(EndOfMessage) == 1


def test_101_after_an_upgrade_request_passes_through():
    parser, events = respond(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                             b"Sec-WebSocket-Accept: x\r\n\r\n\x81\x02hi", upgrade=True)
    assert events[0].status == 101 and events[0].framing == "passthrough" and not events[0].interim
    assert events[1] == Passthrough(b"\x81\x02hi")
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\n") == [Passthrough(b"HTTP/1.1 200 OK\r\n\r\n")]


def test_101_without_an_upgrade_request_is_a_bad_server():
    _, events = respond(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert isinstance(events[-1], ProtocolError) and events[-1].status == 502


def test_a_refused_upgrade_is_an_ordinary_response():
    parser, events = respond(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno", upgrade=True)
    assert events[0].status == 403 and body_of(events) == b"no" and parser.idle


@pytest.mark.parametrize("status", [b"101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ice-tunnel",
                                    b"200 OK", b"403 Forbidden\r\nContent-Length: 3"])
def test_the_tunnel_response_passes_through_after_its_head(status):
    parser, events = respond(b"HTTP/1.1 " + status + b"\r\n\r\nTUNNEL uag1 alice\n", method=b"POST", tunnel=True)
    assert events[0].framing == "passthrough"
    assert events[1] == Passthrough(b"TUNNEL uag1 alice\n")
    assert parser.feed(b"HEARTBEAT") == [Passthrough(b"HEARTBEAT")]


def test_keep_alive_of_the_server_connection():
    _, events = respond(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert not events[0].keep_alive
    _, events = respond(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not events[0].keep_alive and events[0].version == b"1.0"
    _, events = respond(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
    assert events[0].keep_alive


def test_a_status_line_without_reason_is_accepted():
    _, events = respond(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
    assert events[0].status == 200 and events[0].reason == b""


def test_responses_on_one_connection_one_after_another():
    parser = ResponseParser()
    for n in range(3):
        parser.expect(b"GET")
        events = parser.feed(OK_CL)
        assert body_of(events) == b"hello" and parser.idle, n


BAD = {
    "cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "te-gzip-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "chunk-no-crlf": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXX0\r\n\r\n",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "http2": b"HTTP/2 200 OK\r\n\r\n",
    "status-99": b"HTTP/1.1 099 X\r\n\r\n",
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "huge-head": b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_response_is_a_502(name):
    parser, events = respond(BAD[name])
    assert isinstance(events[-1], ProtocolError) and events[-1].status == 502
    assert not any(isinstance(e, EndOfMessage) for e in events)
    assert parser.feed(b"more") == []


def test_data_the_server_sends_without_a_request_is_refused():
    parser = ResponseParser()
    [error] = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert error.status == 502 and "without a request" in error.reason


def test_extra_bytes_after_a_response_are_refused():
    parser, events = respond(OK_CL + b"HTTP/1.1 200 OK\r\n")
    assert isinstance(events[-2], EndOfMessage) and isinstance(events[-1], ProtocolError)


def test_a_server_closing_mid_response_is_reported():
    parser, events = respond(OK_CL[:-2], eof=True)
    assert isinstance(events[-1], ProtocolError) and "middle of a response" in events[-1].reason
    parser = ResponseParser()
    assert parser.feed_eof() == []  # an idle keep-alive connection closing is normal
