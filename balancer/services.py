"""Operations on the whole configuration: compile, diff, publish, roll back, change server states.

Views, the `viewlb` management command and tests all call these functions;
none of them knows about HTTP. The draft is what the database holds; the
running configuration is the newest `ConfigVersion`, which `publish()` also
writes to Redis for the proxy workers and the health checker.
"""
import re

import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from proxyworker import config
from proxyworker.config import ConfigError, Keys, Snapshot

from . import declarative, diff
from .audit import record
from .choices import AdminState, AuditAction
from .models import Certificate, ConfigVersion, Pool, RealServer, VirtualService


class PublishError(Exception):
    """The draft cannot be published; the message says why."""


# --- Redis -------------------------------------------------------------------


def redis_connection() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, decode_responses=True, socket_timeout=5, socket_connect_timeout=3)


def redis_keys() -> Keys:
    # Read at call time: tests (and several appliances on one Redis) use their own prefix.
    return Keys(settings.VIEWLB_REDIS_PREFIX)


# --- compiling ---------------------------------------------------------------


def compile_dict(version=0, author="", published_at="") -> dict:
    """The draft as a snapshot dict, not yet validated (so an invalid draft can still be shown)."""
    pools = Pool.objects.select_related("health_check").prefetch_related("servers").order_by("name")
    services = (VirtualService.objects.select_related("pool", "persistence")
                .prefetch_related("certificate_links__certificate").order_by("name"))
    return {
        "version": version,
        "virtual_services": [vs.to_schema() for vs in services],
        "pools": [pool.to_schema() for pool in pools],
        "certificates": [cert.to_schema() for cert in _travelling_certificates()],
        "schema": config.SCHEMA,
        "published_at": published_at,
        "author": author,
    }


def _travelling_certificates():
    """Only certificates that layer-7 services present go to the workers, with their encrypted keys.

    Disabled services count: the schema checks every service's certificate names.
    """
    return Certificate.objects.filter(service_links__service__mode="l7").distinct().order_by("name")


def validate_dict(data: dict) -> Snapshot:
    """The schema's checks plus the console's own rules that the schema leaves to the worker; raises ConfigError."""
    for i, vs in enumerate(data["virtual_services"]):
        if vs["mode"] == "l7" and not (vs["tls"] or {}).get("certificates"):
            raise ConfigError(f"virtual_services[{i}].certificates", "a layer-7 service needs at least one certificate")
    return Snapshot.from_dict(data)


def compile_snapshot() -> Snapshot:
    """The draft as a validated snapshot (version 0 until published); raises PublishError."""
    data = compile_dict()
    try:
        return validate_dict(data)
    except ConfigError as exc:
        raise PublishError(describe_config_error(exc, data)) from None


_INDEX = re.compile(r"^(virtual_services|pools|certificates)\[(\d+)\](?:\.servers\[(\d+)\])?(?:\.([\w.]+))?$")


def locate_config_error(exc: ConfigError, data: dict):
    """(section, name, field) of the object a schema error is about, in console terms.

    section is 'virtual_services', 'pools', 'certificates' or 'servers' (name = 'pool/server'),
    or None when the path names no single object.
    """
    match = _INDEX.match(exc.path)
    if not match:
        return None, None, exc.path or None
    section, index, server_index, field = match.groups()
    item = data[section][int(index)]
    name = item["name"]
    if server_index is not None:
        section, name = "servers", f"{name}/{item['servers'][int(server_index)]['name']}"
    # Nested settings (a service's persistence, a pool's health check) are edited as one reference.
    return section, name, field.split(".")[0] if field else None


def describe_config_error(exc: ConfigError, data: dict) -> str:
    section, name, field = locate_config_error(exc, data)
    if section is None:
        return str(exc)
    kind = {"virtual_services": "virtual service", "pools": "pool", "servers": "real server",
            "certificates": "certificate"}[section]
    return f"{kind} {name!r}: {field + ': ' if field else ''}{exc.reason}"


# --- running version and pending changes -------------------------------------


def running_version() -> ConfigVersion | None:
    return ConfigVersion.objects.order_by("-number").first()


def running_dict() -> dict:
    version = running_version()
    if version is None:
        return Snapshot(version=0).to_dict()
    return version.snapshot_dict()


def live_admin_states() -> dict:
    """Server id -> admin state as the workers see it now (set at once by drain/enable/disable)."""
    try:
        return redis_connection().hgetall(redis_keys().admin)
    except redis.RedisError:
        return {}


def _as_running(snapshot: dict) -> dict:
    """A published snapshot with today's admin states: a drain is live without an apply,
    so it must not show up as a pending change."""
    states = live_admin_states()
    for pool in snapshot.get("pools", []):
        for server in pool["servers"]:
            server["admin_state"] = states.get(server["id"], server["admin_state"])
    return snapshot


def pending_diff() -> list[str]:
    """Unified diff, running configuration -> draft, one `path: value` line per setting."""
    version = running_version()
    label = f"running (version {version.number})" if version else "running (nothing published)"
    return diff.unified(_as_running(running_dict()), compile_dict(), label, "draft")


def pending_changes() -> list[str]:
    """The objects the draft changes, e.g. ['virtual_services/horizon-443']."""
    return diff.changed_objects(pending_diff())


