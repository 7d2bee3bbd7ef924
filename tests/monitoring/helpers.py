"""Publishing test snapshots the way the control plane does: JSON under Keys.config."""
import json
import time

import pytest

from proxyworker.config import HealthCheck, Pool, RealServer, Snapshot

# Tests with a real Celery worker need committed data, so they are transactional; a
# transactional test ends with a flush that also empties what data migrations created
# (the console's role groups). `serialized_rollback` keeps that flush from re-creating
# content types under new ids, and the `restore_migrated_data` fixture puts the migrated
# rows back when the module is done, so that later tests in the same process find them.
TRANSACTIONAL = pytest.mark.django_db(transaction=True, serialized_rollback=True)

_version = [0]


def pool(name, ports, check: HealthCheck | None = None, admin=None, address="127.0.0.1"):
    """A pool of servers s0, s1, ... on `ports` (a dict name -> port is also accepted)."""
    named = ports if isinstance(ports, dict) else {f"s{i}": p for i, p in enumerate(ports)}
    admin = admin or {}
    servers = tuple(
        RealServer(id=f"{name}/{server}", name=server, address=address, port=port,
                   admin_state=admin.get(server, "enabled"))
        for server, port in named.items()
    )
    return Pool(name=name, servers=servers, health_check=check)


def publish(client, keys, *pools) -> Snapshot:
    _version[0] += 1
    snapshot = Snapshot(version=_version[0], pools=tuple(pools), published_at=str(time.time()))
    client.set(keys.config, snapshot.to_json())
    client.publish(keys.config, snapshot.version)
    return snapshot


def detail(client, keys, server_id) -> dict | None:
    raw = client.hget(keys.health_detail, server_id)
    return json.loads(raw) if raw else None


def wait_for(condition, timeout=10.0, interval=0.02):
    """Poll until condition() is truthy; return its value, or fail with the time waited."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
