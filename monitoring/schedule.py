"""When each server is checked next: a due-time ZSET in Redis.

One beat entry runs the dispatcher every tick (0.5 s); it claims the servers
whose due time has come and moves them to their next due time in one Lua
script, so two dispatchers that overlap can never hand out the same check. The
next due time is the previous one plus the interval (no drift); a server that
fell behind is not checked twice in a row to catch up.

The ZSET follows the published snapshot: `sync()` adds new checked servers
(spread over their first interval), drops removed ones and pulls a server forward when its interval
got shorter.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import redis

from proxyworker.config import Keys

from .published import Published

CLAIM_LIMIT = 5000  # per tick; far above 500 servers / 2 s * 0.5 s


@dataclass(frozen=True)
class ScheduleKeys:
    """The checker's own bookkeeping, under the contract's health key."""

    keys: Keys

    @property
    def due(self):  # ZSET server id -> next due time (epoch seconds)
        return self.keys.health + ":due"

    @property
    def interval(self):  # hash server id -> check interval (s)
        return self.keys.health + ":interval"

    @property
    def synced(self):  # the snapshot text hash the ZSET was last synced with
        return self.keys.health + ":synced"

    @property
    def admin_seen(self):  # fingerprint of the admin states last folded into `health`
        return self.keys.health + ":admin-seen"


@dataclass(frozen=True)
class Claim:
    server_id: str
    due_at: float
    interval: float


_CLAIM = """
local now = tonumber(ARGV[1])
local horizon = now + tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', horizon, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #due, 2 do
  local id, at = due[i], tonumber(due[i + 1])
  local interval = tonumber(redis.call('HGET', KEYS[2], id) or ARGV[3])
  local next_at = at + interval
  if next_at <= now then next_at = now + interval end
  redis.call('ZADD', KEYS[1], string.format('%.6f', next_at), id)
  out[#out + 1] = id
  out[#out + 1] = due[i + 1]
  out[#out + 1] = tostring(interval)
end
return out
"""


def claim_due(client: redis.Redis, skeys: ScheduleKeys, now: float | None = None, lookahead: float = 0.0) -> list[Claim]:
    """Atomically take every server due before now + lookahead and reschedule it.

    With a lookahead of one tick the task waits for each server's due time
    itself, so a check is not up to a tick late.
    """
    now = time.time() if now is None else now
    flat = client.eval(_CLAIM, 2, skeys.due, skeys.interval, f"{now:.6f}", CLAIM_LIMIT, "2", f"{lookahead:.6f}")
    return [Claim(flat[i], float(flat[i + 1]), float(flat[i + 2])) for i in range(0, len(flat), 3)]


def sync(client: redis.Redis, skeys: ScheduleKeys, published: Published, now: float | None = None) -> bool:
    """Bring the ZSET in step with the published servers; False when it already was."""
    fingerprint = hashlib.sha1(published.text.encode()).hexdigest()
    if client.get(skeys.synced) == fingerprint:
        return False
    now = time.time() if now is None else now
    wanted = {sid: t.check.interval for sid, t in published.checked.items()}
    old_intervals = {k: float(v) for k, v in client.hgetall(skeys.interval).items()}
    scheduled = set(client.zrange(skeys.due, 0, -1))
    pipe = client.pipeline(transaction=True)
    gone = (scheduled | set(old_intervals)) - set(wanted)
    if gone:
        pipe.zrem(skeys.due, *gone)
        pipe.hdel(skeys.interval, *gone)
    if wanted:
        pipe.hset(skeys.interval, mapping=wanted)
        new = sorted(wanted.keys() - scheduled)
        if new:
            pipe.zadd(skeys.due, spread(new, wanted, now), nx=True)
        shorter = {sid: now + iv for sid, iv in wanted.items() if sid in scheduled and iv < old_intervals.get(sid, iv)}
        if shorter:
            pipe.zadd(skeys.due, shorter, lt=True)  # only ever earlier: never postpone a due check
    pipe.set(skeys.synced, fingerprint)
    pipe.execute()
    return True


def spread(server_ids: list[str], intervals: dict[str, float], now: float) -> dict[str, float]:
    """First due times spread over one interval (HAProxy's spread-checks): 500 servers added at once
    would otherwise all fall due in the same tick, every interval, and queue up behind each other."""
    count = len(server_ids)
    return {sid: now + intervals[sid] * i / count for i, sid in enumerate(server_ids)}


def chunks(claims: list[Claim], size: int):
    for i in range(0, len(claims), size):
        yield claims[i : i + size]
