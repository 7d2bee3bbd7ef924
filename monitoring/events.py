"""Health events: store each transition and tell the live dashboards."""
from __future__ import annotations

import logging
from datetime import UTC, datetime

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .messages import HEALTH_GROUP, HealthEventMessage
from .models import HealthEvent
from .records import Transition

log = logging.getLogger(__name__)


def save_and_announce(transitions: list[Transition]) -> list[HealthEvent]:
    if not transitions:
        return []
    for t in transitions:
        log.info("health %s: %s -> %s (%s)", t.server_id, t.from_state, t.to_state, t.reason)
    events = [_event(t) for t in transitions]
    try:
        HealthEvent.objects.bulk_create(events)
    except Exception:  # Redis already holds the new states; still tell the dashboards
        log.exception("could not store %d health events", len(events))
    announce([message(e) for e in events])
    return events


def message(event: HealthEvent) -> HealthEventMessage:
    return {
        "type": "health.event",
        "server": event.server_id,
        "pool": event.pool,
        "name": event.server_name,
        "from": event.from_state,
        "to": event.to_state,
        "reason": event.reason,
        "latency_ms": event.latency_ms,
        "at": event.at.isoformat(),
    }


def announce(messages: list[HealthEventMessage]) -> None:
    """Best effort: a dashboard that misses a message still finds the event in the database."""
    layer = get_channel_layer()
    if layer is None or not messages:
        return

    async def send_all():
        for msg in messages:
            await layer.group_send(HEALTH_GROUP, msg)

    try:
        async_to_sync(send_all)()
    except Exception:  # the channel layer is a convenience, never a reason to lose a check
        log.exception("could not send %d health events to the Channels group", len(messages))


def _event(t: Transition) -> HealthEvent:
    return HealthEvent(
        server_id=t.server_id,
        pool=t.pool,
        server_name=t.name,
        from_state=t.from_state,
        to_state=t.to_state,
        reason=t.reason[:300],
        latency_ms=t.latency_ms,
        at=datetime.fromtimestamp(t.at, UTC),
    )
