"""The dashboard pages as rendered by the server (what a browser without JavaScript gets), over worker
state written into Redis in the workers' own formats."""
import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from balancer.models import Pool, RealServer

from . import livedata

pytestmark = pytest.mark.django_db

PAGES = ["live:live_overview", "live:live_sessions", "live:live_drain_list", "live:live_health"]


def rows(html, table_id):
    table = html[html.index(f'id="{table_id}"'):]
    table = table[:table.index("</table>")]
    return re.findall(r"<tr data-[^>]*>.*?</tr>", table, re.S)


@pytest.mark.parametrize("name", PAGES)
def test_it_needs_a_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_home_is_the_overview(admin):
    assert admin.get("/").url == reverse("live:live_overview")


def test_the_overview_shows_vips_servers_counts_and_flags_an_old_or_late_worker(admin, redis_client, keys):
    livedata.publish(redis_client, keys, livedata.snapshot(version=3))
    livedata.heartbeat(redis_client, keys, "w1", 3, active=2)
    livedata.heartbeat(redis_client, keys, "w2", 2, age=7, listens=())
    livedata.add_sessions(redis_client, keys, "w1", [livedata.session("w1", 1), livedata.session("w1", 2)])
    livedata.add_persistence(redis_client, keys, "web", {"10.1.0.2": "10.0.0.1", "10.1.0.3": "10.0.0.1",
                                                         "10.1.0.4": "10.0.0.2"})
    html = admin.get(reverse("live:live_overview")).content.decode()
    card = html[html.index('data-vs="web-443"'):html.index('data-vs="plain-80"')]
    assert re.search(r'data-field="active">2<', card)
    assert "listening on 1/2 workers" in card
    s1 = card[card.index('data-server="web/s1"'):]
    assert re.search(r'data-field="sessions">2<', s1[:s1.index("</tr>")])
    assert re.search(r'data-field="sticky">2<', s1[:s1.index("</tr>")])
    workers = {re.search(r'data-worker="(\w+)"', r).group(1): r for r in rows(html, "workers")}
    assert 'class="behind late"' in workers["w2"] and "old version: running is 3" in workers["w2"]
    assert "behind" not in workers["w1"] and "late" not in workers["w1"]
    assert "version 3" in html and "3</strong> persistence entries" in html


def test_the_overview_before_anything_is_published(admin, keys):
    html = admin.get(reverse("live:live_overview")).content.decode()
    assert "Nothing is published yet" in html and "No proxy worker has sent a heartbeat" in html


def all_rows(client, params):
    """Every row of a filtered table, following "next page" / "continue scanning" links; and the page count."""
    url, params, found, pages = reverse("live:live_sessions"), dict(params), [], 0
    while True:
        table = client.get(url, params).context["table"]
        pages += 1
        assert len(table.rows) <= 50
        found += table.rows
        if not table.page.next_token:
            return found, pages
        params["after"] = table.page.next_token


def test_live_connections_page_through_every_row_once_and_filter(admin, redis_client, keys):
    livedata.publish(redis_client, keys, livedata.snapshot())
    for worker in ("w1", "w2"):
        livedata.add_sessions(redis_client, keys, worker, [
            livedata.session(worker, n, server="web/s1" if n % 3 else "web/s2") for n in range(70)])
    livedata.add_persistence(redis_client, keys, "web", {"10.1.0.1": "10.0.0.2"}, ttl=3000)
    everything, pages = all_rows(admin, {})
    assert len(everything) == 140 and len({r["id"] for r in everything}) == 140 and pages >= 3
    first = admin.get(reverse("live:live_sessions")).content.decode()
    assert "140</strong> live connections" in first and 'rel="next"' in first
    row = next(r for r in rows(first, "connections") if 'data-id="w1:0"' in r or 'data-id="w2:0"' in r)
    assert "10.1.0.1" in row and ">50 min<" in row  # persistence left, read from the entry's TTL
    only_s2, _ = all_rows(admin, {"server": "web/s2"})
    assert len(only_s2) == 48 and {r["server"] for r in only_s2} == {"web/s2"}
    by_client, _ = all_rows(admin, {"client": "10.1.0.1"})
    assert sorted({r["client_key"] for r in by_client}) == ["10.1.0.1"] + [f"10.1.0.1{i}" for i in range(10)]
    assert all_rows(admin, {"vs": "plain-80"})[0] == []


