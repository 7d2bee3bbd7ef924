"""The sticky-sessions page with 100,000 persistence entries and 100,000 live connections.

A page scans only until it has its rows (or its scan budget is spent, then it offers "continue
scanning") instead of reading whole tables: these tests check that behaviour at full size. How long a
page takes is measured by bench/dashboard_scale.py, not asserted here (timings on a shared 2-core CI
machine are not test results).
"""
import uuid

import pytest
from django.urls import reverse

from proxyworker.config import Keys
from tests.conftest import PREFIX

from . import livedata

pytestmark = pytest.mark.django_db

N = 100_000
RARE = "10.99.99.99"  # one client among 100,000


@pytest.fixture(scope="module")
def big(redis_client_module):
    keys = Keys(f"{PREFIX}big{uuid.uuid4().hex[:6]}")
    client = redis_client_module
    livedata.publish(client, keys, livedata.snapshot())
    for w, worker in enumerate(("w1", "w2")):
        sessions = [livedata.session(worker, n, server="web/s1" if n % 2 else "web/s2") for n in range(N // 2)]
        if w == 1:
            sessions[N // 3] = livedata.session(worker, N // 3, server="web/s2", client_ip=RARE)
        livedata.add_sessions(client, keys, worker, sessions)
        livedata.heartbeat(client, keys, worker, 3)
    entries = {f"10.{n // 65536}.{n // 256 % 256}.{n % 256}": f"10.0.0.{1 + n % 2}" for n in range(N - 1)}
    entries[RARE] = "10.0.0.2"
    livedata.add_persistence(client, keys, "web", entries)
    yield keys
    livedata.remove(client, keys)


@pytest.fixture(scope="module")
def redis_client_module():
    import redis

    from tests.conftest import REDIS_URL

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def admin(client, django_user_model, settings, big):
    settings.VIEWLB_REDIS_PREFIX = big.prefix
    client.force_login(django_user_model.objects.create_superuser("root", password=None))
    return client


def get_table(client, params):
    response = client.get(reverse("live:live_sessions"), params)
    assert response.status_code == 200 and response.context["table"] is not None
    return response.context["table"]


@pytest.mark.parametrize("params, rows", [
    ({}, 50),
    ({"server": "web/s2"}, 50),
    ({"vs": "web-443", "client": "10.1.3."}, 50),
    ({"table": "persistence"}, 50),
    ({"table": "persistence", "server": "web/s1"}, 50),
    ({"table": "persistence", "vs": "web-443", "client": "10.1.3."}, 50),
])
def test_a_page_of_a_full_table_has_its_rows_and_a_way_on(admin, params, rows):
    table = get_table(admin, params)
    assert len(table.rows) == rows and table.page.next_token


@pytest.mark.parametrize("table_name", ["connections", "persistence"])
def test_a_single_client_among_100000_is_found_by_continuing_the_scan(admin, table_name):
    params, found = {"table": table_name, "client": RARE}, []
    for _request in range(200):  # bounded: a scan that never ends is a failure
        table = get_table(admin, params)
        found += table.rows
        if not table.page.next_token:
            break
        params["after"] = table.page.next_token  # "continue scanning" after a spent scan budget
    else:
        pytest.fail("the scan did not finish")
    assert [r["client_key"] for r in found] == [RARE]


def test_the_overview_counts_whole_tables(admin, big):
    html = admin.get(reverse("live:live_overview")).content.decode()
    assert f"{N}</strong> live connections" in html and f"{N}</strong> persistence entries" in html


def test_the_horizon_sessions_page_groups_100000_connections_and_finds_one_client(admin):
    """One pass over both workers' hashes (cached), then pages and filters in memory. The fixture's clients
    repeat on the two workers (the same n on w1 and w2), so every row but RARE's holds two connections."""
    page = admin.get(reverse("live:live_horizon_sessions")).context["table"]
    assert page.connections == N and len(page.rows) == 50 and page.pages > 1
    assert page.rows[0]["connections"] == 2
    rare = admin.get(reverse("live:live_horizon_sessions"), {"client": RARE}).context["table"]
    assert [r["client_key"] for r in rare.rows] == [RARE] and rare.rows[0]["connections"] == 1
