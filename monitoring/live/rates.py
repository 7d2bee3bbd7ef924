"""Live numbers from the workers' stats batches: active connections and rates, summed over workers.

Workers send cumulative counters since they started (`proxyworker.messages.StatsBatch`),
at most every 250 ms while they change and every 2 s as a sign of life. A rate
is the difference between two batches of one worker over the time between
them; a VIP's rate is the sum of its workers' latest rates. Pure code: time is
passed in.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from proxyworker.messages import StatsBatch

STALE_SECONDS = 6.0  # three missed "sign of life" batches: the worker is gone (or cut off)
_SERVICE_RATES = ("total", "bytes_in", "bytes_out", "refused")


@dataclass
class _WorkerStats:
    at: float
    services: dict
    servers: dict
    rates: dict[str, dict[str, float]] = field(default_factory=dict)  # vs -> counter -> per second


class StatsTracker:
    def __init__(self, stale_seconds: float = STALE_SECONDS):
        self.stale_seconds = stale_seconds
        self.workers: dict[str, _WorkerStats] = {}

    def add(self, batch: StatsBatch) -> None:
        previous = self.workers.get(batch["worker"])
        current = _WorkerStats(batch["at"], batch["services"], batch["servers"])
        if previous is not None:
            if batch["at"] <= previous.at:
                return  # out of order or repeated: keep the newer one
            current.rates = _rates(previous, current)
        self.workers[batch["worker"]] = current

    def totals(self, now: float) -> dict:
        """{"services": {vs: {active, conn_rate, bytes_in_rate, bytes_out_rate, refused_rate}},
        "servers": {id: {active, failed}}, "workers": [ids], "rates_ready": bool} over the workers heard
        from recently."""
        services: dict[str, dict] = {}
        servers: dict[str, dict] = {}
        live = {wid: w for wid, w in self.workers.items() if now - w.at <= self.stale_seconds}
        for worker in live.values():
            for name, counters in worker.services.items():
                into = services.setdefault(name, {"active": 0, "conn_rate": 0.0, "bytes_in_rate": 0.0,
                                                  "bytes_out_rate": 0.0, "refused_rate": 0.0})
                into["active"] += counters.get("active", 0)
                rates = worker.rates.get(name, {})
                into["conn_rate"] += rates.get("total", 0.0)
                into["bytes_in_rate"] += rates.get("bytes_in", 0.0)
                into["bytes_out_rate"] += rates.get("bytes_out", 0.0)
                into["refused_rate"] += rates.get("refused", 0.0)
            for server_id, counters in worker.servers.items():
                into = servers.setdefault(server_id, {"active": 0, "failed": 0})
                into["active"] += counters.get("active", 0)
                into["failed"] += counters.get("failed", 0)
        for values in services.values():
            for name in ("conn_rate", "bytes_in_rate", "bytes_out_rate", "refused_rate"):
                values[name] = round(values[name], 2)
        # Rates need two batches of a worker; until every live worker sent two, they are too low.
        ready = all(worker.rates or not worker.services for worker in live.values())
        return {"services": services, "servers": servers, "workers": sorted(live), "rates_ready": ready}


def _rates(previous: _WorkerStats, current: _WorkerStats) -> dict[str, dict[str, float]]:
    elapsed = current.at - previous.at
    rates = {}
    for name, counters in current.services.items():
        before = previous.services.get(name, {})
        rates[name] = {}
        for counter in _SERVICE_RATES:
            delta = counters.get(counter, 0) - before.get(counter, 0)
            # A counter that went down means the worker restarted under the same id: no rate for this step.
            rates[name][counter] = delta / elapsed if delta >= 0 else 0.0
    return rates
