"""The dispatcher in-process (no Celery): what it hands out, and how it treats a bad publish."""
import pytest

from monitoring import checker, published, schedule
from proxyworker.config import HealthCheck

from .helpers import pool, publish


@pytest.fixture
def clean(redis_client, keys):
    skeys = schedule.ScheduleKeys(keys)
    for key in (keys.config, keys.health, keys.health_detail, keys.admin, skeys.due, skeys.interval, skeys.synced,
                skeys.admin_seen):
        redis_client.delete(key)


def collect():
    sent = []
    return sent, lambda ids, due, expires: sent.append((ids, due, expires))


def test_nothing_published_nothing_dispatched(clean):
    sent, send = collect()
    assert checker.dispatch(send) == 0 and sent == []


def test_due_checks_go_out_in_chunks_with_an_expiry(redis_client, keys, clean):
    publish(redis_client, keys, pool("big", list(range(1, 1001)), HealthCheck(interval=0.2)), pool("plain", [7]))
    sent, send = collect()
    count = checker.dispatch(send)  # 1000 servers spread over 0.2 s, claimed a 0.5 s tick ahead: all of them
    assert count == 1000
    assert [len(ids) for ids, _due, _expires in sent] == [checker.CHUNK] * 10
    assert {expires for *_rest, expires in sent} == {1.0}  # never under a second, however short the interval
    ids = [sid for chunk, _due, _expires in sent for sid in chunk]
    assert len(set(ids)) == 1000 and "plain/s0" not in ids  # a pool without a check is not probed
    assert redis_client.hget(keys.health, "plain/s0") == "up"  # ... but it has a state
    dues = [d for _ids, due, _expires in sent for d in due]
    assert dues == sorted(dues)


def test_a_bad_publish_keeps_the_last_good_snapshot(redis_client, keys, clean, caplog):
    publish(redis_client, keys, pool("web", [1], HealthCheck()))
    good = published.load(redis_client, keys)
    redis_client.set(keys.config, '{"version": 2, "pools": [{"name": "web", "servers": "oops"}]}')
    assert published.load(redis_client, keys) is good
    assert "pools[0].servers: must be a list" in caplog.text
