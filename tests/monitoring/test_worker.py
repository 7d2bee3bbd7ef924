"""The checker as it runs: a real Celery worker + beat, real servers, real Redis, the test database.

One worker serves the whole module (all its tests run on one xdist process);
each test publishes its own snapshot, which replaces the previous one.
"""
import asyncio
import time

import pytest
from channels.layers import get_channel_layer

from monitoring.messages import HEALTH_GROUP
from monitoring.models import HealthEvent
from proxyworker.config import HealthCheck
from tests.conftest import free_port

from .celeryproc import CeleryWorker, ServerProcess
from .helpers import detail, pool, publish, wait_for

pytestmark = [pytest.mark.xdist_group("monitoring-celery"), pytest.mark.django_db(transaction=True)]

FAST = dict(interval=1.0, timeout=0.5, rise=1, fall=1)
FAILOVER = dict(interval=1.0, timeout=0.5, rise=2, fall=2)  # the bound: down within 3 s
BOUND_S = 3.0


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock():
        worker = CeleryWorker(tmp_path_factory.mktemp("celery")).start()
    yield worker
    worker.stop()


def states(client, keys, *ids):
    return client.hmget(keys.health, list(ids))


def test_each_check_type_against_real_servers(worker, servers, redis_client, keys):
    tcp, http, https = servers.start("tcp"), servers.start("http"), servers.start("https")
    notfound, garbage, hang = servers.start("http", status=404), servers.start("garbage"), servers.start("hang")
    quiesced = servers.start("https", status=503)
    publish(
        redis_client, keys,
        pool("tcp", {"ok": tcp.port, "refused": free_port()}, HealthCheck(type="tcp", **FAST)),
        pool("http", {"ok": http.port, "notfound": notfound.port, "garbage": garbage.port, "hang": hang.port},
             HealthCheck(type="http", **FAST)),
        pool("https", {"ok": https.port, "quiesced": quiesced.port}, HealthCheck(type="https", **FAST)),
        pool("strict", {"selfsigned": https.port}, HealthCheck(type="https", verify_certificate=True, **FAST)),
        pool("nocheck", {"any": free_port()}),
    )
    expected = {
        "tcp/ok": "up", "tcp/refused": "down",
        "http/ok": "up", "http/notfound": "down", "http/garbage": "down", "http/hang": "down",
        "https/ok": "up", "https/quiesced": "drain", "strict/selfsigned": "down", "nocheck/any": "up",
    }
    wait_for(lambda: dict(zip(expected, states(redis_client, keys, *expected), strict=True)) == expected,
             timeout=15)
    errors = {sid: detail(redis_client, keys, sid).get("error") for sid in expected}
    assert errors["tcp/refused"] == "connection refused"
    assert errors["http/notfound"] == "answered 404"
    assert errors["http/garbage"].startswith("not an HTTP response")
    assert errors["http/hang"] == "no answer within 0.5 s (waiting for the response)"
    assert errors["strict/selfsigned"].startswith("TLS: certificate not trusted")
    assert detail(redis_client, keys, "https/ok")["latency_ms"] > 0
    assert detail(redis_client, keys, "https/quiesced")["status"] == 503
    assert detail(redis_client, keys, "nocheck/any")["checked"] is False
    assert https.requests and https.requests[-1].headers["connection"] == "close"
    wait_for(lambda: HealthEvent.objects.count() >= 6)  # refused, notfound, garbage, hang, quiesced, selfsigned
    events = {e.server_id: e for e in HealthEvent.objects.all()}
    assert (events["tcp/refused"].from_state, events["tcp/refused"].to_state) == ("up", "down")
    assert events["tcp/refused"].reason == "1 failed check in a row: connection refused"
    assert events["https/quiesced"].to_state == "drain" and events["https/quiesced"].latency_ms > 0
    assert "tcp/ok" not in events  # a server that is up as expected makes no event


