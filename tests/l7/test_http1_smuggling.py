"""Requests whose framing could be read two ways: each one is refused, nothing of it is handed on.

The classics (CL.TE, TE.CL, TE.TE with obfuscated Transfer-Encoding), duplicate
and odd Content-Length, malformed chunks, line-ending tricks, obs-fold, bad
names. For a bad head, no RequestHead event may come out at all; for a bad
chunked body, the error comes before any byte beyond the bad point.
"""
import pytest

from proxyworker.l7.http1 import Body, EndOfMessage, ProtocolError, RequestHead, RequestParser

from .helpers import feed_all

H = b"POST /broker/xml HTTP/1.1\r\nHost: a\r\n"
CHUNKED = H + b"Transfer-Encoding: chunked\r\n\r\n"

BAD_HEADS = {
    # CL.TE / TE.CL: both framings present; every parser pair that disagrees on precedence is exploitable
    "cl-te": H + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "te-cl": H + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
    "te-cl-zero": H + b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
    # TE.TE: obfuscated Transfer-Encoding that one side ignores and the other honours
    "te-gzip-chunked": H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te-chunked-identity": H + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te-chunked-twice-list": H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "te-two-headers": H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n",
    "te-two-chunked-headers": H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-xchunked": H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-chunked-suffix": H + b"Transfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n",
    "te-space-before-colon": H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te-obs-fold": H + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "te-obs-fold-tab": H + b"X: a\r\n\tTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-vertical-tab": H + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    "te-nul": H + b"Transfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n",
    "te-leading-space-name": H + b" Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-underscore": H + b"Transfer_Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
    "xff-underscore": b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 127.0.0.1\r\n\r\n",
    "te-empty": H + b"Transfer-Encoding:\r\n\r\n",
    "te-gzip": H + b"Transfer-Encoding: gzip\r\n\r\nabc",
    "te-in-http10": b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    # Content-Length games
    "cl-duplicate-same": H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "cl-duplicate-differing": H + b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    "cl-list": H + b"Content-Length: 3, 3\r\n\r\nabc",
    "cl-negative": H + b"Content-Length: -1\r\n\r\n",
    "cl-plus": H + b"Content-Length: +3\r\n\r\nabc",
    "cl-hex": H + b"Content-Length: 0x3\r\n\r\nabc",
    "cl-float": H + b"Content-Length: 3.0\r\n\r\nabc",
    "cl-empty": H + b"Content-Length:\r\n\r\n",
    "cl-letters": H + b"Content-Length: abc\r\n\r\n",
    "cl-inner-space": H + b"Content-Length: 1 2\r\n\r\n",
    "cl-overflow": H + b"Content-Length: 18446744073709551617\r\n\r\n",
    "cl-19-digits": H + b"Content-Length: 1000000000000000000\r\n\r\n",
    "cl-space-before-colon": H + b"Content-Length : 3\r\n\r\nabc",
    "cl-obs-fold": H + b"Content-Length:\r\n 3\r\n\r\nabc",
    # line endings
    "bare-lf-everywhere": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare-lf-in-header": b"GET / HTTP/1.1\r\nHost: a\nTransfer-Encoding: chunked\r\n\r\n",
    "bare-cr-in-header": b"GET / HTTP/1.1\r\nHost: a\rTransfer-Encoding: chunked\r\n\r\n",
    "bare-cr-in-value": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
    "lf-cr": b"GET / HTTP/1.1\n\rHost: a\r\n\r\n",
    "head-ends-lf-crlf": b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    # names, values, request line
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    "space-in-name": b"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n",
    "empty-name": b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n",
    "no-colon": b"GET / HTTP/1.1\r\nHost: a\r\nJustAName\r\n\r\n",
    "control-in-value": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
    "del-in-value": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
    "two-spaces-in-request-line": b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    "tab-in-request-line": b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "http09": b"GET /\r\n\r\n",
    "http2-version": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "http12-version": b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    "lowercase-version": b"GET / http/1.1\r\nHost: a\r\n\r\n",
    "trailing-space-version": b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
    "unknown-method": b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n",
    "lowercase-method": b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    "utf8-in-target": b"GET /\xc3\xa4 HTTP/1.1\r\nHost: a\r\n\r\n",
    "no-host": b"GET / HTTP/1.1\r\nX: a\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "upgrade-with-body": (b"POST /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                          b"Content-Length: 5\r\n\r\nGET /"),
    "upgrade-with-chunked-body": (b"POST /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
}

