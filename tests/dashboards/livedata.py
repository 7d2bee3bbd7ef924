"""Worker state written straight into Redis, in exactly the formats the workers write (compact JSON),
under a prefix of the test's own: for page tests and for the 100,000-entry measurement."""
from __future__ import annotations

import json
import time

import redis

from proxyworker.config import Keys, Persistence, Pool, RealServer, Snapshot, VirtualService


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def snapshot(version=3) -> Snapshot:
    """VIP web-443 (pool web: s1 on 10.0.0.1, s2 on 10.0.0.2) with source-IP persistence in group web."""
    servers = (RealServer(id="web/s1", name="s1", address="10.0.0.1", port=443),
               RealServer(id="web/s2", name="s2", address="10.0.0.2", port=443))
    vs = VirtualService(name="web-443", address="127.0.0.1", port=8443, pool="web", persistence_group="web",
                        persistence=Persistence(method="source_ip", timeout=5400))
    plain = VirtualService(name="plain-80", address="127.0.0.1", port=8080, pool="web")
    return Snapshot(version=version, virtual_services=(vs, plain), pools=(Pool(name="web", servers=servers),))


def publish(client: redis.Redis, keys: Keys, snap: Snapshot) -> None:
    client.set(keys.config, snap.to_json())


def heartbeat(client: redis.Redis, keys: Keys, worker_id: str, version: int, age=0.0, active=0, listens=("web-443",),
              servers=None) -> None:
    beat = {"id": worker_id, "host": "lb1", "pid": 4242, "started_at": time.time() - 60, "at": time.time() - age,
            "config_version": version,
            "listeners": [{"vs": vs, "address": "127.0.0.1", "port": 8443, "protocol": "tcp", "mode": "l4"}
                          for vs in listens],
            "servers": servers or {"web/s1": "up", "web/s2": "up"},
            "counters": {"active": active}, "redis": True}
    client.set(keys.worker(worker_id), compact(beat), ex=60)


def session(worker_id: str, n: int, server="web/s1", vs="web-443", client_ip=None, opened_ago=30.0,
            port=8443, protocol="tcp", group=None, server_port=443) -> dict:
    """A live connection as a worker stores it; `group` is left out unless given (workers before issue 7)."""
    ip = client_ip or f"10.1.{n // 250 % 250}.{n % 250 + 1}"
    now = time.time()
    stored = {"id": f"{worker_id}:{n}", "vs": vs, "port": port, "protocol": protocol,
              "client": f"{ip}:{40000 + n % 20000}", "client_key": ip, "server": server,
              "server_address": f"10.0.0.{server[-1]}:{server_port}", "opened_at": now - opened_ago,
              "bytes_in": 1000 + n, "bytes_out": 20000 + n, "active_at": now - 2}
    if group is not None:
        stored["group"] = group
    return stored


def horizon_snapshot(version=5, backup_s3=False) -> Snapshot:
    """A UAG pair as Horizon uses it: 443/tcp and Blast 8443/udp in one persistence group "uag" (source IP),
    and a VIP without persistence. s1 on 10.0.0.1, s2 on 10.0.0.2 (s3 on 10.0.0.3, a backup, if asked)."""
    def servers(port):
        found = [RealServer(id=f"uag{port}/s{i}", name=f"s{i}", address=f"10.0.0.{i}", port=port) for i in (1, 2)]
        if backup_s3:
            found.append(RealServer(id=f"uag{port}/s3", name="s3", address="10.0.0.3", port=port, backup=True))
        return tuple(found)

    ip = Persistence(method="source_ip", timeout=5400)
    services = (
        VirtualService(name="uag-443", address="192.0.2.10", port=443, pool="uag443", persistence_group="uag",
                       persistence=ip),
        VirtualService(name="uag-blast-udp", address="192.0.2.10", port=8443, protocol="udp", pool="uag8443",
                       persistence_group="uag", persistence=ip),
        VirtualService(name="plain-80", address="192.0.2.10", port=80, pool="uag443"),
    )
    return Snapshot(version=version, virtual_services=services,
                    pools=(Pool(name="uag443", servers=servers(443)), Pool(name="uag8443", servers=servers(8443))))


def add_sessions(client: redis.Redis, keys: Keys, worker_id: str, sessions: list[dict], chunk=5000) -> None:
    for i in range(0, len(sessions), chunk):
        client.hset(keys.sessions(worker_id), mapping={s["id"]: compact(s) for s in sessions[i:i + chunk]})
    client.expire(keys.sessions(worker_id), 600)


def add_persistence(client: redis.Redis, keys: Keys, group: str, entries: dict[str, str], ttl=5400) -> None:
    pipe = client.pipeline(transaction=False)
    for n, (client_key, host) in enumerate(entries.items(), 1):
        pipe.set(keys.persist(group, client_key), host, ex=ttl)
        if n % 5000 == 0:
            pipe.execute()
    pipe.execute()


def remove(client: redis.Redis, keys: Keys) -> None:
    batch = []
    for name in client.scan_iter(match=keys.prefix + ":*", count=10_000):
        batch.append(name)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)
