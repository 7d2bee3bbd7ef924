"""Strict HTTP/1.1 framing for the layer-7 proxy, sans-io.

A `RequestParser` is fed the client's bytes and returns events; a
`ResponseParser` does the same for one server connection. Neither touches a
socket. The rule they enforce: a message is only handed on when its framing can
be read in exactly one way, because the proxy and the server must agree on
where every request ends (request smuggling lives in their disagreements).

How a request head is read:
1. this module finds the end of the head itself (the first CRLF CRLF, within
   `Limits.max_head`);
2. the fast path (`FAST_REQUEST`) reads the heads real clients send in one
   strict regex pass: a method llhttp knows, an origin-form target, every field
   `token: value` with field characters only, at most `Limits.max_headers`;
   anything else goes the general way, which accepts nothing the fast path
   would refuse and words every error (tests/l7/test_fast_path.py compares
   the two on generated heads);
3. the general way refuses bare CR or LF, obs-fold, too many fields and a
   request line that is not exactly `METHOD SP target SP HTTP/1.x`, then
   llhttp (through httptools) parses the head: it rejects invalid tokens and
   characters, header names with spaces, non-numeric or duplicate
   Content-Length, Content-Length together with Transfer-Encoding;
4. either way the semantic rules are checked here: Transfer-Encoding must be
   exactly `chunked` and only in HTTP/1.1, one Host, no CONNECT, no body on an
   Upgrade request, no field name imitating a framing field with underscores.
A response head is read by the same kind of regex (`FAST_RESPONSE`, else one
strict field regex per line: see `_fields`), with llhttp added when its body
is chunked. A chunked head of either kind always goes the general way.
Chunked bodies are decoded by `chunked.ChunkedDecoder` (which knows where the
body ends) and fed to llhttp as a witness: if the two parsers disagree about
the end of the message, it is refused.

Flow control: after each complete request the parser holds further bytes until
the worker calls `next_request()` (one request in flight per client
connection, so responses come back in order and each request is routed on its
own). An Upgrade (WebSocket) request holds until the worker reports the
server's answer: `upgrade_accepted()` (101) switches to passthrough,
`upgrade_refused()` resumes HTTP. A Horizon tunnel request (`/ice/tunnel`,
whatever it upgrades to, e.g. `Upgrade: ice-tunnel`, or a plain POST that the
server turns into a stream) switches to passthrough right after its head: from
then on the bytes belong to the server alone and are forwarded untouched, and
the response parser passes the server's bytes through after the response head.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import httptools

from .chunked import FIELD_LINE, ChunkedDecoder, FramingError

MAX_HEAD = 64 * 1024
MAX_HEADERS = 100
TUNNEL_PATHS = (b"/ice/tunnel",)
ALLOWED_UPGRADES = (b"websocket",)  # others (h2c ...) are stripped, except on the tunnel path

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([!-~]+) HTTP/1\.([01])")
STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: ([\t -~\x80-\xff]*))?")
DIGITS = re.compile(rb"[0-9]{1,18}")


# --- the fast path: the heads real clients and servers send, read in one strict pass in C ---
#
# A head is first offered to `_fast_request`/`_fast_response`: one regex match over the
# whole head, then one scan for the fields the proxy acts on. They accept only what the
# general path below accepts too, with the same result (tests/l7/test_fast_path.py reads
# generated heads both ways and compares events and forwarded bytes); everything else
# (another method, a target not in origin form, a field not written `name: value`, a
# chunked body, more than `max_headers` fields, any error) goes the general way, which
# also words the error. For requests that way includes llhttp, so the fast path only
# accepts what llhttp accepts as well: the methods below (llhttp knows them all),
# origin-form targets of visible ASCII, token names, and values of HTAB, SP, VCHAR and
# obs-text (exactly llhttp's and RFC 9110's field characters). Such a head is written
# out again as received, minus the lines the proxy drops (`serialize`).

_TCHARS = rb"!#$%&'*+.^_`|~0-9A-Za-z-"
# `name: value` lines: a token, colon, one space, a value of field characters that neither
# starts nor ends with whitespace; then the empty line
_FIELD_LINES = rb"(?:\r\n[" + _TCHARS + rb"]+: [!-~\x80-\xff](?:[\t -~\x80-\xff]*[!-~\x80-\xff])?)*\r\n\r\n"
FAST_REQUEST = re.compile(rb"(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH|TRACE) (/[!-~]*) HTTP/1\.([01])" + _FIELD_LINES)
FAST_RESPONSE = re.compile(rb"HTTP/1\.1 ([1-9][0-9]{2}) ([\t -~\x80-\xff]*)" + _FIELD_LINES)
# (name, value) of every field line of a head the fast path accepted
FIELD_PAIRS = re.compile(rb"\r\n([" + _TCHARS + rb"]+): ([^\r]*)")
_UNDERSCORED = rb"[!#$%&'*+.^`|~0-9A-Za-z-]*_[" + _TCHARS + rb"]*"
# The fields the proxy reads or rewrites; names with an underscore are checked (`_index`).
REQUEST_SPECIAL = re.compile(
    rb"\r\n(host|content-length|transfer-encoding|connection|upgrade|cookie|keep-alive|proxy-connection|te|trailer"
    rb"|x-forwarded-for|x-forwarded-proto|" + _UNDERSCORED + rb"): ([^\r]*)", re.IGNORECASE)
RESPONSE_SPECIAL = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection|set-cookie|keep-alive|proxy-connection|te|trailer|upgrade)"
    rb": ([^\r]*)", re.IGNORECASE)
# request fields `serialize` drops or replaces whatever the Connection header says
REQUEST_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
                         b"transfer-encoding", b"content-length", b"x-forwarded-for", b"x-forwarded-proto"})
NO_TOKENS = frozenset()


@dataclass(frozen=True)
class Limits:
    max_head: int = MAX_HEAD  # request or response head, bytes
    max_headers: int = MAX_HEADERS


# --- events -------------------------------------------------------------------


class _Head:
    """What both heads share: the header list, read from the raw head only when someone asks.

    A head read by the fast path (`raw` set) keeps its bytes; the proxy's hot path uses
    only the fields it indexed (`special`), and `serialize` writes the head from `raw`.
    """

    __slots__ = ()

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = self._headers
        if headers is None:
            headers = self._headers = FIELD_PAIRS.findall(self.raw, self.fields_at)
        return headers

    def get(self, name: bytes, default: bytes | None = None) -> bytes | None:
        return _get(self.headers, name, default)

    def get_all(self, name: bytes) -> list[bytes]:
        return _get_all(self.headers, name)

    def __eq__(self, other):
        return type(other) is type(self) and self._fields() == other._fields()

    __hash__ = None

    def __repr__(self):
        return f"{type(self).__name__}{self._fields()!r}"


class RequestHead(_Head):
    """A request head.

    method, target, version (b"1.0" or b"1.1"); headers: names as sent, values without
    surrounding whitespace; framing: "none", "length" or "chunked"; upgrade: the Upgrade
    value when this is an accepted-kind Upgrade request; tunnel: a Horizon tunnel
    (passthrough after this head); connection: the Connection header's tokens, lower case;
    cookies: the Cookie fields, in order (what routing reads); forwarded: the values of the
    X-Forwarded-For fields, in order.
    Fast-path heads also carry `raw` (the head as received, every field `name: value`),
    `fields_at` (the CRLF that ends the request line) and `hop` (a field the proxy drops or
    replaces is present).
    """

    __slots__ = ("method", "target", "version", "_headers", "framing", "content_length", "keep_alive", "upgrade",
                 "tunnel", "connection", "cookies", "forwarded", "raw", "fields_at", "hop")

    def __init__(self, method: bytes, target: bytes, version: bytes, headers, framing: str,
                 content_length: int = 0, keep_alive: bool = True, upgrade: bytes = b"", tunnel: bool = False,
                 connection: frozenset = frozenset(), cookies=None, forwarded=None, raw: bytes | None = None,
                 fields_at: int = 0, hop: bool = True):
        self.method, self.target, self.version, self._headers = method, target, version, headers
        self.framing, self.content_length, self.keep_alive = framing, content_length, keep_alive
        self.upgrade, self.tunnel, self.connection = upgrade, tunnel, connection
        if cookies is None:
            cookies = [(k, v) for k, v in headers if k.lower() == b"cookie"]
        if forwarded is None:
            forwarded = [v for k, v in headers if k.lower() == b"x-forwarded-for"]
        self.cookies, self.forwarded = cookies, forwarded
        self.raw, self.fields_at, self.hop = raw, fields_at, hop

    def _fields(self):
        return (self.method, self.target, self.version, self.headers, self.framing, self.content_length,
                self.keep_alive, self.upgrade, self.tunnel, self.connection, self.cookies)


class ResponseHead(_Head):
    """A response head. framing: "none", "length", "chunked", "close" (until the server
    closes) or "passthrough"; connection: the Connection header's tokens, lower case;
    set_cookies: the Set-Cookie fields, in order (what persistence learns from). Fast-path
    heads carry `raw`, `fields_at` and `hop` as for requests (and an HTTP/1.1 status line
    with a reason, as the proxy writes it)."""

    __slots__ = ("status", "reason", "version", "_headers", "framing", "content_length", "keep_alive", "connection",
                 "set_cookies", "length_value", "raw", "fields_at", "hop")

    def __init__(self, status: int, reason: bytes, version: bytes, headers, framing: str, content_length: int = 0,
                 keep_alive: bool = True, connection: frozenset = frozenset(), set_cookies=None,
                 length_value: bytes | None = None, raw: bytes | None = None, fields_at: int = 0,
                 hop: bool = True):
        self.status, self.reason, self.version, self._headers = status, reason, version, headers
        self.framing, self.content_length, self.keep_alive, self.connection = framing, content_length, keep_alive, connection
        if set_cookies is None:
            set_cookies = [(k, v) for k, v in headers if k.lower() == b"set-cookie"]
        if length_value is None and headers is not None:
            length_value = _get(headers, b"content-length", None)
        self.set_cookies, self.length_value = set_cookies, length_value  # length_value: the first Content-Length
        self.raw, self.fields_at, self.hop = raw, fields_at, hop

    @property
    def interim(self) -> bool:  # 100 Continue, 103 Early Hints: the final response follows
        return 100 <= self.status < 200 and self.framing != "passthrough"

    def _fields(self):
        return (self.status, self.reason, self.version, self.headers, self.framing, self.content_length,
                self.keep_alive, self.connection, self.set_cookies, self.length_value)


@dataclass(slots=True)
class Body:
    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)


END = EndOfMessage()  # the end of a message without trailers, shared by the fast paths (never modified)


@dataclass(slots=True)
class Passthrough:
    """Raw bytes after an upgrade or a tunnel start: forward them untouched."""

    data: bytes


@dataclass(slots=True)
class ProtocolError:
    """The connection must be answered with `status` (if nothing was sent yet) and closed."""

    status: int
    reason: str


def _get(headers, name, default):
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return default


def _get_all(headers, name):
    name = name.lower()
    return [value for key, value in headers if key.lower() == name]


def connection_tokens(headers) -> set[bytes]:
    return _tokens(_get_all(headers, b"connection"))


def _tokens(values) -> set[bytes]:
    tokens = set()
    for value in values:
        tokens.update(t.strip().lower() for t in value.split(b","))
    tokens.discard(b"")
    return tokens


# The fields that decide framing and routing, collected in one pass over the head.
_FIELDS = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade"})


def _index(headers, check_names: bool) -> dict[bytes, list[bytes]]:
    """name -> values for `_FIELDS`; with `check_names`, refuses names that imitate framing fields."""
    found = {}
    for name, value in headers:
        lname = name.lower()
        if lname in _FIELDS:
            values = found.get(lname)
            if values is None:
                found[lname] = [value]
            else:
                values.append(value)
        elif check_names and b"_" in name and lname.replace(b"_", b"-") in FRAMING_NAMES:
            # Servers behind CGI-style gateways read `Transfer_Encoding` as HTTP_TRANSFER_ENCODING and
            # `X_Forwarded_For` as HTTP_X_FORWARDED_FOR: refused, as nginx and Apache drop them.
            raise FramingError(f"header name {name.decode('latin-1')!r} imitates a framing field")
    return found


# --- the head, common to both directions ------------------------------------------


class _HeadCollector:
    """httptools callbacks: collects what llhttp parsed, and whether it saw the message end."""

    __slots__ = ("target", "reason", "headers", "complete")

    def __init__(self):
        self.target = b""
        self.reason = b""
        self.headers = []
        self.complete = False

    def on_url(self, url):
        self.target += url

    def on_status(self, reason):
        self.reason += reason

    def on_header(self, name, value):
        self.headers.append((name, value.strip(b" \t")))

    def on_message_complete(self):
        self.complete = True


class _Framer:
    """The part both parsers share: the buffer, the head splitter, and the body states."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.buf = bytearray()
        self._scan = 0
        self.state = "head"
        self.remaining = 0  # bytes of a Content-Length body still to come
        self.decoder: ChunkedDecoder | None = None
        self.witness = None  # the llhttp parser of the current message
        self.collector: _HeadCollector | None = None

    def _split_head(self) -> bytes | None:
        """The next complete head (with its final CRLF CRLF), or None if it has not fully arrived."""
        idx = self.buf.find(b"\r\n\r\n", max(0, self._scan - 3))
        if idx < 0:
            if len(self.buf) > self.limits.max_head:
                raise FramingError(f"head larger than {self.limits.max_head} bytes")
            self._check_line_ends(max(0, self._scan - 1), len(self.buf))
            self._scan = len(self.buf)
            return None
        end = idx + 4
        if end > self.limits.max_head:
            raise FramingError(f"head larger than {self.limits.max_head} bytes")
        if end == len(self.buf):  # the usual case: the head is all there is
            head = bytes(self.buf)
            self.buf.clear()
        else:
            head = bytes(self.buf[:end])
            del self.buf[:end]
        self._scan = 0
        return head

    def _check_line_ends(self, start: int, end: int):
        """Refuses a bare LF or CR early, so a head that will never end in CRLF CRLF does not linger."""
        buf = self.buf
        i = buf.find(b"\n", start, end)
        while i >= 0:
            if i == 0 or buf[i - 1] != 13:
                raise FramingError("bare LF in the head")
            i = buf.find(b"\n", i + 1, end)
        i = buf.find(b"\r", start, end)
        while i >= 0:
            if i + 1 < end and buf[i + 1] != 10:
                raise FramingError("bare CR in the head")
            i = buf.find(b"\r", i + 1, end)

    def _check_lines(self, head: bytes) -> list[bytes]:
        """Raw checks llhttp is lenient about or does not know; returns the lines (start line first)."""
        crlf = head.count(b"\r\n")
        if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
            raise FramingError("bare CR or LF in the head")
        if b"\r\n " in head or b"\r\n\t" in head:  # a field line starting with whitespace
            raise FramingError("obsolete line folding in a header field")
        lines = head[:-4].split(b"\r\n")
        if len(lines) - 1 > self.limits.max_headers:
            raise FramingError(f"more than {self.limits.max_headers} header fields")
        return lines

    def _llhttp(self, parser_class, head: bytes):
        collector = _HeadCollector()
        parser = parser_class(collector)
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            pass  # llhttp stops at an Upgrade/CONNECT head; our own rules decide what follows
        except httptools.HttpParserError as exc:
            raise FramingError(str(exc) or type(exc).__name__) from None
        self.witness, self.collector = parser, collector
        headers, collector.headers = collector.headers, []  # the witness may go on to see trailers
        return headers

    def _body_framing(self, index, version: bytes):
        """("none"|"length"|"chunked", length) from the indexed header fields; raises on ambiguity."""
        lengths = index.get(b"content-length", ())
        codings = index.get(b"transfer-encoding", ())
        if not codings and len(lengths) == 1 and len(lengths[0]) <= 18 and lengths[0].isdigit():
            return "length", int(lengths[0])  # the usual answer, in short (DIGITS)
        if len(lengths) > 1:
            raise FramingError("more than one Content-Length")
        if len(codings) > 1:
            raise FramingError("more than one Transfer-Encoding")
        if lengths and codings:
            raise FramingError("Content-Length together with Transfer-Encoding")
        if codings:
            if codings[0].lower() != b"chunked":
                raise FramingError(f"Transfer-Encoding {codings[0][:40]!r} is not exactly 'chunked'")
            if version != b"1.1":
                raise FramingError("Transfer-Encoding in an HTTP/1.0 message")
            return "chunked", 0
        if lengths:
            if not DIGITS.fullmatch(lengths[0]):
                raise FramingError(f"Content-Length {lengths[0][:40]!r} is not a number")
            return "length", int(lengths[0])
        return "none", 0

    def _start_body(self, framing: str, length: int):
        if framing == "chunked":
            self.decoder = ChunkedDecoder(self.limits.max_head, self.limits.max_headers)
            self.state = "chunked"
        elif framing == "length" and length:
            self.remaining = length
            self.state = "length"
        else:
            self.state = "end"

    def _body(self, events) -> bool:
        """Moves body bytes from the buffer to events; True once the message has ended."""
        if self.state == "length":
            if not self.buf:
                return False
            take = min(self.remaining, len(self.buf))
            events.append(Body(bytes(self.buf[:take])))
            del self.buf[:take]
            self.remaining -= take
            return not self.remaining
        if self.state == "close":
            if self.buf:
                events.append(Body(bytes(self.buf)))
                self.buf.clear()
            return False
        if self.state == "chunked":
            return self._chunked(events)
        return True  # "end": a message without a body

    def _chunked(self, events) -> bool:
        pieces, pos = self.decoder.decode(self.buf)
        if pos:
            raw = bytes(self.buf[:pos])
            del self.buf[:pos]
            self._witness(raw)
        events.extend(Body(p) for p in pieces if p)
        if self.decoder.done:
            if not self.collector.complete:
                raise FramingError("chunked body: the parsers disagree where the message ends")
            events.append(EndOfMessage(self.decoder.trailers))
            self.decoder = None
            self.state = "end-emitted"
            return True
        return False

    def _witness(self, raw: bytes):
        try:
            self.witness.feed_data(raw)
        except httptools.HttpParserError as exc:
            raise FramingError(f"chunked body: {exc}") from None
        if self.collector.complete and not self.decoder.done:
            raise FramingError("chunked body: the parsers disagree where the message ends")


