"""The Redis side of the state machine: records, published states, notifications, races."""
import logging
import threading

import pytest

from monitoring import published, records
from monitoring.checks import CheckResult
from proxyworker.config import HealthCheck

from .helpers import detail, pool, publish

UP = CheckResult("up", 200, 1.5)
DRAIN = CheckResult("drain", 503, 2.5)
FAIL = CheckResult("fail", error="connection refused")


@pytest.fixture
def clean(redis_client, keys):
    for key in (keys.health, keys.health_detail, keys.admin, keys.config):
        redis_client.delete(key)
    yield


def record(client, keys, results, at):
    current = published.load(client, keys)
    return records.record_results(client, keys, current, {sid: (r, at) for sid, r in results.items()})


def test_a_first_good_check_writes_state_and_detail_without_an_event(redis_client, keys, clean):
    publish(redis_client, keys, pool("web", [4431], HealthCheck(interval=1, rise=2, fall=2)))
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.health)
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    assert record(redis_client, keys, {"web/s0": UP}, 1000.0) == []
    assert redis_client.hget(keys.health, "web/s0") == "up"
    stored = detail(redis_client, keys, "web/s0")
    assert stored["state"] == "up" and stored["latency_ms"] == 1.5 and stored["status"] == 200
    assert stored["checked_at"] == 1000.0 and stored["ok"] == 1 and stored["interval"] == 1
    message = pubsub.get_message(timeout=1)
    assert message and message["data"] == "web/s0"
    pubsub.close()


def test_fall_failures_make_one_transition_and_one_announcement(redis_client, keys, clean):
    publish(redis_client, keys, pool("web", [4431], HealthCheck(interval=1, rise=2, fall=2)))
    record(redis_client, keys, {"web/s0": UP}, 1000.0)
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.health)
    pubsub.get_message(timeout=1)
    assert record(redis_client, keys, {"web/s0": FAIL}, 1001.0) == []
    [transition] = record(redis_client, keys, {"web/s0": FAIL}, 1002.0)
    assert (transition.server_id, transition.pool, transition.name) == ("web/s0", "web", "s0")
    assert (transition.from_state, transition.to_state) == ("up", "down")
    assert transition.reason == "2 failed checks in a row: connection refused"
    assert record(redis_client, keys, {"web/s0": FAIL}, 1003.0) == []
    assert redis_client.hget(keys.health, "web/s0") == "down"
    assert detail(redis_client, keys, "web/s0")["error"] == "connection refused"
    assert pubsub.get_message(timeout=1)["data"] == "web/s0"
    assert pubsub.get_message(timeout=0.2) is None  # staying down announces nothing
    pubsub.close()


def test_an_older_result_does_not_overwrite_a_newer_one(redis_client, keys, clean):
    publish(redis_client, keys, pool("web", [4431], HealthCheck(rise=1, fall=1)))
    record(redis_client, keys, {"web/s0": UP}, 1005.0)
    assert record(redis_client, keys, {"web/s0": FAIL}, 1004.0) == []
    assert redis_client.hget(keys.health, "web/s0") == "up"
    assert detail(redis_client, keys, "web/s0")["checked_at"] == 1005.0


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "monitoring.records" and r.levelno >= logging.WARNING]


