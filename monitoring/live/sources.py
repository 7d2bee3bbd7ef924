"""The workers' live state in Redis, read for the dashboards: heartbeats, connections, persistence.

Plan for 100,000 persistence entries and 100,000 live connections. Reading a
whole table costs about half a second (measured here: SCAN + MGET of 100k
persistence keys 0.45 s, HSCAN of 100k sessions 0.5 s), so:

- Pages are cursor-paged. A page resumes Redis' own SCAN / HSCAN cursor and
  stops as soon as it holds `size` rows plus one to prove there is a next page:
  an unfiltered page costs milliseconds whatever the table size. Filters on
  the key (persistence group, client) go into SCAN's MATCH so Redis skips
  other keys itself; filters on values are checked on the raw JSON before
  anything is decoded. A rare filter scans until a time budget, then the page
  offers "continue" from where it stopped. The price: rows come in Redis'
  order, not sorted.
- No index is kept: the writers are the proxy workers, which must not pay for
  the dashboards, and an index written by anyone else would drift from the
  TTL'd keys it describes.
- Whole-table counts (per server, per VIP) use the same incremental scans,
  never KEYS or HGETALL (which would block Redis, and with it the data plane),
  and are cached per process for a second, longer when they are expensive.
"""
from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis

from proxyworker.config import Keys, Snapshot

PAGE_SIZE = 50
BUDGET_SECONDS = 0.5  # a filtered page scans at most this long before offering "continue"
FIRST_COUNT, MAX_COUNT = 200, 5000  # SCAN COUNT hints: small first (one page), doubling while a page fills
AGGREGATE_COUNT = 5000
CACHE_MIN_SECONDS = 1.0
CACHE_COST_FACTOR = 5  # an aggregate that took t seconds is reused for 5 t: at most ~20 % of a thread


# --- filters -----------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """What the sticky-sessions page narrows down to; empty fields match everything.

    `client` is a prefix of the client key or the client address ("10.1.2." or
    "10.1.2.3"). `group` and `host` are derived from the running snapshot: the
    persistence table is keyed by group and stores server *hosts*.
    """

    vs: str = ""
    server: str = ""
    client: str = ""
    group: str = ""
    host: str = ""

    @classmethod
    def resolve(cls, snapshot: Snapshot | None, vs="", server="", client="") -> Filter:
        group = host = ""
        for service in snapshot.virtual_services if snapshot and vs else ():
            if service.name == vs:
                group = service.group
        for candidate in snapshot.servers() if snapshot and server else ():
            if candidate.id == server:
                host = candidate.address
        return cls(vs=vs, server=server, client=client, group=group, host=host)

    @property
    def active(self) -> bool:
        return bool(self.vs or self.server or self.client)

    # -- live connections (JSON from the workers' session hashes) --
    def session_needles(self) -> list[str]:
        """Substrings the worker's compact JSON must contain: a cheap test before json.loads."""
        needles = []
        if self.vs:
            needles.append('"vs":' + json.dumps(self.vs))
        if self.server:
            needles.append('"server":' + json.dumps(self.server))
        if self.client:
            needles.append(json.dumps(self.client)[:-1])  # the opening quote and the prefix
        return needles

    def matches_session(self, session: dict) -> bool:
        if self.vs and session.get("vs") != self.vs:
            return False
        if self.server and session.get("server") != self.server:
            return False
        if self.client:
            key, address = str(session.get("client_key", "")), str(session.get("client", ""))
            return key.startswith(self.client) or address.startswith(self.client)
        return True

    # -- persistence entries (key = group + client key, value = server host) --
    def persist_pattern(self, keys: Keys) -> str:
        group = _glob_escape(self.group) if self.vs else "*"
        client = _glob_escape(self.client) + "*" if self.client else "*"
        return keys.persist_pattern(group)[:-1] + client

    def matches_persist_key(self, group: str, client_key: str) -> bool:
        if self.vs and group != self.group:
            return False
        return not self.client or client_key.startswith(self.client)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