# --- requests ---------------------------------------------------------------------


class RequestParser(_Framer):
    """The client side of one connection. `feed(bytes)` -> list of events.

    States: head -> body ("length"/"chunked") -> waiting (until `next_request`)
    -> head ...; "upgrade" (until `upgrade_accepted`/`upgrade_refused`);
    "passthrough"; "error" (after a ProtocolError: nothing more is parsed).
    """

    fast = True  # tests turn it off on an instance to compare with the general path

    def __init__(self, limits: Limits = Limits(), tunnel_paths=TUNNEL_PATHS):
        super().__init__(limits)
        self.tunnel_paths = tuple(tunnel_paths)
        self.head: RequestHead | None = None

    # -- what the worker asks --
    @property
    def in_head(self) -> bool:
        """True while part of a request head has arrived but not all of it (for the slowloris timer)."""
        return self.state == "head" and bool(self.buf)

    @property
    def paused(self) -> bool:
        """True when the parser holds bytes for later: stop reading the client (back-pressure)."""
        return self.state in ("waiting", "upgrade")

    @property
    def buffered(self) -> int:
        return len(self.buf)

    def feed(self, data: bytes) -> list:
        state = self.state
        if state == "head" and not self.buf and self.fast:
            # The usual read: a whole head (and maybe its body) at once. Read it in place.
            end = data.find(b"\r\n\r\n") + 4
            if 4 < end <= self.limits.max_head:
                head = self._fast_request(data if end == len(data) else data[:end])
                if head is not None:
                    if end == len(data) and head.framing == "none" and not head.tunnel:
                        self.head = head  # all of it, and nothing follows: no buffer, no body state
                        self.state = "upgrade" if head.upgrade else "waiting"
                        return [head, END]
                    if end < len(data):
                        self.buf += memoryview(data)[end:]
                    self._accept(head)
                    return self._advance(head)
        if state == "passthrough":
            return [Passthrough(bytes(data))] if data else []
        if state == "error":
            return []
        self.buf += data
        return self._advance()

    def next_request(self) -> list:
        """The response to the current request is complete: parse the next one."""
        if self.state != "waiting":
            return []
        self.state = "head"
        self.head = None
        return self._advance() if self.buf else []

    def upgrade_accepted(self) -> list:
        """The server answered 101: everything from now on passes through untouched."""
        if self.state != "upgrade":
            return []
        return self._passthrough()

    def upgrade_refused(self) -> list:
        """The server did not switch protocols: the connection goes on as HTTP."""
        if self.state != "upgrade":
            return []
        self.state = "waiting"
        return self.next_request()

    # -- internals --
    def _passthrough(self) -> list:
        self.state = "passthrough"
        data, self.buf = bytes(self.buf), bytearray()
        return [Passthrough(data)] if data else []

    def _advance(self, head: RequestHead | None = None) -> list:
        """Events from the buffer; `head`: one the fast path already read and accepted."""
        events = []
        try:
            if head is not None or self.state == "head":
                if head is None:
                    head = self._read_head()
                    if head is None:
                        return events
                events.append(head)
                if head.tunnel:
                    events.extend(self._passthrough())
                    return events
            if self.state in ("length", "chunked", "end") and self._body(events):
                if self.state != "end-emitted":
                    events.append(EndOfMessage())
                self.state = "upgrade" if self.head.upgrade else "waiting"
        except FramingError as exc:
            self.state = "error"
            self.buf.clear()
            events.append(ProtocolError(405 if isinstance(exc, MethodNotAllowed) else 400, str(exc)))
        return events

    def _read_head(self) -> RequestHead | None:
        if not self.buf:
            return None
        # RFC 9112 2.2: ignore empty lines before a request line (some clients send CRLF after a body)
        while self.buf[:2] == b"\r\n":
            del self.buf[:2]
            self._scan = 0
        raw = self._split_head()
        if raw is None:
            return None
        head = self._fast_request(raw) if self.fast else None
        if head is None:
            head = self._general_request(raw)
        self._accept(head)
        return head

    def _accept(self, head: RequestHead):
        self.head = head
        self._start_body(head.framing, head.content_length)

    def _fast_request(self, raw: bytes) -> RequestHead | None:
        """The head read in one pass, or None to read it the general way (see FAST_REQUEST)."""
        match = FAST_REQUEST.fullmatch(raw)
        if match is None or (len(raw) > 6 * self.limits.max_headers and raw.count(b"\r\n") - 2 > self.limits.max_headers):
            return None  # (a field line takes at least 6 bytes: count them only in a head that long)
        fields_at = match.end(3)
        index, cookies, forwarded, hop = {}, [], [], False
        for name, value in REQUEST_SPECIAL.findall(raw, fields_at):
            lname = name.lower()
            if lname == b"cookie":
                cookies.append((name, value))
                continue
            if lname in REQUEST_HOP:
                hop = True
                if lname == b"x-forwarded-for":
                    forwarded.append(value)
            if lname in _FIELDS:
                values = index.get(lname)
                if values is None:
                    index[lname] = [value]
                else:
                    values.append(value)
            elif b"_" in lname and lname.replace(b"_", b"-") in FRAMING_NAMES:
                return None  # refused the general way, with its words
        method, target, minor = match.groups()
        if minor == b"1" and len(index) == 1 and len(index.get(b"host", ())) == 1 and not target.startswith(self.tunnel_paths):
            # the usual request, in short: what `_semantics` says of one Host and no other framing field
            return RequestHead(method, target, b"1.1", None, "none", 0, True, b"", False, NO_TOKENS,
                               cookies, forwarded, raw, fields_at, hop)
        version = b"1.1" if minor == b"1" else b"1.0"
        try:
            framing, length, keep_alive, upgrade, tunnel, tokens = self._semantics(method, target, version, index)
        except FramingError:
            return None
        if framing == "chunked":
            return None  # llhttp reads the head too: it witnesses where the body ends
        return RequestHead(method, target, version, None, framing, length, keep_alive, upgrade, tunnel, tokens,
                           cookies, forwarded, raw, fields_at, hop)

    def _general_request(self, raw: bytes) -> RequestHead:
        line = self._check_lines(raw)[0]
        match = REQUEST_LINE.fullmatch(line)
        if not match:
            raise FramingError(f"malformed request line {line[:60]!r}")
        method, target, minor = match.groups()
        headers = self._llhttp(httptools.HttpRequestParser, raw)
        if self.collector.target != target:
            raise FramingError("the request target reads two ways")
        version = b"1." + minor
        index = _index(headers, check_names=True)
        framing, length, keep_alive, upgrade, tunnel, tokens = self._semantics(method, target, version, index)
        return RequestHead(method, target, version, headers, framing, length, keep_alive, upgrade, tunnel, tokens)

    def _semantics(self, method, target, version, index):
        """The rules llhttp leaves open, from the indexed fields: (framing, length, keep_alive,
        upgrade, tunnel, Connection tokens)."""
        if method == b"CONNECT":
            raise MethodNotAllowed("CONNECT is not served by a reverse proxy")
        hosts = index.get(b"host", ())
        if len(hosts) > 1:
            raise FramingError("more than one Host")
        if version == b"1.1" and not hosts:
            raise FramingError("no Host in an HTTP/1.1 request")
        if b"content-length" in index or b"transfer-encoding" in index:
            framing, length = self._body_framing(index, version)
        else:
            framing, length = "none", 0
        connection = index.get(b"connection")
        tokens = frozenset(_tokens(connection)) if connection else NO_TOKENS
        keep_alive = b"close" not in tokens if version == b"1.1" else b"keep-alive" in tokens
        paths = self.tunnel_paths
        tunnel = target.startswith(paths) and target.split(b"?", 1)[0].startswith(paths)
        upgrade = index[b"upgrade"][0] if b"upgrade" in index else b""
        if upgrade and not (b"upgrade" in tokens and (tunnel or _first_token(upgrade) in ALLOWED_UPGRADES)):
            upgrade = b""
        if upgrade and not tunnel and (framing == "chunked" or length):
            # the body would be parsed by the server but skipped by llhttp: the two would disagree
            raise FramingError("an Upgrade request cannot carry a body")
        return framing, length, keep_alive, upgrade, tunnel, tokens


