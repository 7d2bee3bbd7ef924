"""Just enough RFC 6455 for a WebSocket echo target, without sockets.

The simulator answers `GET /ws` so that a test can prove a balancer passes
an Upgrade through untouched: the handshake key must be answered correctly
and frames must come back. Blast over WebSocket looks the same to a balancer.
"""
from __future__ import annotations

import base64
import hashlib
import os
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
MAX_PAYLOAD = 1 << 20


class FrameError(ValueError):
    pass


def accept_key(key: str | bytes) -> str:
    if isinstance(key, str):
        key = key.encode("ascii")
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest()).decode("ascii")


def valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def encode_frame(opcode: int, payload: bytes, mask: bool = False, fin: bool = True) -> bytes:
    """One frame; clients must mask (RFC 6455 5.3), servers must not."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        return head + key + _unmask(payload, key)
    return head + payload


class FrameDecoder:
    """Feed bytes, get (fin, opcode, payload) tuples of complete frames."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bool, int, bytes]]:
        self.buffer += data
        frames = []
        while (frame := self._next()) is not None:
            frames.append(frame)
        return frames

    def _next(self):
        buf = self.buffer
        if len(buf) < 2:
            return None
        fin, opcode = bool(buf[0] & 0x80), buf[0] & 0x0F
        masked, n = bool(buf[1] & 0x80), buf[1] & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            (n,) = struct.unpack_from("!H", buf, 2)
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            (n,) = struct.unpack_from("!Q", buf, 2)
            pos = 10
        if n > MAX_PAYLOAD:
            raise FrameError(f"frame of {n} bytes is over the {MAX_PAYLOAD} limit")
        key = b""
        if masked:
            key = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos : pos + n])
        del buf[: pos + n]
        return fin, opcode, _unmask(payload, key) if masked else payload


def _unmask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")
