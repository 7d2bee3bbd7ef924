"""The checker as it runs: a real Celery worker + beat, real servers, real Redis, the test database.

One worker serves the whole module (all its tests run on one xdist process);
each test publishes its own snapshot, which replaces the previous one.
"""
import asyncio
import time

import pytest
from channels.layers import get_channel_layer
from django.urls import reverse

from monitoring.messages import HEALTH_GROUP
from monitoring.models import HealthEvent
from proxyworker.config import HealthCheck
from tests.conftest import free_port

from .celeryproc import CeleryWorker, ServerProcess
from .helpers import TRANSACTIONAL, detail, pool, publish, wait_for

pytestmark = [pytest.mark.xdist_group("monitoring-celery"), TRANSACTIONAL, pytest.mark.usefixtures("restore_migrated_data")]

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
    listener = GroupListener()
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
        message = listener.receive(lambda m: m["server"] == "farm/cs1" and m["to"] == "down")
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
        listener.close()


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


def test_drain_and_enable_buttons_of_the_pool_page_are_published_within_a_tick(worker, servers, redis_client, keys,
                                                                                admin_client):
    from balancer.models import Pool, RealServer

    cs = servers.start("http")
    server = RealServer.objects.create(pool=Pool.objects.create(name="cs"), name="cs1", address="127.0.0.1",
                                       port=cs.port)
    publish(redis_client, keys, pool("cs", {"cs1": cs.port}, HealthCheck(type="http", interval=30.0)))
    wait_for(lambda: (detail(redis_client, keys, "cs/cs1") or {}).get("outcome") == "up", timeout=10)
    page = admin_client.get(server.pool.get_absolute_url()).content.decode()
    assert 'name="state" value="drain"' in page and 'data-server="cs/cs1"' in page

    admin_client.post(reverse("balancer:server_state", args=[server.pk]), {"state": "drain"})
    clicked = time.monotonic()
    wait_for(lambda: redis_client.hget(keys.health, "cs/cs1") == "drain", timeout=5)
    assert time.monotonic() - clicked < 2.0  # a tick, not the 30 s check interval
    event = wait_for(lambda: HealthEvent.objects.filter(server_id="cs/cs1").first())
    assert (event.from_state, event.to_state, event.reason) == ("up", "drain", "admin: drain")

    admin_client.post(reverse("balancer:server_state", args=[server.pk]), {"state": "enabled"})
    wait_for(lambda: redis_client.hget(keys.health, "cs/cs1") == "up", timeout=5)
    page = admin_client.get(server.pool.get_absolute_url()).content.decode()
    assert "admin: enabled" in page  # the panel's recent events
    redis_client.hdel(keys.admin, "cs/cs1")


# --- helpers -------------------------------------------------------------------


class GroupListener:
    """A member of the Channels group `health`, on its own event loop, like a dashboard consumer."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.layer = get_channel_layer()
        self.channel = self.loop.run_until_complete(self._join())

    async def _join(self):
        channel = await self.layer.new_channel()
        await self.layer.group_add(HEALTH_GROUP, channel)
        return channel

    def receive(self, match, timeout=5.0):
        async def until_match():
            while True:
                message = await self.layer.receive(self.channel)
                if match(message):
                    return message

        return self.loop.run_until_complete(asyncio.wait_for(until_match(), timeout))

    def close(self):
        self.loop.run_until_complete(self.layer.group_discard(HEALTH_GROUP, self.channel))
        self.loop.run_until_complete(self.layer.close_pools())
        self.loop.close()


def drain_pubsub(pubsub, timeout=0.5):
    messages, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.05)
        if message:
            messages.append(message)
    return messages