class MethodNotAllowed(FramingError):
    pass


FRAMING_NAMES = frozenset({b"content-length", b"transfer-encoding", b"host", b"connection", b"upgrade",
                           b"x-forwarded-for", b"x-forwarded-proto"})


def _fields(lines) -> list[tuple[bytes, bytes]]:
    """Header fields of a response head, strictly (`token: value`, no whitespace before the colon).

    A response head is read by this regex alone unless its body is chunked: servers are
    not the adversary requests can be, and one parse per response is what the proxy can
    afford per request; a chunked body still gets llhttp as its witness.
    """
    fields = []
    match = FIELD_LINE.fullmatch
    for line in lines[1:]:
        found = match(line)
        if found is None:
            raise FramingError(f"malformed header field {line[:40]!r}")
        fields.append(found.groups())
    return fields


def _first_token(value: bytes) -> bytes:
    return value.split(b",", 1)[0].split(b"/", 1)[0].strip().lower()


# --- responses --------------------------------------------------------------------


class ResponseParser(_Framer):
    """The server side of one connection, one request at a time.

    Call `expect(method, upgrade, tunnel)` when a request has been sent, then
    `feed(bytes)`; `feed_eof()` when the server closes. Interim responses
    (1xx other than 101) come as a ResponseHead with `interim` true and no
    EndOfMessage; the final response follows.
    """

    fast = True  # tests turn it off on an instance to compare with the general path

    def __init__(self, limits: Limits = Limits()):
        super().__init__(limits)
        self.state = "idle"
        self.method = b"GET"
        self.upgrade = False
        self.tunnel = False

    def expect(self, method: bytes, upgrade: bool = False, tunnel: bool = False):
        self.method, self.upgrade, self.tunnel = method, upgrade, tunnel
        if self.state == "idle":
            self.state = "head"

    @property
    def idle(self) -> bool:
        return self.state == "idle"

    def feed(self, data: bytes) -> list:
        state = self.state
        if state == "head" and not self.buf and self.fast:
            # The usual read: a whole head (and usually its whole body) at once. Read it in place.
            end = data.find(b"\r\n\r\n") + 4
            if 4 < end <= self.limits.max_head:
                head = self._fast_response(data if end == len(data) else data[:end])
                if head is not None:
                    framing = head.framing
                    if framing == "length" and len(data) - end == head.content_length > 0:
                        self.state = "idle"  # all of it: no buffer, no body state
                        return [head, Body(data[end:]), END]
                    if end < len(data):
                        self.buf += memoryview(data)[end:]
                    self._accept(head)
                    return self._advance(head)
        if state == "passthrough":
            return [Passthrough(bytes(data))] if data else []
        if state == "error":
            return []
        self.buf += data
        return self._advance()

    def feed_eof(self) -> list:
        """The server closed its side."""
        if self.state == "close":
            self.state = "idle"
            return [EndOfMessage()]
        if self.state in ("idle", "error", "passthrough"):
            return []
        self.state = "error"
        return [ProtocolError(502, "the server closed the connection in the middle of a response")]

    def _advance(self, head: ResponseHead | None = None) -> list:
        """Events from the buffer; `head`: one the fast path already read and accepted."""
        events = []
        try:
            while True:
                if head is None:
                    if self.state == "idle":
                        if self.buf:
                            raise FramingError("the server sent data without a request")
                        break
                    if self.state == "head":
                        head = self._read_head()
                        if head is None:
                            break
                if head is not None:
                    events.append(head)
                    if head.framing == "passthrough":
                        self.state = "passthrough"
                        data, self.buf = bytes(self.buf), bytearray()
                        if data:
                            events.append(Passthrough(data))
                        break
                    if head.interim:
                        self.state = "head"
                        head = None
                        continue
                    head = None
                if not self._body(events):
                    break
                if self.state != "end-emitted":
                    events.append(EndOfMessage())
                self.state = "idle"
        except FramingError as exc:
            self.state = "error"
            self.buf.clear()
            events.append(ProtocolError(502, f"bad response from the server: {exc}"))
        return events

    def _read_head(self) -> ResponseHead | None:
        raw = self._split_head()
        if raw is None:
            return None
        head = self._fast_response(raw) if self.fast else None
        if head is None:
            head = self._general_response(raw)
        self._accept(head)
        return head

    def _accept(self, head: ResponseHead):
        if head.framing == "close":
            self.state = "close"
        elif head.framing != "passthrough":
            self._start_body(head.framing, head.content_length)

    def _fast_response(self, raw: bytes) -> ResponseHead | None:
        """The head read in one pass, or None to read it the general way (see FAST_RESPONSE)."""
        match = FAST_RESPONSE.fullmatch(raw)
        if match is None or (len(raw) > 6 * self.limits.max_headers and raw.count(b"\r\n") - 2 > self.limits.max_headers):
            return None
        fields_at = match.end(2)
        index, set_cookies, hop = {}, [], False
        for name, value in RESPONSE_SPECIAL.findall(raw, fields_at):
            lname = name.lower()
            if lname == b"set-cookie":
                set_cookies.append((name, value))
                continue
            hop = True  # every other name here is hop-by-hop or framing: serialize drops it
            values = index.get(lname)
            if values is None:
                index[lname] = [value]
            else:
                values.append(value)
        status, reason = match.groups()
        status = int(status)
        lengths = index.get(b"content-length")
        if (lengths is not None and len(lengths) == 1 and len(index) == 1 and status >= 200 and status != 204
                and status != 304 and self.method != b"HEAD" and not self.tunnel):
            value = lengths[0]
            if len(value) <= 18 and value.isdigit():  # (DIGITS) the usual answer, in short: as `_response_head`
                return ResponseHead(status, reason, b"1.1", None, "length", int(value), True, NO_TOKENS,
                                    set_cookies, value, raw, fields_at, True)
        try:
            head = self._response_head(status, reason, b"1.1", None, index, set_cookies)
        except FramingError:
            return None
        if head.framing == "chunked":
            return None  # llhttp reads the head too: it witnesses where the body ends
        head.raw, head.fields_at, head.hop = raw, fields_at, hop
        return head

    def _general_response(self, raw: bytes) -> ResponseHead:
        lines = self._check_lines(raw)
        match = STATUS_LINE.fullmatch(lines[0])
        if not match:
            raise FramingError(f"malformed status line {lines[0][:60]!r}")
        minor, status, reason = match.groups()
        status = int(status)
        headers = _fields(lines)
        head = self._response_head(status, reason or b"", b"1." + minor, headers, _index(headers, check_names=False))
        if head.framing == "chunked":
            # llhttp reads the head too and then witnesses where the chunked body ends
            if self._llhttp(httptools.HttpResponseParser, raw) != headers:
                raise FramingError("the response head reads two ways")
        return head

    def _response_head(self, status, reason, version, headers, index, set_cookies=None) -> ResponseHead:
        connection = index.get(b"connection")
        tokens = frozenset(_tokens(connection)) if connection else NO_TOKENS
        keep_alive = b"close" not in tokens if version == b"1.1" else b"keep-alive" in tokens
        lengths = index.get(b"content-length")
        length_value = lengths[0] if lengths else None
        if status == 101:
            if not (self.upgrade or self.tunnel):
                raise FramingError("101 Switching Protocols without an Upgrade request")
            return ResponseHead(status, reason, version, headers, "passthrough", 0, False, tokens, set_cookies,
                                length_value)
        if self.tunnel and status >= 200:
            return ResponseHead(status, reason, version, headers, "passthrough", 0, False, tokens, set_cookies,
                                length_value)
        framing, length = self._body_framing(index, version)
        if status < 200 or status in (204, 304) or self.method == b"HEAD":
            framing, length = "none", 0
        elif framing == "none":
            framing, keep_alive = "close", False  # RFC 9112 6.3: the body ends when the server closes
        return ResponseHead(status, reason, version, headers, framing, length, keep_alive, tokens, set_cookies,
                            length_value)