# --- publishing --------------------------------------------------------------


def publish(user, comment="", *, action=AuditAction.APPLY, rollback_of=None) -> ConfigVersion | None:
    """Publish the draft as the next version; None when it equals the running configuration."""
    draft = compile_snapshot()
    changes = pending_diff()
    if not changes:
        return None
    author = user.get_username() if user is not None and user.is_authenticated else ""
    try:
        with transaction.atomic():
            version = _store_version(draft, user, author, comment, rollback_of)
            _write_redis(version.to_snapshot())
            record(user, action, version, comment=comment, diff=changes, rollback_of=rollback_of)
    except IntegrityError:
        raise PublishError("another publish happened at the same moment; look at the versions and try again") from None
    except redis.RedisError as exc:
        raise PublishError(f"Redis at {settings.REDIS_URL} did not take the configuration: {exc}") from None
    return version


def _store_version(draft, user, author, comment, rollback_of) -> ConfigVersion:
    last = ConfigVersion.objects.select_for_update().order_by("-number").first()
    number = (last.number if last else 0) + 1
    now = timezone.now()
    snapshot = draft.with_version(number, author, now.isoformat())
    return ConfigVersion.objects.create(
        number=number, author=user if author else None, author_name=author, created_at=now, comment=comment,
        snapshot=snapshot.to_json(), document=declarative.export_document(), rollback_of=rollback_of,
    )


def _write_redis(snapshot: Snapshot):
    """One MULTI/EXEC: the snapshot, the admin states it carries, and the notifications.

    The admin hash overrides the snapshot in the workers, so it is rewritten
    here: otherwise a state set earlier from the console would hide the new one.
    """
    client, keys = redis_connection(), redis_keys()
    before = client.hgetall(keys.admin)
    states = {server.id: server.admin_state for server in snapshot.servers()}
    pipe = client.pipeline(transaction=True)
    pipe.set(keys.config, snapshot.to_json())
    pipe.delete(keys.admin)
    if states:
        pipe.hset(keys.admin, mapping=states)
    pipe.publish(keys.config, str(snapshot.version))
    for server_id in sorted(set(before) | set(states)):
        if before.get(server_id) != states.get(server_id):
            pipe.publish(keys.health, server_id)
    pipe.execute()


def rollback(number: int, user) -> ConfigVersion | None:
    """Make version `number` the draft again and publish it as a new version.

    Returns None when that configuration is already running (the draft is still restored).
    """
    target = ConfigVersion.objects.get(number=number)
    with transaction.atomic():
        declarative.load_document(declarative.Document.from_data(target.document), user, source=f"rollback to {number}")
        return publish(user, f"rollback to version {number}", action=AuditAction.ROLLBACK, rollback_of=number)


def rollback_diff(number: int) -> list[str]:
    """What a rollback to `number` would change in the running configuration."""
    target = ConfigVersion.objects.get(number=number)
    running = running_version()
    label = f"running (version {running.number})" if running else "running (nothing published)"
    return diff.unified(_as_running(running_dict()), target.snapshot_dict(), label, f"version {number}")


# --- server states -----------------------------------------------------------

_ACTIONS = {AdminState.ENABLED: AuditAction.ENABLE, AdminState.DRAIN: AuditAction.DRAIN, AdminState.DISABLED: AuditAction.DISABLE}


def set_admin_state(server: RealServer, state: str, user):
    """Enable, drain or disable a server at once, without an apply."""
    if state not in AdminState.values:
        raise ValueError(f"admin state must be one of {', '.join(AdminState.values)}, not {state!r}")
    previous = server.admin_state
    client, keys = redis_connection(), redis_keys()
    try:
        with transaction.atomic():
            RealServer.objects.filter(pk=server.pk).update(admin_state=state)
            server.admin_state = state
            record(user, _ACTIONS[state], server, {"admin_state": [previous, state]})
            pipe = client.pipeline(transaction=True)
            pipe.hset(keys.admin, server.server_id, state)
            pipe.publish(keys.health, server.server_id)
            pipe.execute()
    except redis.RedisError as exc:
        server.admin_state = previous
        raise PublishError(f"Redis at {settings.REDIS_URL} is not reachable, nothing changed: {exc}") from None


# --- declarative configuration -----------------------------------------------


def export_config() -> str:
    """The whole configuration as YAML (objects by name, stable order)."""
    return declarative.dump_yaml(declarative.export_document())


def apply_config(text: str, user, dry_run=False, comment="") -> tuple[list[str], ConfigVersion | None]:
    """Replace the configuration with a YAML document and publish it.

    Errors raise `declarative.DeclarativeError` ('line N: path: reason') and
    change nothing, neither in the database nor in Redis.
    """
    document = declarative.parse_yaml(text)
    with transaction.atomic():
        declarative.load_document(document, user, source="yaml apply")
        data = compile_dict()
        try:
            validate_dict(data)
        except ConfigError as exc:
            section, name, field = locate_config_error(exc, data)
            raise document.error(section, name, field, exc.reason) from None
        changes = pending_diff()
        if dry_run:
            transaction.set_rollback(True)
            return changes, None
        try:
            return changes, publish(user, comment or "applied from YAML")
        except PublishError as exc:
            raise declarative.DeclarativeError(None, "", str(exc)) from None

