"""Writing messages back out, with framing the next hop can read only one way.

The proxy never forwards the head it received: it writes a new one from the
parsed event. Hop-by-hop fields (Connection and what it names, Keep-Alive,
TE, Trailer, Upgrade, Proxy-Connection) are dropped, and the body framing is
written from what the parser decided: exactly one `Content-Length: n`, or
`Transfer-Encoding: chunked` with chunks re-encoded by us, or nothing.
Requests gain `X-Forwarded-For` (appended to the client's chain) and
`X-Forwarded-Proto`; Host and everything else end-to-end is kept as sent.

A head the parser read on its fast path (`raw` set: every field already
written `name: value`) is copied from its bytes with the dropped lines cut
out, which gives exactly the bytes writing it field by field would give
(tests/l7/test_fast_path.py compares the two).
"""
from __future__ import annotations

import re
from http import HTTPStatus

from .cookies import strip_cookie
from .http1 import RequestHead, ResponseHead

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
    b"transfer-encoding", b"content-length",  # framing: rewritten from the parsed message
})
REPLACED = frozenset({b"x-forwarded-for", b"x-forwarded-proto"})
NEVER_LISTED = frozenset({b"host"})  # `Connection: host` must not make the proxy drop Host


_DROPPED_REQUEST = HOP_BY_HOP | REPLACED
# The same names as field lines of a raw head (each line with the CRLF before it), for heads
# the parser read on its fast path: `raw` minus these lines is what the list below would write.
_REQUEST_LINES = re.compile(rb"\r\n(?:" + b"|".join(re.escape(n) for n in sorted(_DROPPED_REQUEST)) + rb"):[^\r]*",
                            re.IGNORECASE)
_RESPONSE_LINES = re.compile(rb"\r\n(?:" + b"|".join(re.escape(n) for n in sorted(HOP_BY_HOP)) + rb"):[^\r]*",
                             re.IGNORECASE)


def _dropped(head) -> frozenset:
    """Hop-by-hop names, and those the Connection header lists (parsed once, in the head)."""
    return HOP_BY_HOP | (head.connection - NEVER_LISTED) if head.connection else HOP_BY_HOP


def _raw_fields(head, lines, dropped: frozenset) -> bytes | None:
    """The start line and the fields to keep, taken from the head as received; None when the
    head must be written field by field (not read by the fast path, or the Connection header
    names a field that the fixed `lines` do not cover)."""
    raw = head.raw
    if raw is None:
        return None
    listed = head.connection - dropped - NEVER_LISTED if head.connection else None
    if listed:
        lowered = raw.lower()
        if any(b"\r\n" + name + b":" in lowered for name in listed):
            return None
    return lines.sub(b"", raw[:-4]) if head.hop else raw[:-4]


def forwarded_for(headers, client_ip) -> bytes:
    """The client's X-Forwarded-For chain (all its fields, in order) with `client_ip` appended."""
    return _chain([v for k, v in headers if k.lower() == b"x-forwarded-for"], client_ip)


def _chain(values, client_ip) -> bytes:
    ip = client_ip if isinstance(client_ip, bytes) else client_ip.encode("ascii")
    if not values:
        return ip
    chain = [v for v in values if v]
    chain.append(ip)
    return b", ".join(chain)


