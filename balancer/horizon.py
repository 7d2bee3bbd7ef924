"""What Horizon needs from timeouts (see shared/HORIZON.md).

Short timeouts are allowed (a lab may want them) but the console warns, naming
the reason, because they silently break tunnels in production.
"""

KB_1032661_MINIMUM = 300  # View 4/5: keep-alives every 3-4 minutes, so at least 5 minutes
HORIZON8_MINIMUM = 5400  # Horizon 8: 30-minute heartbeat, three misses end the session


def timeout_warnings(label: str, seconds: float) -> list[str]:
    if seconds < KB_1032661_MINIMUM:
        return [
            f"{label} of {seconds:g} s is under 5 minutes: Horizon tunnels will drop "
            "(VMware KB 1032661: clients send keep-alives only every 3-4 minutes). "
            f"Use at least {KB_1032661_MINIMUM} s; {HORIZON8_MINIMUM} s for Horizon 8."
        ]
    if seconds < HORIZON8_MINIMUM:
        return [
            f"{label} of {seconds:g} s is under 90 minutes: Horizon 8 clients send a heartbeat "
            "every 30 minutes and end the session after three misses (KB 56636), "
            f"so use about {HORIZON8_MINIMUM} s."
        ]
    return []
