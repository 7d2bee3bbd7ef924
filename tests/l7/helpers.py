"""Feeding parsers in tests: whole, byte by byte, and split at every position."""
from proxyworker.l7.http1 import Body, EndOfMessage, Passthrough, ProtocolError, RequestHead, RequestParser


def feed_all(parser, data: bytes, step: int | None = None) -> list:
    """Feeds `data` whole, or in pieces of `step` bytes; returns all events."""
    if not step:
        return parser.feed(data)
    events = []
    for i in range(0, len(data), step):
        events.extend(parser.feed(data[i:i + step]))
    return events


def requests_of(data: bytes, step: int | None = None, parser=None) -> list:
    """Parses every request in `data`, calling next_request() after each: a list of
    (head, body bytes, trailers) or ("error", status, reason), in order."""
    parser = parser or RequestParser()
    pending = feed_all(parser, data, step)
    out, head, body = [], None, b""
    while True:
        for event in pending:
            if isinstance(event, RequestHead):
                head, body = event, b""
            elif isinstance(event, Body):
                body += event.data
            elif isinstance(event, EndOfMessage):
                out.append((head, body, event.trailers))
            elif isinstance(event, ProtocolError):
                out.append(("error", event.status, event.reason))
            elif isinstance(event, Passthrough):
                out.append(("passthrough", event.data))
        if parser.state != "waiting":
            return out
        pending = parser.next_request()


def summary(results) -> list:
    """Comparable form of requests_of(): method, target, headers, body, trailers."""
    out = []
    for item in results:
        if isinstance(item[0], RequestHead):
            head, body, trailers = item
            out.append((head.method, head.target, head.headers, head.framing, body, trailers))
        elif item[0] == "passthrough":
            out.append(item)
        else:
            out.append(item[:2])
    return out
