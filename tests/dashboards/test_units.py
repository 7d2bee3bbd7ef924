"""The pure parts of the dashboards: rates, the per-flush buffers, paging, filters, the drain verdict."""
import itertools

import pytest

from monitoring.live import present
from monitoring.live.buffers import OPENED_CAP, EventsBuffer, SessionsBuffer
from monitoring.live.drain import assess
from monitoring.live.rates import StatsTracker
from monitoring.live.sources import BadToken, Filter, collect, decode_token, encode_token
from proxyworker.config import Keys


def stats(worker, at, total=0, bytes_in=0, active=0, servers=None):
    return {"type": "stats.batch", "worker": worker, "at": at, "servers": servers or {},
            "services": {"vip": {"active": active, "total": total, "bytes_in": bytes_in, "bytes_out": 0, "refused": 0}}}


def test_rates_are_per_worker_differences_summed_over_workers():
    t = StatsTracker()
    t.add(stats("a", 100.0, total=10, bytes_in=1000, active=1, servers={"p/s1": {"active": 1, "total": 10, "failed": 0}}))
    t.add(stats("b", 100.5, total=0, active=2, servers={"p/s1": {"active": 2, "total": 0, "failed": 1}}))
    first = t.totals(101.0)
    assert first["services"]["vip"]["conn_rate"] == 0.0 and not first["rates_ready"]  # one batch each: no rate yet
    t.add(stats("a", 102.0, total=30, bytes_in=5000, active=3, servers={"p/s1": {"active": 3, "total": 30, "failed": 0}}))
    t.add(stats("b", 100.75, total=5, active=2, servers={"p/s1": {"active": 0, "total": 5, "failed": 1}}))
    both = t.totals(102.0)
    vip = both["services"]["vip"]
    assert both["rates_ready"] and both["servers"] == {"p/s1": {"active": 3, "failed": 1}}
    assert vip["conn_rate"] == 10.0 + 20.0 and vip["bytes_in_rate"] == 2000.0 and vip["active"] == 5


def test_a_restarted_worker_gives_no_negative_rate_and_a_silent_worker_drops_out():
    t = StatsTracker()
    t.add(stats("a", 100.0, total=500))
    t.add(stats("a", 101.0, total=3))  # restarted under the same id
    assert t.totals(101.0)["services"]["vip"]["conn_rate"] == 0.0
    t.add(stats("a", 100.5, total=999))  # older than what we have: ignored
    assert t.workers["a"].services["vip"]["total"] == 3
    assert t.totals(107.5) == {"services": {}, "servers": {}, "workers": [], "rates_ready": True}


def session(n, server="p/s1", client="10.0.0.1"):
    return {"id": f"w:{n}", "vs": "vip", "server": server, "client": f"{client}:1000", "client_key": client}


def test_the_sessions_buffer_filters_caps_and_counts():
    buffer = SessionsBuffer(Filter(server="p/s1"))
    buffer.watch(["w:900", "w:901"])
    opened = [session(n, server="p/s1" if n % 2 else "p/s2") for n in range(300)]
    closed = [{"id": i, "bytes_in": 1, "bytes_out": 1, "closed_at": 0} for i in ("w:1", "w:900", "w:555")]
    buffer.add({"type": "sessions.batch", "worker": "w", "opened": opened, "closed": closed, "dropped": 7})
    delta = buffer.take()
    assert len(delta["opened"]) == OPENED_CAP - 1  # w:1 opened and closed in the same flush: never shown
    assert all(s["server"] == "p/s1" for s in delta["opened"]) and "w:1" not in {s["id"] for s in delta["opened"]}
    assert [c["id"] for c in delta["closed"]] == ["w:900"]  # only the rows the page shows
    assert (delta["opened_count"], delta["closed_count"]) == (300, 3)
    assert delta["skipped"] == 150 - OPENED_CAP + 7
    assert buffer.empty and buffer.take()["opened_count"] == 0


def test_the_events_buffer_keeps_the_newest():
    buffer = EventsBuffer(cap=3)
    for n in range(5):
        buffer.add({"n": n})
    assert buffer.take() == ([{"n": 2}, {"n": 3}, {"n": 4}], 2)
    assert buffer.take() == ([], 0)