BAD_BODIES = {
    # chunk sizes
    "size-overflow": CHUNKED + b"FFFFFFFFFFFFFFFFF1\r\nx\r\n0\r\n\r\n",
    "size-17-digits": CHUNKED + b"00000000000000001\r\nx\r\n0\r\n\r\n",
    "size-too-large": CHUNKED + b"10000000000\r\nx",
    "size-negative": CHUNKED + b"-1\r\nx\r\n0\r\n\r\n",
    "size-0x": CHUNKED + b"0x1\r\nx\r\n0\r\n\r\n",
    "size-space-after": CHUNKED + b"1 \r\nx\r\n0\r\n\r\n",
    "size-space-before": CHUNKED + b" 1\r\nx\r\n0\r\n\r\n",
    "size-tab-before-ext": CHUNKED + b"1\t;a=b\r\nx\r\n0\r\n\r\n",
    "size-empty": CHUNKED + b"\r\nx\r\n0\r\n\r\n",
    "size-not-hex": CHUNKED + b"g\r\nx\r\n0\r\n\r\n",
    "size-bare-lf": CHUNKED + b"1\nx\r\n0\r\n\r\n",
    "size-bare-cr": CHUNKED + b"1\rx\r\n0\r\n\r\n",
    "size-line-endless": CHUNKED + b"1;" + b"a" * 5000,
    # extensions
    "ext-control": CHUNKED + b"1;a=\x01\r\nx\r\n0\r\n\r\n",
    "ext-bare-lf": CHUNKED + b"1;a\nb\r\nx\r\n0\r\n\r\n",
    "ext-unterminated-quote": CHUNKED + b"1;a=\"b\r\nx\r\n0\r\n\r\n",
    "ext-empty-name": CHUNKED + b"1;=b\r\nx\r\n0\r\n\r\n",
    "ext-space": CHUNKED + b"1; a=b\r\nx\r\n0\r\n\r\n",
    # data framing
    "data-too-long": CHUNKED + b"1\r\nxy\r\n0\r\n\r\n",
    "data-no-crlf": CHUNKED + b"1\r\nxYY0\r\n\r\n",
    "data-lf-only": CHUNKED + b"1\r\nx\n0\r\n\r\n",
    "data-cr-only": CHUNKED + b"1\r\nx\r0\r\n\r\n",
    # trailers
    "trailer-content-length": CHUNKED + b"0\r\nContent-Length: 5\r\n\r\n",
    "trailer-transfer-encoding": CHUNKED + b"0\r\nTransfer-Encoding: chunked\r\n\r\n",
    "trailer-host": CHUNKED + b"0\r\nHost: evil\r\n\r\n",
    "trailer-obs-fold": CHUNKED + b"0\r\nX: a\r\n b\r\n\r\n",
    "trailer-space-in-name": CHUNKED + b"0\r\nX Y: a\r\n\r\n",
    "trailer-bare-lf": CHUNKED + b"0\r\nX: a\nY: b\r\n\r\n",
    "trailer-no-colon": CHUNKED + b"0\r\nGET / HTTP/1.1\r\n\r\n",
    "trailer-endless": CHUNKED + b"0\r\n" + b"X-F: v\r\n" * 20000,
}


def _only_error(events):
    assert events, "the parser said nothing"
    assert isinstance(events[-1], ProtocolError), events
    return events[-1]


@pytest.mark.parametrize("name", sorted(BAD_HEADS))
@pytest.mark.parametrize("step", [None, 1])
def test_a_bad_head_is_refused_with_nothing_handed_on(name, step):
    parser = RequestParser()
    events = feed_all(parser, BAD_HEADS[name], step)
    error = _only_error(events)
    assert len(events) == 1, f"something was handed on before the error: {events}"
    assert error.status in (400, 405) and error.reason
    assert parser.state == "error"
    assert parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == []  # the connection is finished


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
@pytest.mark.parametrize("step", [None, 1, 3])
def test_a_bad_chunked_body_is_refused_before_any_byte_past_the_fault(name, step):
    parser = RequestParser()
    events = feed_all(parser, BAD_BODIES[name], step)
    error = _only_error(events)
    assert error.status == 400
    assert isinstance(events[0], RequestHead)
    assert not any(isinstance(e, EndOfMessage) for e in events), "a broken body must never look complete"
    body = b"".join(e.data for e in events if isinstance(e, Body))
    assert body in (b"", b"x"), body  # at most the one good data byte before the fault
    assert parser.feed(b"0\r\n\r\n") == []


def test_connect_is_refused_with_405():
    [error] = RequestParser().feed(b"CONNECT internal:3389 HTTP/1.1\r\nHost: internal:3389\r\n\r\n")
    assert error.status == 405


def test_cl_te_smuggle_does_not_produce_the_hidden_request():
    payload = BAD_HEADS["cl-te"] + b"ET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    parser = RequestParser()
    events = parser.feed(payload)
    assert [type(e) for e in events] == [ProtocolError]
    assert parser.next_request() == []


def test_chunk_extension_with_quoted_string_is_fine():
    events = RequestParser().feed(CHUNKED + b"3;name=\"va;l\\\"ue\"\r\nabc\r\n0\r\n\r\n")
    assert [type(e) for e in events] == [RequestHead, Body, EndOfMessage]


def test_errors_are_the_same_however_the_bytes_are_split():
    for name, data in {**BAD_HEADS, **BAD_BODIES}.items():
        whole = _only_error(RequestParser().feed(data)).status
        for step in (2, 5, 11):
            assert _only_error(feed_all(RequestParser(), data, step)).status == whole, name


def test_a_good_request_after_a_refused_one_on_another_connection_is_served():
    RequestParser().feed(BAD_HEADS["te-cl"])
    events = RequestParser().feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(events[0], RequestHead)