# --- page tokens ---------------------------------------------------------------


class BadToken(ValueError):
    """A "next page" token that this code did not write (edited, truncated or from another version)."""


def encode_token(source: str, cursor: int, count: int, skip: int) -> str:
    raw = json.dumps([source, cursor, count, skip], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[str, int, int, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        source, cursor, count, skip = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise BadToken("this page link is not valid (it may have been cut off)") from exc
    numbers = (cursor, count, skip)
    if not isinstance(source, str) or not all(isinstance(n, int) and n >= 0 for n in numbers):
        raise BadToken("this page link is not valid")
    if not 1 <= count <= MAX_COUNT:
        raise BadToken("this page link is not valid")
    return source, cursor, count, skip


@dataclass
class Page:
    rows: list
    next_token: str | None = None
    examined: int = 0  # entries looked at (after Redis' MATCH)
    budget_hit: bool = False  # stopped by the time budget, not because the page was full


# A source scans one batch: (cursor, count) -> (next cursor, matching items, items looked at).
Scan = Callable[[int, int], tuple[int, list, int]]


def collect(sources: list[tuple[str, Scan]], token: str | None, size: int = PAGE_SIZE,
            budget: float = BUDGET_SECONDS, clock=time.monotonic) -> Page:
    """One page from a sequence of scannable sources (sorted by name), resuming at `token`."""
    start, cursor, count, skip = decode_token(token) if token else ("", 0, FIRST_COUNT, 0)
    deadline = clock() + budget
    page = Page(rows=[])
    for name, scan in sources:
        if name < start:
            continue
        if name != start:
            cursor, count, skip = 0, FIRST_COUNT, 0
        while True:
            next_cursor, matches, looked_at = scan(cursor, count)
            page.examined += looked_at
            fresh = matches[skip:]
            room = size - len(page.rows)
            if len(fresh) > room:  # one row more than fits: there is a next page, and it starts here
                page.rows += fresh[:room]
                page.next_token = encode_token(name, cursor, count, skip + room)
                return page
            page.rows += fresh
            skip = 0
            if next_cursor == 0:
                break
            cursor = next_cursor
            count = min(count * 2, MAX_COUNT)  # fewer round trips the longer a filter has to look
            if clock() > deadline:
                page.budget_hit = True
                page.next_token = encode_token(name, cursor, count, 0)
                return page
    return page


# --- reading -------------------------------------------------------------------


def scan_keys(client: redis.Redis, pattern: str) -> list[str]:
    """All keys matching `pattern`; big COUNT, because the keyspace holds every persistence entry."""
    return list(client.scan_iter(match=pattern, count=10_000))


def workers(client: redis.Redis, keys: Keys) -> list[dict]:
    """The heartbeats of the live workers (a worker that stopped beating expires within 10 s)."""
    names = sorted(scan_keys(client, keys.worker_pattern))
    beats = []
    for raw in client.mget(names) if names else ():
        try:
            beat = json.loads(raw) if raw else None
        except ValueError:
            continue  # a worker writing garbage must not break the page
        if isinstance(beat, dict) and beat.get("id"):
            beats.append(beat)
    return beats


def live_connection_count(client: redis.Redis, keys: Keys) -> int:
    """All live connections: one HLEN per worker, cheap at any size."""
    names = session_workers(client, keys)
    pipe = client.pipeline(transaction=False)
    for worker_id in names:
        pipe.hlen(keys.sessions(worker_id))
    return sum(pipe.execute()) if names else 0


def session_workers(client: redis.Redis, keys: Keys) -> list[str]:
    """Ids of the workers that have a sessions hash, sorted."""
    head = keys.sessions("")
    return sorted(name[len(head):] for name in scan_keys(client, keys.sessions("*")))


def persist_key_parts(keys: Keys, key: str) -> tuple[str, str]:
    """`<prefix>:persist:<group>:<client key>` -> (group, client key); group names have no ':'."""
    head = keys.persist("", "")[:-1]  # "<prefix>:persist:"
    group, _, client_key = key[len(head) :].partition(":")
    return group, client_key


def connections_page(client: redis.Redis, keys: Keys, flt: Filter, token: str | None = None,
                     size: int = PAGE_SIZE, budget: float = BUDGET_SECONDS) -> Page:
    """Live connections (dicts as the workers store them), worker by worker."""
    needles = flt.session_needles()

    def source(worker_id: str) -> Scan:
        name = keys.sessions(worker_id)

        def scan(cursor, count):
            next_cursor, data = client.hscan(name, cursor, count=count)
            rows = []
            for raw in data.values():
                if all(needle in raw for needle in needles):
                    session = _loads(raw)
                    if session is not None and flt.matches_session(session):
                        rows.append(session)
            return next_cursor, rows, len(data)

        return scan

    return collect([(w, source(w)) for w in session_workers(client, keys)], token, size, budget)


def persistence_page(client: redis.Redis, keys: Keys, flt: Filter, token: str | None = None,
                     size: int = PAGE_SIZE, budget: float = BUDGET_SECONDS) -> Page:
    """Persistence entries as dicts {key, group, client_key, host}; `ttl` is added for the page's rows."""
    pattern = flt.persist_pattern(keys)

    def scan(cursor, count):
        next_cursor, names = client.scan(cursor, match=pattern, count=count)
        rows = []
        for name in names:
            group, client_key = persist_key_parts(keys, name)
            if flt.matches_persist_key(group, client_key):
                rows.append({"key": name, "group": group, "client_key": client_key, "host": None})
        if flt.server and rows:
            hosts = client.mget([row["key"] for row in rows])
            for row, host in zip(rows, hosts, strict=True):
                row["host"] = host
            rows = [row for row in rows if row["host"] == flt.host]
        return next_cursor, rows, len(names)

    page = collect([("", scan)], token, size, budget)
    _add_values_and_ttls(client, page.rows)
    page.rows = [row for row in page.rows if row["host"] is not None]  # expired since the scan
    return page


def _add_values_and_ttls(client: redis.Redis, rows: list[dict]) -> None:
    if not rows:
        return
    pipe = client.pipeline(transaction=False)
    for row in rows:
        pipe.get(row["key"])
        pipe.ttl(row["key"])
    answers = pipe.execute()
    for row, host, ttl in zip(rows, answers[::2], answers[1::2], strict=True):
        row["host"], row["ttl"] = host, ttl if ttl is not None and ttl >= 0 else None


def persist_ttls(client: redis.Redis, keys: Keys, pairs: Iterable[tuple[str, str]]) -> dict[tuple, dict | None]:
    """(group, client key) -> {host, ttl} or None when the entry is gone; one pipeline."""
    pairs = list(dict.fromkeys(pairs))
    if not pairs:
        return {}
    pipe = client.pipeline(transaction=False)
    for group, client_key in pairs:
        pipe.get(keys.persist(group, client_key))
        pipe.ttl(keys.persist(group, client_key))
    answers = pipe.execute()
    result = {}
    for pair, host, ttl in zip(pairs, answers[::2], answers[1::2], strict=True):
        result[pair] = {"host": host, "ttl": ttl if ttl is not None and ttl >= 0 else None} if host else None
    return result


def sessions_by_id(client: redis.Redis, keys: Keys, ids: Iterable[str]) -> dict[str, dict | None]:
    """Session id ("<worker>:<n>") -> the stored session, or None when it has closed."""
    by_worker: dict[str, list[str]] = {}
    for session_id in dict.fromkeys(ids):
        worker_id, sep, _ = session_id.rpartition(":")
        if sep and worker_id:
            by_worker.setdefault(worker_id, []).append(session_id)
    if not by_worker:
        return {}
    pipe = client.pipeline(transaction=False)
    for worker_id, wanted in by_worker.items():
        pipe.hmget(keys.sessions(worker_id), wanted)
    result = {}
    for wanted, values in zip(by_worker.values(), pipe.execute(), strict=True):
        for session_id, raw in zip(wanted, values, strict=True):
            result[session_id] = _loads(raw) if raw else None
    return result


def _loads(raw: str) -> dict | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --- whole-table counts ----------------------------------------------------------


@dataclass(frozen=True)
class SessionTotals:
    by_vs: dict[str, int] = field(default_factory=dict)
    by_server: dict[str, int] = field(default_factory=dict)
    total: int = 0


@dataclass(frozen=True)
class PersistTotals:
    by_group_host: dict[tuple[str, str], int] = field(default_factory=dict)
    total: int = 0

    def for_host(self, host: str, group: str | None = None) -> int:
        return sum(n for (g, h), n in self.by_group_host.items() if h == host and (group is None or g == group))


_VS = re.compile(r'"vs":("(?:[^"\\]|\\.)*")')
_SERVER = re.compile(r'"server":("(?:[^"\\]|\\.)*")')


def _string_field(pattern: re.Pattern, raw: str) -> str | None:
    match = pattern.search(raw)
    if not match:
        return None
    text = match.group(1)
    return json.loads(text) if "\\" in text else text[1:-1]


def count_sessions(client: redis.Redis, keys: Keys) -> SessionTotals:
    """Live connections per VIP and per server over all workers (regex on the JSON: 3x faster than decoding)."""
    by_vs, by_server = Counter(), Counter()
    for worker_id in session_workers(client, keys):
        for _, raw in client.hscan_iter(keys.sessions(worker_id), count=AGGREGATE_COUNT):
            by_vs[_string_field(_VS, raw)] += 1
            by_server[_string_field(_SERVER, raw)] += 1
    by_vs.pop(None, None)
    by_server.pop(None, None)
    return SessionTotals(dict(by_vs), dict(by_server), sum(by_server.values()))


def count_persistence(client: redis.Redis, keys: Keys) -> PersistTotals:
    """Persistence entries per (group, server host)."""
    counts = Counter()
    batch: list[str] = []

    def flush():
        for name, host in zip(batch, client.mget(batch), strict=True):
            if host is not None:
                counts[(persist_key_parts(keys, name)[0], host)] += 1
        batch.clear()

    for name in client.scan_iter(match=keys.persist_pattern(), count=AGGREGATE_COUNT):
        batch.append(name)
        if len(batch) >= AGGREGATE_COUNT:
            flush()
    if batch:
        flush()
    return PersistTotals(dict(counts), sum(counts.values()))


class Cached:
    """A per-process cache of one aggregate per Redis prefix, recomputed by one caller at a time."""

    def __init__(self, compute):
        self.compute = compute
        self.entries: dict[str, tuple[float, object]] = {}
        self.locks: dict[str, threading.Lock] = {}
        self.guard = threading.Lock()

    def __call__(self, client: redis.Redis, keys: Keys):
        with self.guard:
            lock = self.locks.setdefault(keys.prefix, threading.Lock())
        with lock:
            entry = self.entries.get(keys.prefix)
            if entry and time.monotonic() < entry[0]:
                return entry[1]
            started = time.monotonic()
            value = self.compute(client, keys)
            took = time.monotonic() - started
            self.entries[keys.prefix] = (time.monotonic() + max(CACHE_MIN_SECONDS, CACHE_COST_FACTOR * took), value)
            return value

    def peek(self, keys: Keys):
        """The last value computed in this process, however old, without computing one (None if none)."""
        entry = self.entries.get(keys.prefix)
        return entry[1] if entry else None


session_totals = Cached(count_sessions)
persist_totals = Cached(count_persistence)
