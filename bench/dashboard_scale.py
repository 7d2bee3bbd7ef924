"""How long the sticky-sessions and overview pages take with 100,000 entries.

    .venv/bin/python bench/dashboard_scale.py [--entries 100000]

Fills a private Redis prefix with N persistence entries and N live connections
(two workers), in the formats the workers write, then times what each page
does to build itself (best of 3, so a busy neighbour on the machine is not
counted) and removes the data. Target: every page under 1 s.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "viewlb_site.settings")

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402

from monitoring.live import horizon, overview, sources, tables  # noqa: E402
from proxyworker.config import Keys  # noqa: E402
from tests.dashboards import livedata  # noqa: E402

RARE = "10.99.99.99"
FILTERS = [
    ("connections", {}),
    ("connections", {"server": "web/s2"}),
    ("connections", {"vs": "web-443", "client": "10.1.3."}),
    ("connections", {"client": RARE}),
    ("persistence", {}),
    ("persistence", {"server": "web/s1"}),
    ("persistence", {"client": RARE}),
]


def fill(client, keys, n):
    snapshot = livedata.snapshot()
    livedata.publish(client, keys, snapshot)
    for w, worker in enumerate(("w1", "w2")):
        sessions = [livedata.session(worker, i, server="web/s1" if i % 2 else "web/s2") for i in range(n // 2)]
        if w == 1:
            sessions[n // 3 % len(sessions)] = livedata.session(worker, n // 3, server="web/s2", client_ip=RARE)
        livedata.add_sessions(client, keys, worker, sessions)
        livedata.heartbeat(client, keys, worker, 3)
    entries = {f"10.{i // 65536}.{i // 256 % 256}.{i % 256}": f"10.0.0.{1 + i % 2}" for i in range(n - 1)}
    entries[RARE] = "10.0.0.2"
    livedata.add_persistence(client, keys, "web", entries)
    return snapshot


def best_of(fn, tries=3):
    best = None
    for _ in range(tries):
        started = time.perf_counter()
        result = fn()
        took = time.perf_counter() - started
        best = took if best is None else min(best, took)
    return best, result


def page_until_found(client, keys, snapshot, kind, flt):
    """A whole filtered search: first page plus every 'continue scanning' until the scan ends."""
    read = tables.persistence if kind == "persistence" else tables.connections
    token, requests, worst = None, 0, 0.0
    while True:
        started = time.perf_counter()
        table = read(client, keys, snapshot, flt, token)
        worst = max(worst, time.perf_counter() - started)
        requests += 1
        token = table.page.next_token
        if not token or (flt.client != RARE):
            return worst, requests, len(table.rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args(argv)
    keys = Keys(f"viewlbbench{uuid.uuid4().hex[:6]}")
    settings.VIEWLB_REDIS_PREFIX = keys.prefix
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    try:
        started = time.perf_counter()
        snapshot = fill(client, keys, args.entries)
        print(f"filled {args.entries} connections + {args.entries} persistence entries "
              f"in {time.perf_counter() - started:.1f} s")
        print(f"{'page':<13} {'filter':<36} {'slowest request':>16} {'requests':>9} {'rows':>5}")
        for kind, params in FILTERS:
            flt = sources.Filter.resolve(snapshot, **params)
            _took, (worst, requests, rows) = best_of(
                lambda kind=kind, flt=flt: page_until_found(client, keys, snapshot, kind, flt))
            print(f"{kind:<13} {str(params) or '-':<36} {worst * 1000:>13.0f} ms {requests:>9} {rows:>5}")
        first, _ = best_of(lambda: overview.build(client, keys), tries=1)
        again, _ = best_of(lambda: overview.build(client, keys))
        print(f"{'overview':<13} {'first (counts whole tables)':<36} {first * 1000:>13.0f} ms")
        print(f"{'overview':<13} {'again (counts cached)':<36} {again * 1000:>13.0f} ms")
        grouping, agg = best_of(lambda: horizon.scan(client, keys))
        print(f"{'horizon':<13} {'grouping pass (whole table, uncached)':<36} {grouping * 1000:>13.0f} ms "
              f"{'':>9} {len(agg.rows):>5} sessions")
        for name, flt in (("page 1 of the grouped rows", horizon.HorizonFilter()),
                          ("one client among all", horizon.HorizonFilter(client=RARE))):
            took, result = best_of(lambda flt=flt: horizon.page(agg, flt))
            print(f"{'horizon':<13} {name:<36} {took * 1000:>13.0f} ms {1:>9} {len(result.rows):>5}")
    finally:
        livedata.remove(client, keys)


if __name__ == "__main__":
    main()
