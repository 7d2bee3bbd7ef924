"""What a consumer keeps between two flushes to its browser: merged, filtered and capped.

Workers send one batch per group per 250 ms each; with many workers and a
connection storm that is still far more than a browser should render. A
consumer merges everything that arrived into one of these buffers and sends
it at most once per flush interval, with a bounded size: a storm changes the
counts, not the number or the size of the messages. Pure code.
"""
from __future__ import annotations

from proxyworker.messages import SessionsBatch

from .sources import Filter

OPENED_CAP = 50  # new rows a sessions page may get per flush (one page)
WATCH_CAP = 500  # rows a browser may ask to follow
EVENTS_CAP = 100  # health events per flush


class SessionsBuffer:
    """Connections opened (matching the page's filter) and closed (rows the page shows) since the last flush."""

    def __init__(self, flt: Filter | None = None):
        self.filter = flt or Filter()
        self.watched: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        self.opened: dict[str, dict] = {}
        self.closed: dict[str, dict] = {}
        self.opened_count = 0
        self.closed_count = 0
        self.skipped = 0  # matching connections left out by the cap
        self.dropped = 0  # left out by the workers' own per-batch cap

    def watch(self, ids) -> None:
        self.watched = set(list(ids)[:WATCH_CAP])

    def add(self, batch: SessionsBatch) -> None:
        for session in batch.get("opened", ()):
            self.opened_count += 1
            if not self.filter.matches_session(session):
                continue
            if len(self.opened) < OPENED_CAP:
                self.opened[session["id"]] = session
            else:
                self.skipped += 1
        for closed in batch.get("closed", ()):
            self.closed_count += 1
            if self.opened.pop(closed["id"], None) is not None:
                continue  # opened and closed within one flush: the page never needs to see it
            if closed["id"] in self.watched:
                self.closed[closed["id"]] = closed
        self.dropped += batch.get("dropped", 0)

    @property
    def empty(self) -> bool:
        return not (self.opened_count or self.closed_count or self.dropped)

    def take(self) -> dict:
        """The merged delta, and an empty buffer for the next interval."""
        delta = {
            "opened": list(self.opened.values()),
            "closed": list(self.closed.values()),
            "opened_count": self.opened_count,
            "closed_count": self.closed_count,
            "skipped": self.skipped + self.dropped,
        }
        self._reset()
        return delta


class EventsBuffer:
    """Health events since the last flush, newest last; a flood keeps the newest and counts the rest."""

    def __init__(self, cap: int = EVENTS_CAP):
        self.cap = cap
        self.events: list[dict] = []
        self.skipped = 0

    def add(self, event: dict) -> None:
        self.events.append(event)
        if len(self.events) > self.cap:
            del self.events[0]
            self.skipped += 1

    def take(self) -> tuple[list[dict], int]:
        events, skipped = self.events, self.skipped
        self.events, self.skipped = [], 0
        return events, skipped
