"""The sticky-sessions page with 100,000 persistence entries and 100,000 live connections.

Measured, not assumed: every page request must stay under a second, filtered or not, because a page
scans only until it has its rows (or its time budget is spent) instead of reading whole tables.
"""
import time
import uuid

import pytest
from django.urls import reverse

from proxyworker.config import Keys
from tests.conftest import PREFIX

from . import livedata

pytestmark = pytest.mark.django_db

N = 100_000
LIMIT_S = 1.0
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


def timed_get(client, params, tries=3):
    """The page and the best of `tries` timings: the suite runs beside browsers and other tests on two
    cores, and what is measured is the page's own cost, not the neighbours' (a standard benchmark rule)."""
    best = None
    for _ in range(tries):
        started = time.perf_counter()
        response = client.get(reverse("live:live_sessions"), params)
        took = time.perf_counter() - started
        best = took if best is None else min(best, took)
        if best < LIMIT_S / 2:
            break
    assert response.status_code == 200 and response.context["table"] is not None
    return response.context["table"], best


@pytest.mark.parametrize("params, rows", [
    ({}, 50),
    ({"server": "web/s2"}, 50),
    ({"vs": "web-443", "client": "10.1.3."}, 50),
    ({"table": "persistence"}, 50),
    ({"table": "persistence", "server": "web/s1"}, 50),
    ({"table": "persistence", "vs": "web-443", "client": "10.1.3."}, 50),
])
def test_a_page_takes_under_a_second(admin, params, rows):
    table, took = timed_get(admin, params)
    assert len(table.rows) == rows and table.page.next_token
    assert took < LIMIT_S, f"{params}: {took:.2f} s"


@pytest.mark.parametrize("table_name", ["connections", "persistence"])
def test_a_single_client_among_100000_is_found_within_a_second_per_request(admin, table_name):
    params, requests, found = {"table": table_name, "client": RARE}, 0, []
    while True:
        table, took = timed_get(admin, params)
        requests += 1
        assert took < LIMIT_S, f"request {requests}: {took:.2f} s"
        found += table.rows
        if not table.page.next_token:
            break
        params["after"] = table.page.next_token  # "continue scanning" after a spent time budget
    assert [r["client_key"] for r in found] == [RARE] and requests <= 4


def test_whole_table_counts_are_cached_after_the_first_read(admin, big):
    started = time.perf_counter()
    admin.get(reverse("live:live_overview"))
    first = time.perf_counter() - started
    again = LIMIT_S
    for _ in range(3):
        started = time.perf_counter()
        html = admin.get(reverse("live:live_overview")).content.decode()
        again = min(again, time.perf_counter() - started)
    assert f"{N}</strong> live connections" in html and f"{N}</strong> persistence entries" in html
    assert again < LIMIT_S, f"the second overview took {again:.2f} s (first {first:.2f} s)"
