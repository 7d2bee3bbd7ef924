"""The checker's two jobs, called by the Celery tasks (which stay thin).

`dispatch()` runs every beat tick: follow the published snapshot, fold admin
states in, claim the checks that are due and fan them out in chunks.
`check(ids)` probes one chunk concurrently and records the results.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable

from django.conf import settings

from . import events, published, records, schedule
from .checks import probe_many

log = logging.getLogger(__name__)
CHUNK = 100  # servers per task: enough to amortise a task, small enough to spread over workers


def dispatch(send: Callable[[list[str], list[float], float], None]) -> int:
    """Claim what is due and hand each chunk to `send(ids, due_times, expires_s)`; returns the count."""
    client, keys = published.redis_client(), published.keys()
    current = published.load(client, keys)
    if current is None:
        return 0  # nothing published yet
    skeys = schedule.ScheduleKeys(keys)
    schedule.sync(client, skeys, current)
    _reconcile_if_changed(client, keys, skeys, current)
    claims = schedule.claim_due(client, skeys, lookahead=settings.VIEWLB_HEALTH_TICK)
    for chunk in schedule.chunks(claims, CHUNK):
        # A chunk that waited longer than its shortest interval is stale: the next round is already due.
        expires = max(1.0, min(c.interval for c in chunk))
        send([c.server_id for c in chunk], [c.due_at for c in chunk], expires)
    return len(claims)


def check(server_ids: list[str], due_times: list[float] | None = None) -> list[records.Transition]:
    client, keys = published.redis_client(), published.keys()
    current = published.load(client, keys)
    if current is None:
        return []
    checked = current.checked
    targets = {sid: (checked[sid].server.address, checked[sid].server.port, checked[sid].check)
               for sid in server_ids if sid in checked}
    due = dict(zip(server_ids, due_times or (), strict=False))
    # claimed up to a tick ahead: wait for each due time, but never longer than a tick
    results = asyncio.run(probe_many(targets, due, max_wait=settings.VIEWLB_HEALTH_TICK))
    transitions = records.record_results(client, keys, current, results, due)
    events.save_and_announce(transitions)
    return transitions


def _reconcile_if_changed(client, keys, skeys, current) -> None:
    """Admin states change in the console between checks; fold them in within one tick, not one interval."""
    admin = sorted(client.hgetall(keys.admin).items())
    fingerprint = hashlib.sha1(repr((current.text, admin)).encode()).hexdigest()
    if client.get(skeys.admin_seen) == fingerprint:
        return
    events.save_and_announce(records.reconcile(client, keys, current))
    client.set(skeys.admin_seen, fingerprint)