def test_overlapping_tasks_report_a_transition_once(redis_client, keys, clean, caplog):
    publish(redis_client, keys, pool("web", [4431, 4432], HealthCheck(rise=1, fall=1)))
    record(redis_client, keys, {"web/s0": UP, "web/s1": UP}, 1000.0)
    barrier, found = threading.Barrier(8), []

    def task(i):
        client = published.redis_client()
        barrier.wait()
        found.extend(record(client, keys, {"web/s0": FAIL, "web/s1": DRAIN}, 1001.0 + i / 100))

    threads = [threading.Thread(target=task, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted((t.server_id, t.to_state) for t in found) == [("web/s0", "down"), ("web/s1", "drain")]
    # Each task loses at most 7 times (once per other task's write), within the 8 attempts: all settle.
    assert warnings_of(caplog) == []


def test_a_console_drain_folded_in_by_a_check_first_leaves_the_reconcile_nothing_to_do(redis_client, keys, clean,
                                                                                       caplog):
    """Production order: the console sets the admin hash; a check task that runs before the next
    tick reads it too and publishes the drain at once; the tick's reconcile then finds both records
    as they should be. That is nothing to do, not a compare-and-set that kept losing: no warning."""
    publish(redis_client, keys, pool("web", [4431, 4432], HealthCheck(rise=1, fall=1)))
    current = published.load(redis_client, keys)
    record(redis_client, keys, {"web/s0": UP, "web/s1": UP}, 1000.0)
    caplog.set_level(logging.INFO, logger="monitoring.records")
    redis_client.hset(keys.admin, "web/s0", "drain")  # balancer.services.set_admin_state

    [t] = record(redis_client, keys, {"web/s0": UP, "web/s1": UP}, 1001.0)
    assert (t.server_id, t.from_state, t.to_state, t.reason) == ("web/s0", "up", "drain", "admin: drain")
    before = redis_client.hgetall(keys.health_detail)
    assert records.reconcile(redis_client, keys, current) == []
    assert record(redis_client, keys, {"web/s0": FAIL, "web/s1": FAIL}, 1000.5) == []  # outdated: dropped
    assert redis_client.hgetall(keys.health_detail) == before
    assert redis_client.hmget(keys.health, ["web/s0", "web/s1"]) == ["drain", "up"]
    assert warnings_of(caplog) == []


def test_admin_states_from_the_console_pass_through(redis_client, keys, clean):
    publish(redis_client, keys, pool("web", [4431, 4432], HealthCheck(rise=1, fall=1), admin={"s1": "disabled"}))
    current = published.load(redis_client, keys)
    record(redis_client, keys, {"web/s0": UP, "web/s1": UP}, 1000.0)
    assert redis_client.hget(keys.health, "web/s1") == "disabled"  # the snapshot's admin state
    redis_client.hset(keys.admin, mapping={"web/s0": "drain", "web/s1": "enabled"})
    transitions = records.reconcile(redis_client, keys, current)
    assert sorted((t.server_id, t.from_state, t.to_state, t.reason) for t in transitions) == [
        ("web/s0", "up", "drain", "admin: drain"),
        ("web/s1", "disabled", "up", "admin: enabled"),
    ]
    assert redis_client.hmget(keys.health, ["web/s0", "web/s1"]) == ["drain", "up"]
    assert records.reconcile(redis_client, keys, current) == []  # nothing new: nothing written
    # a drained server that dies is down, not drain: not even its sticky clients go there
    [t] = record(redis_client, keys, {"web/s0": FAIL}, 1001.0)
    assert (t.from_state, t.to_state) == ("drain", "down")


def test_unchecked_servers_are_up_unless_admin_says_otherwise_and_gone_ones_are_dropped(redis_client, keys, clean):
    publish(redis_client, keys, pool("web", [4431], HealthCheck()), pool("plain", [4433, 4434], admin={"s1": "drain"}))
    records.reconcile(redis_client, keys, published.load(redis_client, keys))
    assert redis_client.hgetall(keys.health) == {"web/s0": "up", "plain/s0": "up", "plain/s1": "drain"}
    assert detail(redis_client, keys, "plain/s0")["checked"] is False
    assert detail(redis_client, keys, "web/s0")["checked_at"] is None  # checked, but no result yet
    publish(redis_client, keys, pool("plain", [4433]))
    records.reconcile(redis_client, keys, published.load(redis_client, keys))
    assert redis_client.hgetall(keys.health) == {"plain/s0": "up"}
    assert set(redis_client.hkeys(keys.health_detail)) == {"plain/s0"}


def test_results_for_servers_no_longer_published_are_ignored(redis_client, keys, clean):
    publish(redis_client, keys, pool("web", [4431], HealthCheck()))
    assert record(redis_client, keys, {"web/s9": FAIL}, 1000.0) == []
    assert redis_client.hgetall(keys.health) == {}
