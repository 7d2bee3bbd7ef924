"""The long-lived streams of a simulated Horizon server.

- the phase-2 tunnel (`/ice/tunnel` after 101): greets with the server's name,
  echoes the client's bytes and sends a heartbeat line every few seconds, the
  way a Horizon tunnel carries keep-alives a balancer must not time out;
- WebSocket echo (`/ws` after 101);
- bypass TCP ports (RDP 3389, USB 32111, MMR 9427, Blast 8443, PCoIP 4172):
  greet with `<server> <port>\\n`, then echo;
- bypass UDP ports: answer each datagram with `<server> <port> <payload>`.
The greetings name the server so a client can check port following.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools

from demo import websocket
from demo.httpserve import READ_SIZE


async def tunnel(reader, writer, first: bytes, greeting: bytes, heartbeat: float, name: str, idle_timeout: float):
    writer.write(greeting)
    at_line_start = [True]  # heartbeats only between lines, so a line-reading client never sees them mixed in
    beats = asyncio.create_task(_heartbeat(writer, heartbeat, name, at_line_start), name=f"heartbeat-{name}")
    try:
        await _echo(reader, writer, first, idle_timeout, at_line_start)
    finally:
        beats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beats


async def _heartbeat(writer, interval: float, name: str, at_line_start):
    if interval <= 0:
        return
    for seq in itertools.count(1):
        await asyncio.sleep(interval)
        if at_line_start[0] and not writer.is_closing():
            writer.write(f"HEARTBEAT {name} {seq}\n".encode())


async def _echo(reader, writer, data: bytes, idle_timeout: float, at_line_start=None):
    while True:
        if data:
            writer.write(data)
            if at_line_start is not None:
                at_line_start[0] = data.endswith(b"\n")
            await writer.drain()
        async with asyncio.timeout(idle_timeout):
            data = await reader.read(READ_SIZE)
        if not data:
            return


async def websocket_echo(reader, writer, first: bytes, idle_timeout: float):
    decoder = websocket.FrameDecoder()
    data = first
    while True:
        try:
            frames = decoder.feed(data)
        except websocket.FrameError:
            writer.write(websocket.encode_frame(websocket.OP_CLOSE, (1009).to_bytes(2, "big")))
            return
        for fin, opcode, payload in frames:
            if opcode == websocket.OP_CLOSE:
                writer.write(websocket.encode_frame(websocket.OP_CLOSE, payload[:2]))
                await writer.drain()
                return
            if opcode == websocket.OP_PING:
                writer.write(websocket.encode_frame(websocket.OP_PONG, payload))
            elif opcode != websocket.OP_PONG:
                writer.write(websocket.encode_frame(opcode, payload, fin=fin))
        await writer.drain()
        async with asyncio.timeout(idle_timeout):
            data = await reader.read(READ_SIZE)
        if not data:
            return


async def bypass_tcp(reader, writer, name: str, port: int, idle_timeout: float):
    writer.write(f"{name} {port}\n".encode())
    await _echo(reader, writer, b"", idle_timeout)


class BypassUdp(asyncio.DatagramProtocol):
    def __init__(self, name: str, counter):
        self.name = name
        self.counter = counter
        self.transport = None
        self.prefix = b""

    def connection_made(self, transport):
        self.transport = transport
        self.prefix = f"{self.name} {transport.get_extra_info('sockname')[1]} ".encode()

    def datagram_received(self, data, addr):
        self.counter()
        self.transport.sendto(self.prefix + data, addr)
