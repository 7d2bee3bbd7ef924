"""A small Horizon farm for end-to-end tests: server hosts that answer on every channel.

Each server host is a loopback address of its own running one backend per
channel (443/tcp, 8443/udp, 4172/tcp, 4172/udp ...); every backend's name is
`<host name>-<channel>` ("h2-8443/udp"), so an answer tells which host served
it. One VIP per channel, all in one persistence group with source-IP
persistence: a client's channels must follow its first one ("port following").
VIP ports are random free ports; the channel names keep Horizon's.
"""
from __future__ import annotations

import json
import socket

from tests.backends import new_host, start_backend
from tests.conftest import free_port
from tests.proxyworker.harness import connect, pool, read_line, server, service, source_ip

GROUP = "horizon"
CHANNELS = ("443/tcp", "8443/udp", "4172/tcp", "4172/udp")


class Farm:
    def __init__(self, hosts: int = 3, channels=CHANNELS, group: str = GROUP):
        self.group, self.channels = group, tuple(channels)
        self.hosts = {f"h{i}": new_host() for i in range(1, hosts + 1)}
        self.backends = {
            channel: [start_backend(f"{name}-{channel}", address, udp=channel.endswith("/udp"))
                      for name, address in self.hosts.items()]
            for channel in self.channels
        }
        self.ports = {channel: free_port(kind=_kind(channel)) for channel in self.channels}

    def config(self, persistence=None, **options):
        """(services, pools) for `Harness.apply`: one VIP and one pool per channel."""
        services, pools = [], []
        for channel in self.channels:
            name = "vs" + channel.replace("/", "")
            pool_name = "p" + channel.replace("/", "")
            pools.append(pool(pool_name, *(server(pool_name, b) for b in self.backends[channel])))
            services.append(service(name, self.ports[channel], pool_name, protocol=channel.split("/")[1],
                                    persistence=persistence or source_ip(), persistence_group=self.group,
                                    **options))
        return services, pools

    def stop(self):
        for backends in self.backends.values():
            for backend in backends:
                backend.stop()

    # -- clients --
    def tcp(self, channel: str, source: str) -> tuple[socket.socket, str]:
        """A connection from `source` on a TCP channel, and the host that answered."""
        sock = connect(self.ports[channel], source=source)
        return sock, host_of(read_line(sock))

    def udp(self, source: str, timeout: float = 2.0) -> socket.socket:
        """A UDP client socket (one flow per socket: its address and port)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.settimeout(timeout)
        return sock

    def ask_udp(self, sock: socket.socket, channel: str, payload: bytes = b"ping") -> str:
        """Send one datagram on a UDP channel; the host that echoed it."""
        sock.sendto(payload, ("127.0.0.1", self.ports[channel]))
        name, _, echoed = sock.recv(65536).partition(b"|")
        assert echoed == payload, (name, echoed)
        return host_of(name.decode())


def host_of(backend_name: str) -> str:
    return backend_name.split("-", 1)[0]


def _kind(channel: str) -> int:
    return socket.SOCK_DGRAM if channel.endswith("/udp") else socket.SOCK_STREAM


def sessions(harness, workers, client: str | None = None) -> list[dict]:
    """The live sessions the workers list in Redis (optionally one client address's), with "worker" added."""
    found = []
    for worker in workers:
        for raw in harness.redis.hvals(harness.keys.sessions(worker.id)):
            entry = json.loads(raw)
            if client is None or entry["client"].rsplit(":", 1)[0] == client:
                found.append(dict(entry, worker=worker.id))
    return found
