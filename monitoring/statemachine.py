"""The health state machine of one real server: pure, no I/O.

Two layers, kept apart like HAProxy's operational and administrative state:
- operational (`up` / `down` / `drain`), from check results with rise and fall;
- effective, what `<prefix>:health` publishes: the operational state combined
  with the administrative state set in the console (drain / disabled).

Rules:
- a 503 (expect_drain) puts the server into `drain` as soon as it is seen: a
  quiesced Horizon server keeps its sessions, it is not dead; it counts as
  reachable;
- `fall` failures in a row take an up or draining server down;
- a server returns to up only after `rise` reachable checks in a row (a 503
  on the way makes a down server drain at once, which sends it no new client;
  a long-quiesced server that answers 200 again is up at once);
- a new server starts up (workers treat a missing state as up) and needs
  `fall` failures to go down, like HAProxy.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from proxyworker.config import AdminState, HealthState

from .checks import CheckResult

Operational = Literal["up", "down", "drain"]
# Worst first: the effective state is the worst of the operational and the admin state.
_SEVERITY = {"disabled": 3, "down": 2, "drain": 1, "up": 0, "enabled": 0}


@dataclass(frozen=True)
class Counters:
    operational: Operational = "up"
    ok: int = 0  # reachable checks in a row (200 or 503)
    failed: int = 0  # failed checks in a row


@dataclass(frozen=True)
class Step:
    counters: Counters
    reason: str  # why the operational state changed; "" when it did not


def observe(previous: Counters, result: CheckResult, rise: int, fall: int) -> Step:
    """The next counters and operational state after one check result."""
    if result.outcome == "fail":
        counters = replace(previous, ok=0, failed=previous.failed + 1)
        if previous.operational != "down" and counters.failed >= fall:
            reason = f"{_checks(counters.failed, 'failed check')} in a row: {result.error}"
            return Step(replace(counters, operational="down"), reason)
        return Step(counters, "")
    counters = replace(previous, ok=previous.ok + 1, failed=0)
    if result.outcome == "drain":
        reason = "" if previous.operational == "drain" else f"answered {result.status}: quiesced, draining"
        return Step(replace(counters, operational="drain"), reason)
    if previous.operational == "up" or counters.ok < rise:
        return Step(counters, "")
    if previous.operational == "down":
        reason = f"{_checks(counters.ok, 'good check')} in a row"
    else:
        reason = f"answered {result.status}: no longer quiesced"
    return Step(replace(counters, operational="up"), reason)


def effective_state(operational: Operational, admin: AdminState | str | None) -> HealthState:
    """What the proxy workers obey: admin drain/disabled pass through, but a dead server stays down."""
    admin_state = "disabled" if admin == "disabled" else "drain" if admin == "drain" else "up"
    return max((operational, admin_state), key=_SEVERITY.__getitem__)


def admin_reason(admin: str) -> str:
    return f"admin: {admin}" if admin in ("drain", "disabled") else "admin: enabled"


def _checks(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"