def test_a_killed_server_is_down_within_the_bound_and_returns_after_rise(worker, redis_client, keys):
    port = free_port()
    server = ServerProcess("http", port).start()
    layer, channel = subscribe_health_group()
    try:
        publish(redis_client, keys, pool("farm", {"cs1": port}, HealthCheck(type="http", **FAILOVER)))
        wait_for(lambda: (detail(redis_client, keys, "farm/cs1") or {}).get("ok", 0) >= 2, timeout=10)
        pubsub = redis_client.pubsub()
        pubsub.subscribe(keys.health)
        server.kill()
        killed = time.monotonic()
        wait_for(lambda: redis_client.hget(keys.health, "farm/cs1") == "down", timeout=BOUND_S + 2, interval=0.01)
        elapsed = time.monotonic() - killed
        print(f"killed server marked down after {elapsed:.2f} s")
        assert elapsed <= BOUND_S
        assert any(m["type"] == "message" and m["data"] == "farm/cs1" for m in drain_pubsub(pubsub))
        down = wait_for(lambda: HealthEvent.objects.filter(server_id="farm/cs1", to_state="down").first())
        assert (down.pool, down.server_name, down.from_state) == ("farm", "cs1", "up")
        assert down.reason == "2 failed checks in a row: connection refused"
        message = receive(layer, channel, lambda m: m["server"] == "farm/cs1" and m["to"] == "down")
        assert message["type"] == "health.event" and message["from"] == "up"

        server = ServerProcess("http", port).start()
        # the first good check does not bring it back: rise is 2
        first = wait_for(lambda: (d := detail(redis_client, keys, "farm/cs1")) and d["outcome"] == "up" and d)
        assert (first["state"], first["ok"]) == ("down", 1)
        wait_for(lambda: redis_client.hget(keys.health, "farm/cs1") == "up", timeout=5)
        up = wait_for(lambda: HealthEvent.objects.filter(server_id="farm/cs1", to_state="up").first())
        assert HealthEvent.objects.filter(server_id="farm/cs1").count() == 2  # one down, one up: no doubles
        assert (up.from_state, up.reason) == ("down", "2 good checks in a row")
        pubsub.close()
    finally:
        server.kill()


def test_a_quiesced_server_drains_within_the_bound(worker, servers, redis_client, keys):
    uag = servers.start("https")
    publish(redis_client, keys, pool("uags", {"uag1": uag.port}, HealthCheck(type="https", **FAILOVER)))
    wait_for(lambda: (detail(redis_client, keys, "uags/uag1") or {}).get("ok", 0) >= 1, timeout=10)
    uag.status = 503
    quiesced = time.monotonic()
    wait_for(lambda: redis_client.hget(keys.health, "uags/uag1") == "drain", timeout=BOUND_S + 2, interval=0.01)
    elapsed = time.monotonic() - quiesced
    print(f"quiesced server in drain after {elapsed:.2f} s")
    assert elapsed <= BOUND_S
    event = wait_for(lambda: HealthEvent.objects.filter(server_id="uags/uag1", to_state="drain").first())
    assert event.reason == "answered 503: quiesced, draining"
    uag.status = 200
    wait_for(lambda: redis_client.hget(keys.health, "uags/uag1") == "up", timeout=5)


def test_admin_drain_from_the_console_is_published_within_a_tick(worker, servers, redis_client, keys):
    cs = servers.start("http")
    publish(redis_client, keys, pool("cs", {"cs1": cs.port}, HealthCheck(type="http", interval=30.0)))
    wait_for(lambda: (detail(redis_client, keys, "cs/cs1") or {}).get("outcome") == "up", timeout=10)
    # what balancer.services.set_admin_state does: no apply, no new snapshot
    redis_client.hset(keys.admin, "cs/cs1", "drain")
    redis_client.publish(keys.health, "cs/cs1")
    changed = time.monotonic()
    wait_for(lambda: redis_client.hget(keys.health, "cs/cs1") == "drain", timeout=5)
    assert time.monotonic() - changed < 2.0  # a tick, not the 30 s check interval
    event = wait_for(lambda: HealthEvent.objects.filter(server_id="cs/cs1").first())
    assert (event.from_state, event.to_state, event.reason) == ("up", "drain", "admin: drain")
    redis_client.hset(keys.admin, "cs/cs1", "enabled")
    wait_for(lambda: redis_client.hget(keys.health, "cs/cs1") == "up", timeout=5)
    redis_client.hdel(keys.admin, "cs/cs1")


# --- helpers -------------------------------------------------------------------


def subscribe_health_group():
    layer = get_channel_layer()

    async def join():
        channel = await layer.new_channel()
        await layer.group_add(HEALTH_GROUP, channel)
        return channel

    return layer, asyncio.run(join())


def receive(layer, channel, match, timeout=5.0):
    async def until_match():
        while True:
            message = await layer.receive(channel)
            if match(message):
                return message

    return asyncio.run(asyncio.wait_for(until_match(), timeout))


def drain_pubsub(pubsub, timeout=0.5):
    messages, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.05)
        if message:
            messages.append(message)
    return messages
