"""Each server's health in Redis: the published state and the last check result.

- `Keys.health` (hash id -> up/down/drain/disabled) is what proxy workers obey;
  every change is announced with `PUBLISH Keys.health <id>`.
- `Keys.health_detail` (hash id -> JSON) is the last check result with the
  state machine's counters: what the console shows. One record per server,
  overwritten by each check; transitions go to the database as events.

Updates are compare-and-set: read the old record, compute the new one in
Python (`statemachine`), write it in a Lua script only if the record is still
the one that was read, else read again. Two check tasks that overlap on one
server can therefore never both report the same transition, and a result
older than the stored one is dropped.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from proxyworker.config import Keys

from .checks import CheckResult
from .published import Published, Target
from .statemachine import Counters, admin_reason, effective_state, observe

log = logging.getLogger(__name__)
ATTEMPTS = 8

_CAS = """
local applied = {}
for i = 1, #ARGV, 4 do
  local id, expected, record, state = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local current = redis.call('HGET', KEYS[1], id) or ''
  if current == expected then
    redis.call('HSET', KEYS[1], id, record)
    if redis.call('HGET', KEYS[2], id) ~= state then
      redis.call('HSET', KEYS[2], id, state)
      redis.call('PUBLISH', KEYS[2], id)
    end
    applied[#applied + 1] = 1
  else
    applied[#applied + 1] = 0
  end
end
return applied
"""


@dataclass(frozen=True)
class Transition:
    server_id: str
    pool: str
    name: str
    from_state: str
    to_state: str
    reason: str
    latency_ms: float | None
    at: float  # epoch seconds


@dataclass(frozen=True)
class Change:
    record: dict  # the new detail record; record["state"] is the published state
    reason: str  # why, should the published state change
    latency_ms: float | None = None  # of the check that caused it


# A computation gets (previous record or None, admin hash value or None) and
# returns the change, or None to leave the server alone.
Compute = Callable[[dict | None, str | None], Change | None]


def record_results(
    client: redis.Redis, keys: Keys, published: Published, results: dict[str, tuple[CheckResult, float]],
    due: dict[str, float] | None = None,
) -> list[Transition]:
    """Fold check results into the state machine; returns the transitions that happened."""
    due = due or {}
    computations = {
        sid: _after_check(published.targets[sid], result, checked_at, due.get(sid))
        for sid, (result, checked_at) in results.items()
        if sid in published.checked  # removed from the snapshot while the check ran
    }
    return _apply(client, keys, published, computations)


def reconcile(client: redis.Redis, keys: Keys, published: Published) -> list[Transition]:
    """Fold admin states (console) and unchecked servers into `health`; drop servers that are gone."""
    computations = {sid: _after_admin(target) for sid, target in published.targets.items()}
    transitions = _apply(client, keys, published, computations)
    known = set(client.hkeys(keys.health)) | set(client.hkeys(keys.health_detail))
    gone = known - set(published.targets)
    if gone:
        client.hdel(keys.health, *gone)
        client.hdel(keys.health_detail, *gone)
    return transitions


def _after_check(target: Target, result: CheckResult, checked_at: float, due_at: float | None) -> Compute:
    check = target.check

    def compute(previous, admin_value):
        if previous and (previous.get("checked_at") or 0) > checked_at:
            return None  # a newer result is already there
        prev = _counters(previous)
        step = observe(prev, result, check.rise, check.fall)
        admin = admin_value or target.server.admin_state
        record = {
            "state": effective_state(step.counters.operational, admin),
            "operational": step.counters.operational,
            "admin": admin,
            "ok": step.counters.ok,
            "failed": step.counters.failed,
            "checked": True,
            "outcome": result.outcome,
            "status": result.status,
            "latency_ms": result.latency_ms,
            "error": result.error,
            "checked_at": round(checked_at, 3),
            "due_at": round(due_at, 3) if due_at else None,
            "interval": check.interval,
            "rise": check.rise,
            "fall": check.fall,
        }
        return Change(record, step.reason or admin_reason(admin), result.latency_ms)

    return compute


def _after_admin(target: Target) -> Compute:
    def compute(previous, admin_value):
        admin = admin_value or target.server.admin_state
        checked = target.check is not None
        operational = (previous or {}).get("operational", "up") if checked else "up"
        state = effective_state(operational, admin)
        record = dict(previous or {"checked_at": None})
        record.update(state=state, operational=operational, admin=admin, checked=checked)
        if not checked:
            record.update(ok=0, failed=0, interval=None)
        if previous and previous.get("checked") and not checked:
            return Change(record, "health check removed")
        return Change(record, admin_reason(admin))

    return compute


def _apply(client, keys: Keys, published: Published, computations: dict[str, Compute]) -> list[Transition]:
    transitions: list[Transition] = []
    pending = list(computations)
    for _attempt in range(ATTEMPTS):
        if not pending:
            break
        pipe = client.pipeline(transaction=False)
        pipe.hmget(keys.health_detail, pending)
        pipe.hmget(keys.admin, pending)
        raw_records, admin_values = pipe.execute()
        planned, args = [], []
        for sid, raw, admin in zip(pending, raw_records, admin_values, strict=True):
            previous = json.loads(raw) if raw else None
            change = computations[sid](previous, admin)
            if change is None:
                continue
            text = json.dumps(change.record, sort_keys=True, separators=(",", ":"))
            if text == raw:
                continue
            planned.append((sid, previous, change))
            args += [sid, raw or "", text, change.record["state"]]
        # Only a lost compare-and-set leaves a server pending: one whose computation found
        # nothing to change (already folded in by another task, or an outdated result) is settled.
        pending = []
        if not planned:
            break
        applied = client.eval(_CAS, 2, keys.health_detail, keys.health, *args)
        for (sid, previous, change), ok in zip(planned, applied, strict=True):
            if not ok:
                pending.append(sid)  # someone else wrote this server meanwhile: read again
                continue
            before = (previous or {}).get("state", "up")  # workers treat a missing state as up
            if before != change.record["state"]:
                transitions.append(_transition(published.targets[sid], before, change))
    if pending:
        log.warning("health records of %d servers not updated after %d attempts", len(pending), ATTEMPTS)
    return transitions


def _counters(previous: dict | None) -> Counters:
    if not previous or not previous.get("checked"):
        return Counters(operational=(previous or {}).get("operational", "up"))
    return Counters(previous["operational"], previous.get("ok", 0), previous.get("failed", 0))


def _transition(target: Target, before: str, change: Change) -> Transition:
    return Transition(
        server_id=target.id,
        pool=target.pool,
        name=target.server.name,
        from_state=before,
        to_state=change.record["state"],
        reason=change.reason,
        latency_ms=change.latency_ms,
        at=time.time(),
    )
