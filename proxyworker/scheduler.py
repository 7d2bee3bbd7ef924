"""Schedulers: which server gets a client that persistence says nothing about.

Pure code. A scheduler is handed the candidates (servers that accept new
clients, in pool order, already narrowed to the backups when no primary is
usable: see `candidates`) and the worker's active connection counts, and
returns one of them. Names follow HAProxy's `balance` where they can.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .config import RealServer


def candidates(servers: Sequence[RealServer], usable: Callable[[RealServer], bool]) -> list[RealServer]:
    """Usable primaries; the usable backups only when no primary is usable (HAProxy `backup`)."""
    primaries = [s for s in servers if not s.backup and usable(s)]
    if primaries:
        return primaries
    return [s for s in servers if s.backup and usable(s)]


class RoundRobin:
    name = "round_robin"

    def __init__(self):
        self._turn = 0

    def pick(self, servers: Sequence[RealServer], active: Mapping[str, int]) -> RealServer | None:
        if not servers:
            return None
        server = servers[self._turn % len(servers)]
        self._turn += 1
        return server


class WeightedRoundRobin:
    """Smooth weighted round robin (nginx): weights 5,1,1 give a,a,b,a,c,a,a, not a,a,a,a,a,b,c."""

    name = "weighted_round_robin"

    def __init__(self):
        self._current: dict[str, int] = {}

    def pick(self, servers: Sequence[RealServer], active: Mapping[str, int]) -> RealServer | None:
        best, total = None, 0
        current = self._current
        for server in servers:
            weight = max(server.weight, 1)
            current[server.id] = current.get(server.id, 0) + weight
            total += weight
            if best is None or current[server.id] > current[best.id]:
                best = server
        if best is not None:
            current[best.id] -= total
        return best


class LeastConnections:
    """Fewest active connections per unit of weight; ties rotate so equals share the load."""

    name = "least_connections"

    def __init__(self):
        self._turn = 0

    def pick(self, servers: Sequence[RealServer], active: Mapping[str, int]) -> RealServer | None:
        count = len(servers)
        if not count:
            return None
        start = self._turn % count
        self._turn += 1
        best, best_load = None, 0.0
        for i in range(count):
            server = servers[(start + i) % count]
            load = active.get(server.id, 0) / max(server.weight, 1)
            if best is None or load < best_load:
                best, best_load = server, load
        return best


class FirstAvailable:
    """Active/backup: every client on the first usable server in pool order."""

    name = "first_available"

    def pick(self, servers: Sequence[RealServer], active: Mapping[str, int]) -> RealServer | None:
        return servers[0] if servers else None


SCHEDULERS = {cls.name: cls for cls in (RoundRobin, WeightedRoundRobin, LeastConnections, FirstAvailable)}


def make_scheduler(name: str):
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}") from None