def test_the_persistence_table_filters_by_vip_server_and_client(admin, redis_client, keys):
    livedata.publish(redis_client, keys, livedata.snapshot())
    livedata.add_persistence(redis_client, keys, "web", {f"10.2.0.{i}": f"10.0.0.{1 + i % 2}" for i in range(1, 31)})
    livedata.add_persistence(redis_client, keys, "other", {"10.2.0.1": "10.0.0.9"})
    url = reverse("live:live_sessions")
    assert len(all_rows(admin, {"table": "persistence"})[0]) == 31
    on_s1, _ = all_rows(admin, {"table": "persistence", "server": "web/s1"})
    assert len(on_s1) == 15 and {r["host"] for r in on_s1} == {"10.0.0.1"} and on_s1[0]["servers"] == ["web/s1"]
    of_vip, _ = all_rows(admin, {"table": "persistence", "vs": "web-443", "client": "10.2.0.1"})
    assert sorted(r["client_key"] for r in of_vip) == sorted(["10.2.0.1"] + [f"10.2.0.{i}" for i in range(10, 20)])
    assert all(r["group"] == "web" and r["vips"] == ["web-443"] and 5390 <= r["ttl"] <= 5400 for r in of_vip)
    html = admin.get(url, {"table": "persistence", "client": "10.2.0.2"}).content.decode()
    assert "1 h 29 min" in html or "1 h 30 min" in html


@pytest.mark.parametrize("params, error", [
    ({"vs": "no-such-vip"}, "Select a valid choice"),
    ({"client": "10.1 .2"}, "without spaces"),
    ({"after": "not-a-token!"}, "this page link is not valid"),
    ({"table": "nonsense"}, "Select a valid choice"),
])
def test_a_bad_filter_says_what_is_wrong_and_keeps_the_input(admin, redis_client, keys, params, error):
    livedata.publish(redis_client, keys, livedata.snapshot())
    response = admin.get(reverse("live:live_sessions"), params)
    html = response.content.decode()
    assert response.status_code == 200 and "The filter was not applied" in html and error in html
    assert response.context["table"] is None
    if "client" in params:
        assert 'value="10.1 .2"' in html


def test_the_drain_page_offers_the_buttons_to_operators_only(client, django_user_model, redis_client, keys):
    pool = Pool.objects.create(name="web")
    server = RealServer.objects.create(pool=pool, name="s1", address="10.0.0.1", port=443)
    livedata.publish(redis_client, keys, livedata.snapshot())
    livedata.heartbeat(redis_client, keys, "w1", 3)
    livedata.add_sessions(redis_client, keys, "w1", [livedata.session("w1", 1)])
    url = reverse("live:live_drain", args=[server.pk])
    for name, role, buttons in (("oscar", "operator", True), ("vera", "viewer", False)):
        user = django_user_model.objects.create_user(name, password="long-enough-password")
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        client.force_login(user)
        html = client.get(url).content.decode()
        assert ("Drain now" in html) is buttons
        assert 'data-level="serving"' in html and "10.1.0.2:40001" in html  # the connection still open
    redis_client.hset(keys.admin, "web/s1", "drain")
    livedata.heartbeat(redis_client, keys, "w1", 3, servers={"web/s1": "drain", "web/s2": "up"})
    html = client.get(url).content.decode()
    assert 'data-level="draining"' in html and "1 live connection remain" in html
    assert "web/s1" in client.get(reverse("live:live_drain_list")).content.decode()
    assert client.get(reverse("live:live_drain", args=[server.pk + 100])).status_code == 404


def test_the_health_page_lists_servers_and_events(admin, redis_client, keys):
    from datetime import UTC, datetime

    from monitoring.models import HealthEvent

    livedata.publish(redis_client, keys, livedata.snapshot())
    HealthEvent.objects.create(server_id="web/s2", pool="web", server_name="s2", from_state="up", to_state="down",
                               reason="3 failed checks in a row: connection refused", at=datetime.now(UTC))
    html = admin.get(reverse("live:live_health")).content.decode()
    assert [re.search(r'data-server="([^"]+)"', r).group(1) for r in rows(html, "health-servers")] == \
        ["web/s1", "web/s2"]
    assert "no check yet" in html and "3 failed checks in a row: connection refused" in html
    assert reverse("monitoring:events") in html


@pytest.mark.parametrize("name", PAGES)
def test_without_redis_a_page_says_so(admin, settings, name):
    from tests.conftest import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    response = admin.get(reverse(name))
    assert response.status_code == 503
    assert f"Redis at {settings.REDIS_URL} did not answer" in response.content.decode()
