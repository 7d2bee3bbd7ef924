"""When Celery stops, pages say so: every server turns stale with the age of its last check."""
import time

import pytest
from django.template import Context, Template

from monitoring import services
from proxyworker.config import HealthCheck

from .celeryproc import CeleryWorker
from .helpers import TRANSACTIONAL, pool, publish, wait_for

pytestmark = [pytest.mark.xdist_group("monitoring-celery"), TRANSACTIONAL, pytest.mark.usefixtures("restore_migrated_data")]


def test_health_turns_stale_when_the_worker_stops(django_db_blocker, servers, redis_client, keys, tmp_path):
    http = servers.start("http")
    publish(redis_client, keys, pool("stale", {"cs1": http.port}, HealthCheck(type="http", interval=1.0)),
            pool("unchecked", {"cs2": http.port}))
    with django_db_blocker.unblock():
        worker = CeleryWorker(tmp_path).start()
    try:
        fresh = wait_for(lambda: (h := services.server_health(["stale/cs1"])["stale/cs1"])["checked_at"] and h)
        assert (fresh["state"], fresh["stale"]) == ("up", False)
        assert fresh["age_s"] < 2
    finally:
        worker.stop()
    stopped = time.time()
    # the checker is gone: results age, and past max(3 x interval, 10 s) the page says stale
    health = wait_for(lambda: (h := services.server_health(["stale/cs1"])["stale/cs1"])["stale"] and h, timeout=15)
    assert health["age_s"] >= services.STALE_MIN_S
    assert time.time() - stopped <= services.STALE_MIN_S + 1.5
    html = Template("{% load health %}{% pool_health 'stale' %}").render(Context())
    assert "stale (last check 1" in html and "s ago)" in html
    assert "last known: up" in html
    # proxy workers keep the last states meanwhile
    assert redis_client.hget(keys.health, "stale/cs1") == "up"
    # a server without a health check cannot go stale
    assert services.server_health(["unchecked/cs2"])["unchecked/cs2"]["stale"] is False
