"""What goes out: normalised framing, forwarding headers, and a second, independent parser (h11)
reading every forwarded request exactly as our parser did."""
import h11
import pytest

from proxyworker.l7.http1 import Body, EndOfMessage, RequestHead, RequestParser, ResponseParser
from proxyworker.l7.serialize import (
    body_bytes,
    client_keep_alive,
    end_bytes,
    error_response,
    forwarded_for,
    request_head_bytes,
    response_framing,
    response_head_bytes,
)

from .helpers import requests_of


def forward(data: bytes, client_ip="192.0.2.7", **options) -> bytes:
    """Every request in `data` as the proxy would write it to the server."""
    out = []
    for item in requests_of(data):
        if not isinstance(item[0], RequestHead):
            break  # an error ends the connection: nothing after it is forwarded
        head, body, trailers = item
        out.append(request_head_bytes(head, client_ip, **options))
        out.append(body_bytes(head.framing, body))
        out.append(end_bytes(head.framing, trailers))
    return b"".join(out)


def h11_reads(data: bytes) -> list:
    """The requests an independent server-side parser sees in `data`."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    out = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            assert not conn.trailing_data[0], "bytes left over that the server would read as another request"
            return out
        if isinstance(event, h11.Request):
            out.append([event.method, event.target, dict(event.headers), b""])
        elif isinstance(event, h11.Data):
            out[-1][3] += event.data
        elif isinstance(event, h11.EndOfMessage):
            if conn.our_state is h11.SEND_RESPONSE:
                conn.send(h11.Response(status_code=204, headers=[]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is h11.MUST_CLOSE:  # HTTP/1.0: the proxy opens a new server connection
                    rest = conn.trailing_data[0]
                    conn = h11.Connection(h11.SERVER)
                    conn.receive_data(rest)
                else:
                    conn.start_next_cycle()


def test_forwarding_headers_are_added_and_host_is_kept():
    out = forward(b"GET /broker/xml HTTP/1.1\r\nHost: view.example.com:443\r\nAccept: */*\r\n\r\n")
    assert out == (b"GET /broker/xml HTTP/1.1\r\nHost: view.example.com:443\r\nAccept: */*\r\n"
                   b"X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: https\r\n\r\n")


def test_an_existing_forwarded_for_chain_is_appended_to_and_proto_is_replaced():
    out = forward(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\nX-Forwarded-For: 10.0.0.3\r\n"
                  b"X-Forwarded-Proto: http\r\n\r\n", client_ip="2001:db8::1")
    [(method, target, headers, body)] = h11_reads(out)
    assert headers[b"x-forwarded-for"] == b"10.0.0.1, 10.0.0.2, 10.0.0.3, 2001:db8::1"
    assert headers[b"x-forwarded-proto"] == b"https"
    assert out.count(b"X-Forwarded-For") == 1 and out.count(b"X-Forwarded-Proto") == 1


def test_forwarded_for_without_a_chain():
    assert forwarded_for([(b"Host", b"a")], "127.0.0.1") == b"127.0.0.1"


def test_hop_by_hop_fields_and_those_connection_names_are_dropped_but_never_host():
    out = forward(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, Host\r\nKeep-Alive: 5\r\n"
                  b"X-Secret: 1\r\nTE: trailers\r\nProxy-Connection: close\r\nUpgrade: h2c\r\nX-Kept: 2\r\n\r\n")
    for gone in (b"Connection", b"Keep-Alive", b"X-Secret", b"TE:", b"Proxy-Connection", b"Upgrade"):
        assert gone not in out
    assert b"Host: a\r\n" in out and b"X-Kept: 2\r\n" in out


def test_chunked_requests_are_rechunked_and_read_the_same_by_an_independent_parser():
    data = (b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n"
            b"4;ext=1\r\nabcd\r\n00003\r\nefg\r\n0\r\nX-Checksum: 7\r\n\r\n")
    out = forward(data)
    assert b"Transfer-Encoding: chunked\r\n" in out and b"CHUNKED" not in out and b"ext=1" not in out
    [(method, target, headers, body)] = h11_reads(out)
    assert (method, target, body) == (b"POST", b"/up", b"abcdefg")


def test_content_length_is_written_once_and_normalised():
    out = forward(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\nabc")
    assert b"Content-Length: 3\r\n" in out and out.endswith(b"\r\n\r\nabc")


PIPELINE = (b"GET /1 HTTP/1.1\r\nHost: a\r\nCookie: JSESSIONID=x\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
            b"PUT /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
            b"DELETE /4?x=%20 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")


def test_every_forwarded_request_reads_identically_with_h11_and_with_our_parser():
    ours = [(h.method, h.target, b) for h, b, _ in requests_of(PIPELINE)]
    out = forward(PIPELINE)
    theirs = [(m, t, b) for m, t, _, b in h11_reads(out)]
    again = [(h.method, h.target, b) for h, b, _ in requests_of(out)]
    assert ours == theirs == again
    assert len(ours) == 4


def test_the_insert_cookie_never_reaches_the_server():
    [(head, _, _)] = requests_of(b"GET / HTTP/1.1\r\nHost: a\r\nCookie: VIEWLBSRV=tok; JSESSIONID=j\r\n"
                                 b"Cookie: VIEWLBSRV=tok\r\n\r\n")
    out = request_head_bytes(head, "127.0.0.1", drop_cookie=b"VIEWLBSRV")
    assert b"VIEWLBSRV" not in out and b"Cookie: JSESSIONID=j\r\n" in out and out.count(b"Cookie") == 1


def test_an_upgrade_request_keeps_its_upgrade_fields():
    [(head, _, _)] = requests_of(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                                 b"Sec-WebSocket-Key: k\r\n\r\n")
    out = request_head_bytes(head, "127.0.0.1")
    assert b"Connection: Upgrade\r\nUpgrade: websocket\r\n" in out and b"Sec-WebSocket-Key: k\r\n" in out


@pytest.mark.parametrize("version, keep, expected", [
    (b"1.1", True, None), (b"1.1", False, b"Connection: close"), (b"1.0", True, b"Connection: keep-alive"),
    (b"1.0", False, None),
])
def test_the_backend_connection_header(version, keep, expected):
    host = b"Host: a\r\n" if version == b"1.1" else b""
    [(head, _, _)] = requests_of(b"GET / HTTP/" + version + b"\r\n" + host + b"\r\n")
    out = request_head_bytes(head, "127.0.0.1", backend_keep_alive=keep)
    assert out.startswith(b"GET / HTTP/" + version)
    if expected:
        assert expected in out
    else:
        assert b"Connection" not in out


def response(data, method=b"GET"):
    parser = ResponseParser()
    parser.expect(method)
    events = parser.feed(data)
    return events[0], b"".join(e.data for e in events if isinstance(e, Body)), events[-1]


def test_a_chunked_response_to_an_http11_client_stays_chunked():
    head, body, end = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
                               b"Set-Cookie: JSESSIONID=x\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    framing = response_framing(head, b"1.1")
    out = response_head_bytes(head, framing, keep_alive=True) + body_bytes(framing, body) + end_bytes(framing)
    assert out == (b"HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"3\r\nabc\r\n0\r\n\r\n")


def test_a_chunked_response_to_an_http10_client_is_unchunked_and_closes():
    head, body, end = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    framing = response_framing(head, b"1.0")
    assert framing == "close"
    out = response_head_bytes(head, framing, keep_alive=False, client_version=b"1.0") + body_bytes(framing, body)
    assert out == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc"


def test_client_keep_alive_depends_on_the_request_and_the_response_framing():
    [(head, _, _)] = requests_of(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert client_keep_alive(head, "length") and not client_keep_alive(head, "close")
    [(closing, _, _)] = requests_of(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert not client_keep_alive(closing, "length")


def test_head_and_304_responses_keep_their_content_length():
    head, _, _ = response(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", method=b"HEAD")
    out = response_head_bytes(head, response_framing(head, b"1.1"), keep_alive=True)
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"


def test_interim_responses_get_no_connection_field():
    head, _, _ = response(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert response_head_bytes(head, "none", keep_alive=False) == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_a_passthrough_response_head_is_written_as_the_server_sent_it_plus_extras():
    parser = ResponseParser()
    parser.expect(b"GET", upgrade=True)
    head = parser.feed(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")[0]
    out = response_head_bytes(head, "passthrough", keep_alive=False, extra=[(b"Set-Cookie", b"VIEWLBSRV=t")])
    assert out == (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                   b"Set-Cookie: VIEWLBSRV=t\r\n\r\n")


def test_the_response_head_extra_fields_are_added():
    head, _, _ = response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    out = response_head_bytes(head, "length", keep_alive=True, extra=[(b"Set-Cookie", b"A=b; Secure")])
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nSet-Cookie: A=b; Secure\r\n\r\n"


@pytest.mark.parametrize("status, phrase", [(400, b"Bad Request"), (408, b"Request Timeout"),
                                            (405, b"Method Not Allowed"), (502, b"Bad Gateway")])
def test_error_responses_are_complete_and_close(status, phrase):
    data = error_response(status, "more than 100 header fields")
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    answer = conn.next_event()
    assert answer.status_code == status and answer.reason == phrase
    assert (b"connection", b"close") in list(answer.headers)
    assert b"more than 100 header fields" in conn.next_event().data
    assert isinstance(conn.next_event(), h11.EndOfMessage)


def test_body_and_end_bytes():
    assert body_bytes("chunked", b"x" * 17) == b"11\r\n" + b"x" * 17 + b"\r\n"
    assert body_bytes("chunked", b"") == b""  # an empty chunk would end the body
    assert body_bytes("length", b"abc") == b"abc"
    assert end_bytes("chunked", [(b"A", b"1")]) == b"0\r\nA: 1\r\n\r\n"
    assert end_bytes("length") == b""


def test_trailers_cannot_smuggle_forwarding_or_hop_by_hop_fields():
    trailers = [(b"X-Forwarded-For", b"1.2.3.4"), (b"Connection", b"close"), (b"X-Checksum", b"9")]
    assert end_bytes("chunked", trailers) == b"0\r\nX-Checksum: 9\r\n\r\n"


def test_every_event_kind_comes_out_in_order_for_a_chunked_request():
    parser = RequestParser()
    events = parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n")
    assert [type(e).__name__ for e in events] == ["RequestHead", "Body", "EndOfMessage"]
    assert isinstance(events[-1], EndOfMessage)
