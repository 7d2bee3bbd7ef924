"""Messages the checker sends to the Channels group `health` (one schema, sender and receivers)."""
from typing import Literal, TypedDict

HEALTH_GROUP = "health"

HealthEventMessage = TypedDict(
    "HealthEventMessage",
    {
        "type": Literal["health.event"],  # the consumer's handler: health_event()
        "server": str,  # snapshot id "<pool>/<server>"
        "pool": str,
        "name": str,
        "from": str,
        "to": str,
        "reason": str,
        "latency_ms": float | None,
        "at": str,  # ISO 8601, UTC
    },
)
