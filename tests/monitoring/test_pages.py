"""The console's health panel (pool page) and the health events timeline."""
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.template import Context, Template
from django.urls import reverse

from monitoring import published, records, services
from monitoring.checks import CheckResult
from monitoring.models import HealthEvent
from proxyworker.config import HealthCheck

from .helpers import pool, publish

pytestmark = pytest.mark.django_db


@pytest.fixture
def clean(redis_client, keys):
    for key in (keys.health, keys.health_detail, keys.admin, keys.config):
        redis_client.delete(key)


def event(server="web/s0", at=0, **fields):
    pool_name, name = server.split("/")
    defaults = dict(server_id=server, pool=pool_name, server_name=name, from_state="up", to_state="down",
                    reason="2 failed checks in a row: connection refused", latency_ms=None,
                    at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=at))
    return HealthEvent.objects.create(**{**defaults, **fields})


def render_panel(name):
    return Template("{% load health %}{% pool_health name %}").render(Context({"name": name}))


def test_it_requires_a_login(client):
    response = client.get(reverse("monitoring:events"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_it_lists_events_newest_first_and_filters(admin_client):
    event("web/s0", at=1, to_state="down")
    event("web/s1", at=2, from_state="up", to_state="drain", reason="answered 503: quiesced, draining")
    event("uag/u1", at=3, from_state="down", to_state="up", reason="2 good checks in a row")
    page = admin_client.get(reverse("monitoring:events")).content.decode()
    assert page.index("uag/u1") < page.index("web/s1") < page.index("web/s0")
    assert "answered 503: quiesced, draining" in page
    by_pool = admin_client.get(reverse("monitoring:events"), {"pool": "web"}).content.decode()
    assert "web/s1" in by_pool and "uag/u1" not in by_pool
    by_server = admin_client.get(reverse("monitoring:events"), {"server": "web/s1"})
    assert [e.server_id for e in by_server.context["events"]] == ["web/s1"]


def test_it_pages(admin_client):
    for i in range(60):
        event("web/s0", at=i, reason=f"event {i}")
    first = admin_client.get(reverse("monitoring:events"), {"pool": "web"})
    assert len(first.context["events"]) == 50 and first.context["page_obj"].has_next()
    assert "pool=web&amp;page=2" in first.content.decode()
    second = admin_client.get(reverse("monitoring:events"), {"pool": "web", "page": 2})
    assert [e.reason for e in second.context["events"]] == [f"event {i}" for i in range(9, -1, -1)]


def test_the_pool_panel_shows_state_latency_error_staleness_and_events(redis_client, keys, clean):
    check = HealthCheck(type="https", interval=2.0, rise=2, fall=1)
    publish(redis_client, keys, pool("web", {"fresh": 1, "dead": 2, "old": 3, "new": 4}, check))
    current = published.load(redis_client, keys)
    now = time.time()
    records.record_results(redis_client, keys, current, {
        "web/fresh": (CheckResult("up", 200, 12.5), now - 1),
        "web/dead": (CheckResult("fail", error="no answer within 2 s (waiting for the response)"), now - 1),
        "web/old": (CheckResult("up", 200, 3.0), now - 150),
    })
    event("web/dead", to_state="down", reason="1 failed check in a row: no answer")
    html = render_panel("web")
    row = {name: _row(html, f"web/{name}") for name in ("fresh", "dead", "old", "new")}
    assert ">up<" in row["fresh"] and "12.5 ms" in row["fresh"] and "stale" not in row["fresh"]
    assert ">down<" in row["dead"] and "no answer within 2 s (waiting for the response)" in row["dead"]
    assert "stale (last check 2 min ago)" in row["old"] and "last known: up" in row["old"]
    assert "stale (no check result yet)" in row["new"]
    assert "1 failed check in a row: no answer" in html
    assert "HTTPS check GET /favicon.ico" in html


def test_the_panel_of_an_unpublished_or_unchecked_pool(redis_client, keys, clean):
    assert "not in the running configuration yet" in render_panel("web")
    publish(redis_client, keys, pool("plain", {"a": 1}, None, admin={"a": "drain"}))
    records.reconcile(redis_client, keys, published.load(redis_client, keys))
    html = render_panel("plain")
    assert "No health check" in html and ">drain<" in html and "not checked" in html and "stale" not in html


@pytest.mark.parametrize("interval, age, stale", [(1, 9, False), (1, 11, True), (30, 80, False), (30, 91, True)])
def test_stale_means_older_than_three_intervals_and_at_least_ten_seconds(interval, age, stale):
    record = {"checked": True, "checked_at": 1000.0, "interval": interval}
    assert services.is_stale(record, 1000.0 + age) is stale


def _row(html, server_id):
    start = html.index(f'data-server="{server_id}"')
    return html[start : html.index("</tr>", start)]


def test_the_pool_page_shows_the_health_panel(admin_client, redis_client, keys, clean):
    from balancer.models import Pool

    web = Pool.objects.create(name="web")
    publish(redis_client, keys, pool("web", {"cs1": 1}, HealthCheck(type="https")))
    current = published.load(redis_client, keys)
    records.record_results(redis_client, keys, current, {"web/cs1": (CheckResult("drain", 503, 7.25), time.time())})
    event("web/cs1", from_state="up", to_state="drain", reason="answered 503: quiesced, draining")
    page = admin_client.get(web.get_absolute_url()).content.decode()
    panel = page[page.index('class="pool-health"'):]
    assert ">drain<" in _row(panel, "web/cs1") and "7.3 ms" in _row(panel, "web/cs1")
    assert "answered 503: quiesced, draining" in panel
