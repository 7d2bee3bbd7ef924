"""Operators' actions on one Horizon session (group, client key): kill it, or move it off its server.

Both work the way the data plane expects (contract of issue 7): the shared
persistence entry is changed first, then one `session.kill` message on
`Keys.control` makes every worker forget its local copy of the entry and abort
the client's live connections and UDP flows in that group. The client then
reconnects on every port and lands where the entry now says:
- kill: the entry is deleted, so the scheduler picks a server afresh;
- move: the entry names another server host, chosen here, so all of the
  client's ports follow it there (port following).
Every action is audited with who, the group, the client key and the hosts.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis

from balancer.audit import record
from balancer.choices import AuditAction
from proxyworker.config import Keys, RealServer, Snapshot
from proxyworker.messages import ControlMessage
from proxyworker.state import ServerStates

from . import horizon


class ControlError(ValueError):
    """The action was refused; the text says why, for the operator."""


@dataclass(frozen=True)
class Outcome:
    group: str
    client_key: str
    from_host: str | None  # the server host the client was stuck to (None: no entry)
    to_host: str | None  # move: where it goes now
    workers: int  # workers that received the kill message

    def message(self) -> str:
        who = f"{self.client_key} (group {self.group})"
        if self.to_host:
            text = f"Moved {who} from {self.from_host or 'its server'} to {self.to_host}: its connections were closed " \
                   f"and it reconnects to {self.to_host} on every port."
        else:
            text = f"Killed the session of {who}: its connections were closed and its persistence entry removed."
        if not self.workers:
            text += " No proxy worker was listening for the message: connections on a worker that is not running " \
                    "will not be closed."
        return text


def states_from_redis(client: redis.Redis, keys: Keys) -> ServerStates:
    """Server states as the workers see them: health and admin hashes, combined by the workers' own rules."""
    states = ServerStates()
    states.update(client.hgetall(keys.health), client.hgetall(keys.admin))
    return states


def kill_session(client: redis.Redis, keys: Keys, group: str, client_key: str, user) -> Outcome:
    """Delete the persistence entry (group, client key), then tell the workers to close the session."""
    _check(group, client_key)
    # One MULTI: no worker can refresh the entry between the DELETE and the message.
    pipe = client.pipeline(transaction=True)
    pipe.get(keys.persist(group, client_key))
    pipe.delete(keys.persist(group, client_key))
    pipe.publish(keys.control, _kill_message(group, client_key, user))
    from_host, _, workers = pipe.execute()
    # "changes" is what the audit page lists: the host the client was stuck to, and that it is stuck nowhere now.
    record(user, AuditAction.KILL, f"session {group} {client_key}", changes={"server host": [from_host, None]}, group=group,
           client_key=client_key, server=from_host or "", workers=workers)
    return Outcome(group, client_key, from_host, None, workers)


def move_session(client: redis.Redis, keys: Keys, snapshot: Snapshot | None, states: ServerStates, group: str,
                 client_key: str, user) -> Outcome:
    """Point the persistence entry at another server host of the group, then close the client's connections.

    Refuses (ControlError) when the group does not use persistence or no other host can take new clients.
    """
    _check(group, client_key)
    services = [vs for vs in snapshot.virtual_services if vs.group == group] if snapshot else []
    persistent = [vs for vs in services if vs.persistence.method != "none"]
    if not persistent:
        raise ControlError(f"group {group} uses no persistence in the running configuration: a moved client would "
                           "not stay anywhere in particular. Kill the session instead.")
    current = client.get(keys.persist(group, client_key))
    from_hosts = {current} if current else _live_hosts(client, keys, group, client_key)
    target = choose_host(snapshot, states, [vs.pool for vs in services], from_hosts, client, keys)
    if target is None:
        raise ControlError(_no_target_reason(snapshot, states, [vs.pool for vs in services], from_hosts))
    timeout = max(vs.persistence.timeout for vs in persistent)
    pipe = client.pipeline(transaction=True)
    pipe.set(keys.persist(group, client_key), target, ex=timeout)
    pipe.publish(keys.control, _kill_message(group, client_key, user))
    _, workers = pipe.execute()
    from_host = current or ", ".join(sorted(from_hosts)) or None
    record(user, AuditAction.MOVE, f"session {group} {client_key}", changes={"server host": [from_host, target]},
           group=group, client_key=client_key, workers=workers)
    return Outcome(group, client_key, from_host, target, workers)


def choose_host(snapshot: Snapshot, states: ServerStates, pools: list[str], avoid: set[str],
                client: redis.Redis | None = None, keys: Keys | None = None) -> str | None:
    """Another server host of these pools that accepts new clients, the least busy one first.

    A host qualifies when every one of its servers in these pools accepts new clients (health up, admin
    enabled, weight > 0), so all of the client's ports work there. Backup hosts (only backup servers) are
    chosen only when no primary host qualifies, as the scheduler does (HAProxy `backup`).
    """
    by_host = _servers_by_host(snapshot, pools)
    now = time.monotonic()
    usable = {host: servers for host, servers in by_host.items()
              if host not in avoid and all(states.accepts_new(s, now) for s in servers)}
    primaries = [h for h, servers in usable.items() if not all(s.backup for s in servers)]
    candidates = primaries or list(usable)
    if not candidates:
        return None
    load = horizon.aggregate(client, keys).totals.by_server if client is not None and keys is not None else {}
    return min(candidates, key=lambda h: (sum(load.get(s.id, 0) for s in by_host[h]), candidates.index(h)))


def _servers_by_host(snapshot: Snapshot, pools: list[str]) -> dict[str, list[RealServer]]:
    by_host: dict[str, list[RealServer]] = {}
    for name in dict.fromkeys(pools):
        for server in snapshot.pool(name).servers:
            by_host.setdefault(server.address, []).append(server)
    return by_host


def _no_target_reason(snapshot: Snapshot, states: ServerStates, pools: list[str], avoid: set[str]) -> str:
    others = {h: s for h, s in _servers_by_host(snapshot, pools).items() if h not in avoid}
    if not others:
        return "No other server can take this client: the group has no other server host."
    why = ", ".join(f"{s.id} is {states.state(s)}" + (" (weight 0)" if s.weight <= 0 else "")
                    for servers in others.values() for s in servers)
    return f"No other server can take this client: {why}. The session was left as it is."


def _live_hosts(client: redis.Redis, keys: Keys, group: str, client_key: str) -> set[str]:
    """The hosts the client's live connections use, when it has no persistence entry (it expired)."""
    row = horizon.find(horizon.aggregate(client, keys), group, client_key)
    return set(row.hosts) if row else set()


def _kill_message(group: str, client_key: str, user) -> str:
    message: ControlMessage = {"type": "session.kill", "group": group, "client_key": client_key,
                               "by": user.get_username() if user is not None else ""}
    return json.dumps(message, separators=(",", ":"))


def _check(group: str, client_key: str) -> None:
    if not group or ":" in group:
        raise ControlError("group: a persistence group name is required (names have no ':')")
    if not client_key:
        raise ControlError("client key: required")
