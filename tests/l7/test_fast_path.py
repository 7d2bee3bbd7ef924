"""The parsers' fast path against their general path, on generated heads.

`RequestParser`/`ResponseParser` first try one regex pass over a head (`http1.FAST_REQUEST`,
`FAST_RESPONSE`) and write such heads out again from their raw bytes (`serialize`); anything
else goes the general way (line checks, llhttp for requests). The fast path is only an
optimisation: for every head, accepted or refused, both ways must give the same events (the
same errors, words included) and the same bytes to the server and to the client."""
import random

import pytest

from proxyworker.l7.http1 import (
    Body,
    EndOfMessage,
    Passthrough,
    ProtocolError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
)
from proxyworker.l7.serialize import request_head_bytes, response_framing, response_head_bytes

from .helpers import feed_all

METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT", b"PURGE",
           b"get", b"FOO", b"M-SEARCH"]
TARGETS = [b"/", b"/small", b"/a?b=c&d", b"/broker/xml", b"/ice/tunnel?x=1", b"/ice/tunnelx", b"/%zz#frag",
           b"/a\"<>{}|\\^`", b"*", b"http://h/x", b"a", b"//x", b"/ice/tun?nel"]
NAMES = [b"Host", b"host", b"HOST", b"Content-Length", b"content-length", b"Transfer-Encoding", b"Connection",
         b"connection", b"Upgrade", b"Cookie", b"cookie", b"Keep-Alive", b"Proxy-Connection", b"TE", b"Trailer",
         b"X-Forwarded-For", b"x-forwarded-proto", b"User-Agent", b"Accept", b"X_Forwarded_For",
         b"Transfer_Encoding", b"X_Custom", b"close", b"Close", b"X-A", b"Cookie2", b"Set-Cookie", b"set-cookie",
         b"Hostname", b"te-x", b"Accept-Encoding"]
VALUES = {
    b"host": [b"a", b"view.example.com:443", b""],
    b"content-length": [b"0", b"5", b"05", b"1 2", b"+1", b"x", b"99999999999999999999"],
    b"transfer-encoding": [b"chunked", b"Chunked", b"gzip, chunked", b"identity"],
    b"connection": [b"close", b"keep-alive", b"Upgrade", b"keep-alive, X-A", b"close, Accept", b"host", b"te, trailer"],
    b"upgrade": [b"websocket", b"h2c", b"ice-tunnel"],
    b"cookie": [b"JSESSIONID=abc", b"a=1; JSESSIONID=j; VIEWLBSRV=tok", b"VIEWLBSRV=tok", b"x=y"],
    b"x-forwarded-for": [b"10.0.0.1", b"", b"10.0.0.1, 10.0.0.2"],
    b"set-cookie": [b"JSESSIONID=s1; Path=/", b"JSESSIONID=; Max-Age=0"],
}
OTHER_VALUES = [b"v", b"a b", b"a\tb", b"\xe9t\xe9", b"x:y", b"\"q\"", b"", b" lead", b"trail ", b"\x01", b"a\x7fb",
                b"\t", b"a  b"]
PLAIN_VALUES = [b"v", b"a b", b"a\tb", b"\xe9t\xe9", b"x:y", b"\"q\""]
SEPARATORS = [b":", b":  ", b":\t", b" : "]


def field(rng: random.Random) -> bytes:
    name = rng.choice(NAMES)
    values = VALUES.get(name.lower().replace(b"_", b"-"), OTHER_VALUES)
    odd = rng.random() < 0.1  # most fields are written as clients and servers write them
    value = rng.choice(OTHER_VALUES if odd else values if values is not OTHER_VALUES else PLAIN_VALUES)
    sep = rng.choice(SEPARATORS) if rng.random() < 0.05 else b": "
    end = b"\r\n" if rng.random() < 0.98 else rng.choice([b"\n", b" \r\n", b"\r\n "])
    return name + sep + value + end