def request_head_bytes(head: RequestHead, client_ip: str | bytes, *, proto: bytes = b"https",
                       backend_keep_alive: bool = True, drop_cookie: bytes | None = None,
                       extra=()) -> bytes:
    """The request head to send to the server. `drop_cookie`: the insert cookie, which servers never see."""
    kept = None
    if not drop_cookie or head.raw is None or drop_cookie not in head.raw:
        kept = _raw_fields(head, _REQUEST_LINES, _DROPPED_REQUEST)
    if kept is None:
        headers = strip_cookie(head.headers, drop_cookie) if drop_cookie else head.headers
        dropped = _dropped(head) | REPLACED if head.connection else _DROPPED_REQUEST
        out = [b"%s %s HTTP/%s" % (head.method, head.target, head.version)]
        out += [b"\r\n" + name + b": " + value for name, value in headers if name.lower() not in dropped]
        kept = b"".join(out)
    out = [kept, b"\r\n"]
    if head.framing == "chunked":
        out.append(b"Transfer-Encoding: chunked\r\n")
    elif head.framing == "length":
        out.append(b"Content-Length: %d\r\n" % head.content_length)
    if head.upgrade:
        out.append(b"Connection: Upgrade\r\nUpgrade: " + head.upgrade + b"\r\n")
    elif head.version == b"1.1" and not backend_keep_alive:
        out.append(b"Connection: close\r\n")
    elif head.version == b"1.0" and backend_keep_alive:
        out.append(b"Connection: keep-alive\r\n")
    out += (b"X-Forwarded-For: ", _chain(head.forwarded, client_ip), b"\r\nX-Forwarded-Proto: ", proto, b"\r\n")
    for name, value in extra:
        out += (name, b": ", value, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def response_framing(head: ResponseHead, client_version: bytes) -> str:
    """How the response body goes to the client: an HTTP/1.0 client cannot read chunks."""
    if head.framing == "chunked" and client_version != b"1.1":
        return "close"
    return head.framing


def client_keep_alive(request: RequestHead, framing_out: str) -> bool:
    """Whether the client connection stays open after this response."""
    return request.keep_alive and framing_out not in ("close", "passthrough")


def response_head_bytes(head: ResponseHead, framing_out: str, *, keep_alive: bool,
                        client_version: bytes = b"1.1", extra=()) -> bytes:
    """The response head for the client. A passthrough head (101, tunnel) goes out as the server sent it."""
    if framing_out == "passthrough":
        if head.raw is not None:
            out = [head.raw[:-4], b"\r\n"]
        else:
            out = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason)]
            out.extend(name + b": " + value + b"\r\n" for name, value in head.headers)
    else:
        kept = _raw_fields(head, _RESPONSE_LINES, HOP_BY_HOP)
        if kept is None:
            dropped = _dropped(head)
            out = [b"HTTP/1.1 %d %s" % (head.status, head.reason)]
            out += [b"\r\n" + name + b": " + value for name, value in head.headers if name.lower() not in dropped]
            kept = b"".join(out)
        out = [kept, b"\r\n"]
        if framing_out == "chunked":
            out.append(b"Transfer-Encoding: chunked\r\n")
        elif framing_out == "length":
            out.append(b"Content-Length: %d\r\n" % head.content_length)
        elif framing_out == "none" and head.length_value is not None:
            # HEAD and 304 describe the size of the body they do not carry
            out += (b"Content-Length: ", head.length_value, b"\r\n")
        if not head.interim:
            if not keep_alive:
                out.append(b"Connection: close\r\n")
            elif client_version == b"1.0":
                out.append(b"Connection: keep-alive\r\n")
    for name, value in extra:
        out += (name, b": ", value, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def body_bytes(framing: str, data: bytes) -> bytes:
    if framing == "chunked":
        return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
    return data


def end_bytes(framing: str, trailers=()) -> bytes:
    """The end of a body. Trailers go on without hop-by-hop and forwarding fields: a server that
    merges trailers into headers must not receive an `X-Forwarded-For` the client wrote itself."""
    if framing != "chunked":
        return b""
    kept = (name + b": " + value + b"\r\n" for name, value in trailers if name.lower() not in HOP_BY_HOP | REPLACED)
    return b"0\r\n" + b"".join(kept) + b"\r\n"


def error_response(status: int, message: str = "") -> bytes:
    """A complete response that ends the connection (400 for bad framing, 408 for a slow head ...)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    body = f"{status} {reason}{': ' + message if message else ''}\n".encode("utf-8", "replace")
    return (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
            b"Connection: close\r\nCache-Control: no-store\r\n\r\n%s") % (status, reason.encode(), len(body), body)
