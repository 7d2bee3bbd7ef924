"""A strict decoder for `Transfer-Encoding: chunked` bodies.

Why our own and not the parser library's: the proxy must know the exact byte
where a message ends, so that the next request on a keep-alive connection is
parsed (and routed) on its own. httptools reports callbacks but no offsets, so
this decoder finds the boundaries; `http1` additionally feeds the same bytes to
llhttp and refuses the message when the two disagree.

Strict means: chunk sizes are 1-16 hex digits below `MAX_CHUNK`, no whitespace
anywhere in the size line, extensions are `;name[=token|"quoted"]`, chunk data
is followed by exactly CRLF, and trailer fields are well-formed and never carry
framing (Content-Length, Transfer-Encoding) or Host.
"""
from __future__ import annotations

import re

MAX_CHUNK = 1 << 40  # 1 TiB: far above any real chunk, far below every 64-bit overflow
MAX_SIZE_LINE = 4096

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})((?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*)")
FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*((?:[!-~\x80-\xff](?:[ \t]*[!-~\x80-\xff])*)?)[ \t]*")
FORBIDDEN_TRAILERS = frozenset({b"content-length", b"transfer-encoding", b"host"})


class FramingError(ValueError):
    """The body cannot be read in exactly one way; the message must be refused."""


# decoder states
SIZE, DATA, DATA_END, TRAILER, DONE = range(5)


class ChunkedDecoder:
    """Decodes one chunked body from a buffer; `decode` says how far it got.

    `decode(buf, pos)` reads from `buf[pos:]` and returns `(pieces, pos)`:
    the body data found (bytes) and the first byte it did not consume. When
    `done` is true, the body ended exactly at the returned position.
    """

    __slots__ = ("state", "remaining", "trailers", "trailer_bytes", "max_trailer_bytes", "max_trailers")

    def __init__(self, max_trailer_bytes: int = 65536, max_trailers: int = 100):
        self.state = SIZE
        self.remaining = 0
        self.trailers: list[tuple[bytes, bytes]] = []
        self.trailer_bytes = 0
        self.max_trailer_bytes = max_trailer_bytes
        self.max_trailers = max_trailers

    @property
    def done(self) -> bool:
        return self.state == DONE

    def decode(self, buf: bytes | bytearray, pos: int = 0) -> tuple[list[bytes], int]:
        pieces = []
        end = len(buf)
        while pos < end and self.state != DONE:
            if self.state == DATA:
                take = min(self.remaining, end - pos)
                pieces.append(bytes(buf[pos:pos + take]))
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state = DATA_END
                continue
            if self.state == SIZE:
                after = self._size_line(buf, pos)
            elif self.state == DATA_END:
                after = self._data_end(buf, pos)
            else:
                after = self._trailer_line(buf, pos)
            if after is None:  # the next element is incomplete: wait for more bytes
                break
            pos = after
        return pieces, pos

    def _data_end(self, buf, pos):
        crlf = bytes(buf[pos:pos + 2])
        if crlf == b"\r\n":
            self.state = SIZE
            return pos + 2
        if crlf == b"\r":
            return None
        raise FramingError("chunk data is not followed by CRLF")

    def _line(self, buf, pos, limit, what):
        """The next CRLF-terminated line as (line, next pos), or None to wait for more bytes."""
        idx = buf.find(b"\r\n", pos, pos + limit + 2)
        if idx < 0:
            if len(buf) - pos > limit + 1:
                raise FramingError(f"{what} longer than {limit} bytes")
            return None
        return bytes(buf[pos:idx]), idx + 2

    def _size_line(self, buf, pos):
        found = self._line(buf, pos, MAX_SIZE_LINE, "chunk size line")
        if found is None:
            return None
        line, after = found
        match = SIZE_LINE.fullmatch(line)
        if not match:
            raise FramingError(f"malformed chunk size line {line[:40]!r}")
        size = int(match.group(1), 16)
        if size >= MAX_CHUNK:
            raise FramingError(f"chunk size {match.group(1).decode()} is too large")
        if size:
            self.remaining = size
            self.state = DATA
        else:
            self.state = TRAILER
        return after

    def _trailer_line(self, buf, pos):
        found = self._line(buf, pos, self.max_trailer_bytes, "trailer section")
        if found is None:
            return None
        line, after = found
        if not line:
            self.state = DONE
            return after
        self.trailer_bytes += len(line) + 2
        if self.trailer_bytes > self.max_trailer_bytes or len(self.trailers) >= self.max_trailers:
            raise FramingError("trailer section too large")
        match = FIELD_LINE.fullmatch(line)
        if not match:
            raise FramingError(f"malformed trailer field {line[:40]!r}")
        name, value = match.groups()
        if name.lower() in FORBIDDEN_TRAILERS:
            raise FramingError(f"{name.decode()} is not allowed in a trailer")
        self.trailers.append((name, value))
        return after
