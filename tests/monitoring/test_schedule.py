"""The due-time ZSET: follows the snapshot, claims atomically, never drifts."""
import threading

import pytest

from monitoring import published, schedule
from proxyworker.config import HealthCheck

from .helpers import pool, publish


@pytest.fixture
def skeys(redis_client, keys):
    skeys = schedule.ScheduleKeys(keys)
    for key in (skeys.due, skeys.interval, skeys.synced, keys.config):
        redis_client.delete(key)
    return skeys


def sync(client, keys, skeys, now):
    return schedule.sync(client, skeys, published.load(client, keys), now=now)


def test_new_servers_are_spread_over_their_first_interval_then_due_every_interval(redis_client, keys, skeys):
    publish(redis_client, keys, pool("a", [1, 2], HealthCheck(interval=2)), pool("b", [3], HealthCheck(interval=30)),
            pool("nocheck", [4]))
    assert sync(redis_client, keys, skeys, now=100.0) is True
    assert sync(redis_client, keys, skeys, now=100.0) is False  # same snapshot: nothing to do
    assert redis_client.zrange(skeys.due, 0, -1, withscores=True) == [("a/s0", 100.0), ("a/s1", 100 + 2 / 3),
                                                                     ("b/s0", 100 + 30 * 2 / 3)]
    claims = schedule.claim_due(redis_client, skeys, now=100.7)
    assert [(c.server_id, c.due_at, c.interval) for c in claims] == [("a/s0", 100.0, 2.0), ("a/s1", 100 + 2 / 3, 2.0)]
    assert schedule.claim_due(redis_client, skeys, now=101.9) == []
    # next due = previous due + interval: a late tick does not shift the rhythm
    assert [(c.server_id, c.due_at) for c in schedule.claim_due(redis_client, skeys, now=102.4)] == [("a/s0", 102.0)]
    assert redis_client.zscore(skeys.due, "a/s0") == 104.0


def test_a_lookahead_claims_what_falls_due_before_the_next_tick(redis_client, keys, skeys):
    publish(redis_client, keys, pool("a", [1, 2, 3, 4], HealthCheck(interval=2)))
    sync(redis_client, keys, skeys, now=100.0)  # due at 100.0, 100.5, 101.0, 101.5
    claims = schedule.claim_due(redis_client, skeys, now=100.0, lookahead=0.5)
    assert [(c.server_id, c.due_at) for c in claims] == [("a/s0", 100.0), ("a/s1", 100.5)]
    assert redis_client.zscore(skeys.due, "a/s1") == 102.5  # rescheduled from its due time, not from now


def test_a_server_that_fell_far_behind_is_not_checked_twice_to_catch_up(redis_client, keys, skeys):
    publish(redis_client, keys, pool("a", [1], HealthCheck(interval=2)))
    sync(redis_client, keys, skeys, now=100.0)
    assert len(schedule.claim_due(redis_client, skeys, now=100.0)) == 1
    assert len(schedule.claim_due(redis_client, skeys, now=109.0)) == 1
    assert redis_client.zscore(skeys.due, "a/s0") == 111.0
    assert schedule.claim_due(redis_client, skeys, now=110.0) == []


def test_it_follows_the_snapshot(redis_client, keys, skeys):
    publish(redis_client, keys, pool("a", [1, 2], HealthCheck(interval=30)))
    sync(redis_client, keys, skeys, now=100.0)
    schedule.claim_due(redis_client, skeys, now=100.0)
    publish(redis_client, keys, pool("a", [1], HealthCheck(interval=1)), pool("c", [5], HealthCheck(interval=5)))
    sync(redis_client, keys, skeys, now=105.0)
    assert redis_client.zrange(skeys.due, 0, -1, withscores=True) == [("c/s0", 105.0), ("a/s0", 106.0)]
    assert redis_client.hgetall(skeys.interval) == {"a/s0": "1.0", "c/s0": "5.0"}


def test_overlapping_dispatchers_never_claim_the_same_check(redis_client, keys, skeys):
    publish(redis_client, keys, pool("a", list(range(1, 301)), HealthCheck(interval=5)))
    sync(redis_client, keys, skeys, now=100.0)
    barrier, claimed = threading.Barrier(6), []

    def dispatcher():
        barrier.wait()
        for _ in range(5):
            claimed.extend(c.server_id for c in schedule.claim_due(redis_client, skeys, now=104.99))

    threads = [threading.Thread(target=dispatcher) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(claimed) == 300 and len(set(claimed)) == 300
