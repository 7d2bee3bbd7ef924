"""The slow-request-head policy (slowloris), pure: the caller passes the time in.

A request head must arrive completely within `limit` seconds, counted from the
moment the connection was accepted (first request; this also bounds a client
that completes the TLS handshake and then says nothing) or from the first byte
of a later request on a keep-alive connection. Between requests the VIP's idle
timeout applies instead, as HAProxy separates `timeout http-request` from
`timeout http-keep-alive`. Sending one byte at a time does not extend the
deadline, and neither do empty lines: only a complete head stops the clock. An expired deadline is
answered with 408 and the connection closes; other connections are untouched.
"""
from __future__ import annotations

HEAD_TIMEOUT = 10.0


class HeadDeadline:
    __slots__ = ("limit", "started")

    def __init__(self, limit: float = HEAD_TIMEOUT):
        if limit <= 0:
            raise ValueError("the head timeout must be positive")
        self.limit = limit
        self.started: float | None = None

    def begin(self, now: float):
        """The connection was accepted: the first head is due within `limit`."""
        self.started = now

    def update(self, in_head: bool, now: float):
        """Call after every feed with the parser's `in_head`: the first byte of a head starts the clock."""
        if in_head and self.started is None:
            self.started = now

    def head_arrived(self):
        """A complete request head was parsed: the clock stops until the next one begins."""
        self.started = None

    def expired(self, now: float) -> bool:
        return self.started is not None and now - self.started >= self.limit

    def remaining(self, now: float) -> float | None:
        """Seconds left, or None when no head is being waited for."""
        if self.started is None:
            return None
        return max(0.0, self.limit - (now - self.started))
