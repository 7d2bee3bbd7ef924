"""Which real servers may take traffic: health, admin state and local failures.

Pure code (time is passed in). The I/O side feeds it the two Redis hashes:
`Keys.health` (written by the health checker) and `Keys.admin` (written by the
console at once). A server's state is the worst of its health and its admin
state; the admin hash overrides the snapshot's `admin_state` when it has an
entry, so a drain from the console needs no config apply.
"""
from __future__ import annotations

from collections.abc import Mapping

from .config import HEALTH_STATES, RealServer

UP, DRAIN, DOWN, DISABLED = "up", "drain", "down", "disabled"
# down and disabled both mean "no traffic at all"; drain keeps clients already stuck to it.
_RANK = {UP: 0, DRAIN: 1, DOWN: 2, DISABLED: 2}
_ADMIN = {"enabled": UP, "drain": DRAIN, "disabled": DISABLED}

# After a refused or timed-out connect, new clients avoid the server this long,
# so a dead server costs one failed connect, not one per client, until the
# health checker (which decides when it really returns) has caught up.
HOLD_DOWN_SECONDS = 2.0


def effective_state(health: str | None, admin: str | None, snapshot_admin: str) -> str:
    """The worst of the health state and the admin state (hash entry, else snapshot)."""
    operational = health if health in _RANK else UP  # missing (or unknown) health = up
    administrative = _ADMIN.get(admin or snapshot_admin, UP)
    return operational if _RANK[operational] >= _RANK[administrative] else administrative


class ServerStates:
    def __init__(self):
        self.health: dict[str, str] = {}
        self.admin: dict[str, str] = {}
        self._held_until: dict[str, float] = {}
        # Bumped whenever accepts_new/accepts_stuck may answer otherwise (besides a hold-down
        # running out, see `held_until`): lets a caller keep answers between two changes.
        self.version = 0

    def update(self, health: Mapping[str, str], admin: Mapping[str, str]) -> list[str]:
        """Replace both hashes; returns the ids whose entries changed (for the log)."""
        changed = {k for k in set(health) | set(self.health) if health.get(k) != self.health.get(k)}
        changed |= {k for k in set(admin) | set(self.admin) if admin.get(k) != self.admin.get(k)}
        self.health = {k: v for k, v in health.items() if v in HEALTH_STATES}
        self.admin = dict(admin)
        self.version += 1
        return sorted(changed)

    def state(self, server: RealServer) -> str:
        return effective_state(self.health.get(server.id), self.admin.get(server.id), server.admin_state)

    def accepts_new(self, server: RealServer, now: float) -> bool:
        """May the scheduler give this server a client that is stuck nowhere?"""
        if server.weight <= 0 or self.state(server) != UP:
            return False
        held = self._held_until.get(server.id)
        return held is None or held <= now

    def refusal(self, server: RealServer, now: float) -> str | None:
        """Why `accepts_new` says no, for people (the trace page): the state ("down", "drain",
        "disabled"), else "weight" (weight 0) or "held" (hold-down after a failed connect).
        None exactly when `accepts_new` says yes. Kept beside it rather than under it: it is
        off the per-connection path."""
        state = self.state(server)
        if state != UP:
            return state
        if server.weight <= 0:
            return "weight"
        held = self._held_until.get(server.id)
        return None if held is None or held <= now else "held"

    def accepts_stuck(self, server: RealServer) -> bool:
        """May a client whose persistence entry names this server keep going there?"""
        return _RANK[self.state(server)] <= _RANK[DRAIN]

    def connect_failed(self, server_id: str, now: float) -> None:
        self._held_until[server_id] = now + HOLD_DOWN_SECONDS
        self.version += 1

    def connect_succeeded(self, server_id: str) -> None:
        if self._held_until.pop(server_id, None) is not None:
            self.version += 1

    def held_until(self, server_id: str) -> float | None:
        """When the hold-down of a server whose connect failed ends (None: not held down)."""
        return self._held_until.get(server_id)