def request(rng: random.Random) -> bytes:
    method = rng.choice(METHODS[:8] if rng.random() < 0.8 else METHODS)
    target = rng.choice(TARGETS[:6] if rng.random() < 0.8 else TARGETS)
    version = rng.choice([b"1.1", b"1.1", b"1.0", b"2.0"])
    fields = [b"Host: a\r\n"] if rng.random() < 0.85 else []
    fields += [field(rng) for _ in range(rng.randint(0, 4))]
    rng.shuffle(fields)
    head = method + b" " + target + b" HTTP/" + version + b"\r\n" + b"".join(fields) + b"\r\n"
    body = rng.choice([b"", b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"])
    return head + body


def response(rng: random.Random) -> bytes:
    line = rng.choice([b"HTTP/1.1 200 OK", b"HTTP/1.1 200 ", b"HTTP/1.1 200", b"HTTP/1.0 200 OK", b"HTTP/1.1 204 No Content",
                       b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 100 Continue", b"HTTP/1.1 101 Switching Protocols",
                       b"HTTP/1.1 404 Not \xe9 Found", b"HTTP/1.1 302 Found", b"HTTP/1.1 099 X", b"HTTP/1.1 200 OK "])
    fields = [b"Content-Length: 5\r\n"] if rng.random() < 0.7 else []
    fields += [field(rng) for _ in range(rng.randint(0, 5))]
    rng.shuffle(fields)
    body = rng.choice([b"hello", b"hello", b"", b"hel", b"5\r\nhello\r\n0\r\n\r\n", b"helloEXTRA"])
    return line + b"\r\n" + b"".join(fields) + b"\r\n" + body


def comparable(events, merge=False) -> list:
    """Heads by all their fields; with `merge`, consecutive Body or Passthrough events as one and
    errors by status (a bare LF is named as soon as it arrives when the head comes in pieces)."""
    out = []
    for e in events:
        if merge and isinstance(e, ProtocolError):
            out.append(e.status)
        elif merge and out and type(e) in (Body, Passthrough) and type(out[-1]) is type(e):
            out[-1] = type(e)(out[-1].data + e.data)
        else:
            out.append(repr(e) if isinstance(e, (RequestHead, ResponseHead)) else e)
    return out


def both_requests(data: bytes, step=None):
    out = []
    for fast in (True, False):
        parser = RequestParser()
        parser.fast = fast
        events = feed_all(parser, data, step)
        while parser.state == "waiting":
            events += parser.next_request()
        out.append(events)
    return out


def forwarded(events) -> list:
    heads = [e for e in events if isinstance(e, RequestHead)]
    out = []
    for head in heads:
        for options in ({}, {"drop_cookie": b"VIEWLBSRV"}, {"backend_keep_alive": False},
                        {"extra": [(b"X-Extra", b"1")], "proto": b"http"}):
            out.append(request_head_bytes(head, "192.0.2.9", **options))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_requests_read_and_forwarded_alike_both_ways(seed):
    rng = random.Random(seed)
    fast_heads = 0
    for _ in range(700):
        data = request(rng)
        fast, general = both_requests(data)
        assert comparable(fast) == comparable(general), data
        assert forwarded(fast) == forwarded(general), data
        fast_heads += sum(1 for e in fast if isinstance(e, RequestHead) and e.raw is not None)
    assert fast_heads > 150  # the generator reaches the fast path, not only the general one


def test_requests_fed_in_pieces_read_alike_both_ways():
    rng = random.Random(99)
    for _ in range(150):
        data = request(rng)
        step = rng.choice([1, 3, 7, 16])
        fast, general = both_requests(data, step)
        assert comparable(fast) == comparable(general), data
        assert comparable(fast, merge=True) == comparable(both_requests(data)[1], merge=True), data


def both_responses(data: bytes, method: bytes, upgrade: bool, tunnel: bool):
    out = []
    for fast in (True, False):
        parser = ResponseParser()
        parser.fast = fast
        parser.expect(method, upgrade, tunnel)
        out.append(parser.feed(data) + parser.feed_eof())
    return out


def written(events) -> list:
    out = []
    for head in (e for e in events if isinstance(e, ResponseHead)):
        for version, keep in ((b"1.1", True), (b"1.1", False), (b"1.0", True)):
            framing = response_framing(head, version)
            extra = [(b"Set-Cookie", b"VIEWLBSRV=t; Path=/")] if keep else ()
            out.append(response_head_bytes(head, framing, keep_alive=keep, client_version=version, extra=extra))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_responses_read_and_written_alike_both_ways(seed):
    rng = random.Random(1000 + seed)
    fast_heads = 0
    for _ in range(700):
        data = response(rng)
        method = rng.choice([b"GET", b"GET", b"HEAD"])
        upgrade, tunnel = rng.random() < 0.1, rng.random() < 0.05
        fast, general = both_responses(data, method, upgrade, tunnel)
        assert comparable(fast) == comparable(general), data
        assert written(fast) == written(general), data
        fast_heads += sum(1 for e in fast if isinstance(e, ResponseHead) and e.raw is not None)
    assert fast_heads > 150


def test_a_whole_response_in_one_read_gives_the_usual_events():
    parser = ResponseParser()
    parser.expect(b"GET")
    head, body, end = parser.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
    assert isinstance(head, ResponseHead) and head.raw is not None
    assert body == Body(b"hello") and end == EndOfMessage() and parser.idle
    parser.expect(b"GET")  # the same connection, the next response in two reads
    events = parser.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe") + parser.feed(b"llo")
    assert [type(e) for e in events] == [ResponseHead, Body, Body, EndOfMessage] and parser.idle


def test_a_head_the_fast_path_read_is_written_out_as_received_minus_hop_by_hop():
    data = (b"GET /a?b HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"
            b"Keep-Alive: timeout=5\r\nCookie: JSESSIONID=j\r\nX-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\n\r\n")
    [head, _end] = RequestParser().feed(data)
    assert head.raw == data and head.cookies == [(b"Cookie", b"JSESSIONID=j")] and head.forwarded == [b"10.0.0.1"]
    assert request_head_bytes(head, "192.0.2.9") == (
        b"GET /a?b HTTP/1.1\r\nHost: a\r\nCookie: JSESSIONID=j\r\nAccept: */*\r\n"
        b"X-Forwarded-For: 10.0.0.1, 192.0.2.9\r\nX-Forwarded-Proto: https\r\n\r\n")
