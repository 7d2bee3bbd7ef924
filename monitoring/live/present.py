"""Numbers as people read them, and table rows as the pages show them.

static/js/live.js has the same formatting for the rows it adds or updates
live; keep the two in step.
"""
from __future__ import annotations


def duration(seconds: float | None) -> str:
    """45 -> "45 s", 750 -> "12 min", 11100 -> "3 h 5 min", 190000 -> "2 d 4 h"."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def size(n: int | float | None) -> str:
    """Bytes: 512 -> "512 B", 1536 -> "1.5 kB", 3_400_000 -> "3.4 MB"."""
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return ""  # unreachable


def rate(n: float | None, unit: str = "B") -> str:
    if n is None:
        return "—"
    return size(n) + "/s" if unit == "B" else f"{n:.1f}/s"


def connection_row(session: dict, now: float, persist: dict | None, group: str | None) -> dict:
    """A live connection with its derived columns; `group` is its VIP's persistence group (None: no
    persistence) and `persist` its entry there ({host, ttl}), if any."""
    opened, active = session.get("opened_at"), session.get("active_at")
    ttl = persist.get("ttl") if persist else None
    return {
        **session,
        "age": duration(now - opened if opened else None),
        "idle": duration(now - active if active else None),
        "bytes_in_text": size(session.get("bytes_in", 0)),
        "bytes_out_text": size(session.get("bytes_out", 0)),
        "ttl": ttl,
        "group": group or "",
        "ttl_text": duration(ttl) if ttl is not None else ("expired" if group else "no persistence"),
        "worker": session.get("id", "").rpartition(":")[0],
    }


def persistence_row(row: dict, servers_by_host: dict[str, list[str]], vips_by_group: dict[str, list[str]]) -> dict:
    return {
        **row,
        "servers": servers_by_host.get(row["host"], []),
        "vips": vips_by_group.get(row["group"], []),
        "ttl_text": duration(row.get("ttl")),
    }