def test_page_tokens_round_trip_and_refuse_anything_else():
    token = encode_token("worker-1", 1234, 400, 7)
    assert decode_token(token) == ("worker-1", 1234, 400, 7)
    for bad in ("", "x", token[:-3] + "AAA", encode_token("w", -1, 200, 0), encode_token("w", 0, 10**6, 0)):
        with pytest.raises(BadToken):
            decode_token(bad or "=")


def fake_sources(sizes, batch=7, keep=lambda item: True):
    """Sources named a, b, ... each with `size` items, scanned `batch` at a time like SCAN (cursor = offset)."""
    def source(name, size):
        items = [f"{name}{i}" for i in range(size)]

        def scan(cursor, count):
            chunk = items[cursor:cursor + batch]
            nxt = cursor + batch if cursor + batch < size else 0
            return nxt, [i for i in chunk if keep(i)], len(chunk)
        return scan
    return [(chr(97 + n), source(chr(97 + n), size)) for n, size in enumerate(sizes)]


@pytest.mark.parametrize("sizes, size", [([23, 0, 18], 5), ([100], 50), ([3, 3, 3], 4), ([0], 10)])
def test_paging_returns_every_item_once_across_batches_and_sources(sizes, size):
    sources, token, seen, pages = fake_sources(sizes), None, [], 0
    while True:
        page = collect(sources, token, size=size)
        pages += 1
        assert len(page.rows) <= size and not page.budget_hit
        seen += page.rows
        token = page.next_token
        if token is None:
            break
    expected = [f"{chr(97 + n)}{i}" for n, s in enumerate(sizes) for i in range(s)]
    assert seen == expected and pages == max(1, -(-len(expected) // size))


def test_a_rare_filter_stops_at_the_time_budget_and_continues_from_there():
    clock = itertools.count(0.0, 0.1).__next__  # every look at the clock: 0.1 s later
    sources = fake_sources([200], keep=lambda item: item == "a190")
    page = collect(sources, None, size=10, budget=0.5, clock=clock)
    assert page.rows == [] and page.budget_hit and page.next_token
    found = []
    while page.next_token:
        page = collect(sources, page.next_token, size=10, budget=0.5, clock=clock)
        found += page.rows
    assert found == ["a190"]


def test_filters_go_into_redis_match_patterns_with_glob_characters_escaped():
    keys = Keys("t")
    assert Filter().persist_pattern(keys) == "t:persist:*:*"
    flt = Filter(vs="web", group="horizon", client="10.1.*[")
    assert flt.persist_pattern(keys) == r"t:persist:horizon:10.1.\*\[*"
    assert flt.matches_persist_key("horizon", "10.1.*[x") and not flt.matches_persist_key("other", "10.1.*[x")
    assert Filter(client="10.1.2.").matches_session({"client_key": "10.1.2.0/24", "client": "10.1.2.9:1"})
    assert Filter(server="p/s1").session_needles() == ['"server":"p/s1"']


def beat(worker, state):
    return {"id": worker, "servers": {"p/s1": state} if state else {}}


@pytest.mark.parametrize("admin, states, sessions, level", [
    ("enabled", ["up", "up"], 4, "serving"),
    ("enabled", [], 0, "serving"),
    ("drain", ["drain", "up"], 4, "pending"),
    ("drain", ["drain", "drain"], 4, "draining"),
    ("drain", ["drain", "drain"], 0, "safe"),
    ("enabled", ["down", "down"], 0, "safe"),  # dead already: nothing to wait for
    ("disabled", ["disabled"], 0, "safe"),
    ("drain", [], 0, "safe"),
    ("drain", [None, None], 0, "unknown"),
])
def test_the_drain_verdict(admin, states, sessions, level):
    verdict = assess("p/s1", admin, [beat(f"w{i}", s) for i, s in enumerate(states)], sessions, sticky=3)
    assert verdict.level == level
    if level == "safe":
        assert verdict.headline.startswith("Safe to take down") and "3 persistence entries still name it" in verdict.detail
    if level == "pending":
        assert verdict.pending == ("w1",)


def test_durations_and_sizes_read_like_the_pages_show_them():
    assert [present.duration(s) for s in (None, 5, 119, 750, 11100, 190000)] == \
        ["—", "5 s", "119 s", "12 min", "3 h 5 min", "2 d 4 h"]
    assert [present.size(n) for n in (0, 999, 1500, 3_400_000, 2e15)] == ["0 B", "999 B", "1.5 kB", "3.4 MB", "2000.0 TB"]
