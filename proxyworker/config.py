"""The configuration snapshot: the one schema that crosses Redis.

The control plane (`balancer/`) builds a `Snapshot` from its models and
publishes `snapshot.to_json()`; proxy workers and the health checker read it
back with `Snapshot.from_json()`. Parsing is strict: an unknown key, a wrong
type or a value out of range raises `ConfigError` naming the path
(`virtual_services[2].port`) and the reason, so a bad publish can never be
half-understood by a worker.

This module must stay importable without Django.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Literal

SCHEMA = 1

Protocol = Literal["tcp", "udp"]
Mode = Literal["l4", "l7"]
SchedulerName = Literal["round_robin", "weighted_round_robin", "least_connections", "first_available"]
PersistenceMethod = Literal["none", "source_ip", "cookie_learn", "cookie_insert", "cookie_source_ip"]
AdminState = Literal["enabled", "drain", "disabled"]
CheckType = Literal["tcp", "http", "https"]
HttpMethod = Literal["GET", "HEAD"]
# Operational states written by the health checker to `<prefix>:health`.
HealthState = Literal["up", "down", "drain", "disabled"]
HEALTH_STATES = typing.get_args(HealthState)


class ConfigError(ValueError):
    """A snapshot that does not follow the schema; `path` names the field."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


# --- the schema -------------------------------------------------------------


@dataclass(frozen=True)
class HealthCheck:
    type: CheckType = "https"
    method: HttpMethod = "GET"
    path: str = "/favicon.ico"
    host: str = ""  # Host header; empty = the server's address
    sni: str = ""  # TLS server name; empty = host, or none for an IP
    expect_up: tuple[int, ...] = (200,)
    expect_drain: tuple[int, ...] = (503,)  # Horizon answers 503 when quiesced
    verify_certificate: bool = False
    interval: float = 2.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3

    def validate(self, path):
        _positive(path + ".interval", self.interval)
        _positive(path + ".timeout", self.timeout)
        _range(path + ".rise", self.rise, 1, 100)
        _range(path + ".fall", self.fall, 1, 100)
        if not self.path.startswith("/"):
            raise ConfigError(path + ".path", "must start with /")
        for name in ("expect_up", "expect_drain"):
            for code in getattr(self, name):
                _range(f"{path}.{name}", code, 100, 599)
        if set(self.expect_up) & set(self.expect_drain):
            raise ConfigError(path + ".expect_drain", "a status cannot mean both up and drain")


@dataclass(frozen=True)
class RealServer:
    id: str  # stable key in `<prefix>:health`: "<pool>/<server>"
    name: str
    address: str
    port: int
    weight: int = 1
    backup: bool = False
    admin_state: AdminState = "enabled"

    def validate(self, path):
        _address(path + ".address", self.address)
        _range(path + ".port", self.port, 1, 65535)
        _range(path + ".weight", self.weight, 0, 256)


@dataclass(frozen=True)
class Pool:
    name: str
    servers: tuple[RealServer, ...] = ()
    health_check: HealthCheck | None = None

    def validate(self, path):
        _name(path + ".name", self.name)
        for i, server in enumerate(self.servers):
            server.validate(f"{path}.servers[{i}]")
        if self.health_check:
            self.health_check.validate(path + ".health_check")


@dataclass(frozen=True)
class Persistence:
    method: PersistenceMethod = "none"
    timeout: int = 5400  # seconds; Horizon 8: three 30-minute heartbeats
    ipv4_mask: int = 32
    ipv6_mask: int = 128
    cookie_name: str = "JSESSIONID"

    def validate(self, path):
        _range(path + ".timeout", self.timeout, 1, 7 * 86400)
        _range(path + ".ipv4_mask", self.ipv4_mask, 0, 32)
        _range(path + ".ipv6_mask", self.ipv6_mask, 0, 128)
        if self.method.startswith("cookie") and not self.cookie_name:
            raise ConfigError(path + ".cookie_name", "is required for cookie persistence")


@dataclass(frozen=True)
class Tls:
    """Layer-7 settings: certificates to present and how to talk to servers."""

    certificates: tuple[str, ...] = ()  # names of `Snapshot.certificates`; first is the default
    backend_tls: bool = True  # re-encrypt towards the real servers
    backend_verify: bool = False
    backend_ca: str = ""  # PEM bundle used when backend_verify


@dataclass(frozen=True)
class Certificate:
    name: str
    cert_pem: str  # leaf first, then the chain
    key_pem_encrypted: str  # Fernet token; key from VIEWLB_CERT_KEY in the environment
    server_names: tuple[str, ...] = ()  # SNI names this certificate answers


@dataclass(frozen=True)
class VirtualService:
    name: str
    address: str
    port: int
    pool: str
    protocol: Protocol = "tcp"
    mode: Mode = "l4"
    scheduler: SchedulerName = "round_robin"
    persistence: Persistence = field(default_factory=Persistence)
    persistence_group: str = ""  # empty = the service's own name
    connect_timeout: float = 5.0
    idle_timeout: float = 3600.0
    max_connections: int = 0  # 0 = unlimited
    enabled: bool = True
    tls: Tls | None = None

    @property
    def group(self) -> str:
        return self.persistence_group or self.name

    @property
    def listen_key(self) -> tuple[str, int, str]:
        return (str(ipaddress.ip_address(self.address)), self.port, self.protocol)

    def validate(self, path):
        _name(path + ".name", self.name)
        _address(path + ".address", self.address)
        _range(path + ".port", self.port, 1, 65535)
        _positive(path + ".connect_timeout", self.connect_timeout)
        _positive(path + ".idle_timeout", self.idle_timeout)
        _range(path + ".max_connections", self.max_connections, 0, 10_000_000)
        self.persistence.validate(path + ".persistence")
        if self.mode == "l7" and self.protocol != "tcp":
            raise ConfigError(path + ".mode", "layer 7 needs protocol tcp")
        if self.persistence.method.startswith("cookie") and self.mode != "l7":
            raise ConfigError(path + ".persistence.method", "cookie persistence needs layer-7 mode")


@dataclass(frozen=True)
class Snapshot:
    version: int
    virtual_services: tuple[VirtualService, ...] = ()
    pools: tuple[Pool, ...] = ()
    certificates: tuple[Certificate, ...] = ()
    schema: int = SCHEMA
    published_at: str = ""
    author: str = ""

    # -- lookups --
    def pool(self, name: str) -> Pool:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def servers(self):
        for pool in self.pools:
            yield from pool.servers

    def enabled_services(self):
        return [vs for vs in self.virtual_services if vs.enabled]

    # -- (de)serialisation --
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data) -> Snapshot:
        snapshot = _build(cls, data, "")
        snapshot.validate()
        return snapshot

    @classmethod
    def from_json(cls, text: str | bytes) -> Snapshot:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError("", f"not JSON: {exc}") from None
        return cls.from_dict(data)

    def with_version(self, version: int, author: str, published_at: str) -> Snapshot:
        return dataclasses.replace(self, version=version, author=author, published_at=published_at)

    def validate(self):
        if self.schema != SCHEMA:
            raise ConfigError("schema", f"this worker understands schema {SCHEMA}, not {self.schema}")
        _range("version", self.version, 0, 2**62)
        _unique("pools", [p.name for p in self.pools])
        _unique("virtual_services", [v.name for v in self.virtual_services])
        _unique("certificates", [c.name for c in self.certificates])
        _unique("pools[].servers[].id", [s.id for s in self.servers()])
        for i, pool in enumerate(self.pools):
            pool.validate(f"pools[{i}]")
        pool_names = {p.name for p in self.pools}
        cert_names = {c.name for c in self.certificates}
        listening = {}
        for i, vs in enumerate(self.virtual_services):
            path = f"virtual_services[{i}]"
            vs.validate(path)
            if vs.pool not in pool_names:
                raise ConfigError(path + ".pool", f"no pool named {vs.pool!r}")
            for cert in vs.tls.certificates if vs.tls else ():
                if cert not in cert_names:
                    raise ConfigError(path + ".tls.certificates", f"no certificate named {cert!r}")
            if not vs.enabled:
                continue
            if vs.listen_key in listening:
                raise ConfigError(path, f"listens on the same address, port and protocol as {listening[vs.listen_key]!r}")
            listening[vs.listen_key] = vs.name
            if not self.pool(vs.pool).servers:
                raise ConfigError(path + ".pool", f"pool {vs.pool!r} has no real servers")
            if vs.persistence.method != "none":
                _distinct_hosts(path + ".pool", self.pool(vs.pool))


# --- Redis names, shared by every writer and reader -------------------------


@dataclass(frozen=True)
class Keys:
    """Every Redis key and channel of the contract, under one prefix (tests use their own)."""

    prefix: str = "viewlb"

    @property
    def config(self):  # key with the snapshot JSON, and the channel announcing it
        return f"{self.prefix}:config"

    @property
    def health(self):  # hash server id -> HealthState, and the channel announcing changes
        return f"{self.prefix}:health"

    @property
    def admin(self):  # hash server id -> AdminState set from the console at once (drain without an apply)
        return f"{self.prefix}:admin"

    @property
    def health_detail(self):  # hash server id -> JSON of the last check result
        return f"{self.prefix}:health:last"

    def persist(self, group: str, client_key: str) -> str:
        return f"{self.prefix}:persist:{group}:{client_key}"

    def persist_pattern(self, group: str = "*") -> str:
        return f"{self.prefix}:persist:{group}:*"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def worker_pattern(self):
        return f"{self.prefix}:worker:*"

    def sessions(self, worker_id: str) -> str:  # hash session id -> JSON of a live connection
        return f"{self.prefix}:sessions:{worker_id}"

    @property
    def control(self):  # channel: session control messages from the console (messages.ControlMessage)
        return f"{self.prefix}:control"

    @property
    def channels_prefix(self):  # channels_redis prefix, so Django and workers share groups
        return f"{self.prefix}:asgi"


# --- strict construction ----------------------------------------------------


def _build(tp, value, path):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _build(args[0], value, path)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(path, f"must be one of {', '.join(map(str, choices))}, not {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, "must be a list")
        (item_type, _ellipsis) = typing.get_args(tp)
        return tuple(_build(item_type, item, f"{path}[{i}]") for i, item in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, "must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, "must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, "must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, "must be a string")
        return value
    raise TypeError(f"schema type {tp!r} at {path} is not supported")


_HINTS: dict[type, dict] = {}


def _build_dataclass(cls, value, path):
    if not isinstance(value, dict):
        raise ConfigError(path, "must be a mapping")
    hints = _HINTS.get(cls) or _HINTS.setdefault(cls, typing.get_type_hints(cls))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(_join(path, unknown[0]), "unknown field")
    kwargs = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = _build(hints[name], value[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(_join(path, name), "is required")
    return cls(**kwargs)


def _join(path, name):
    return f"{path}.{name}" if path else name


def _range(path, value, low, high):
    if not low <= value <= high:
        raise ConfigError(path, f"must be between {low} and {high}, not {value}")


def _positive(path, value):
    if value <= 0:
        raise ConfigError(path, f"must be greater than 0, not {value}")


def _address(path, value):
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(path, f"{value!r} is not an IPv4 or IPv6 address") from None


def _name(path, value):
    if not value or len(value) > 100 or any(c in value for c in ":/ \t\n"):
        raise ConfigError(path, f"{value!r} must be 1-100 characters without spaces, ':' or '/'")


def _distinct_hosts(path, pool):
    """Persistence remembers the server *host* (so that a client's ports follow each
    other), so servers of a persistent pool that share an address cannot be told apart."""
    seen = {}
    for server in pool.servers:
        host = str(ipaddress.ip_address(server.address))
        if host in seen:
            raise ConfigError(
                path,
                f"servers {seen[host]!r} and {server.name!r} of pool {pool.name!r} share the address {host}: "
                "persistence remembers the server address (so that a client's ports follow each other), "
                "so give each server its own address or use no persistence",
            )
        seen[host] = server.name


def _unique(path, names):
    seen = set()
    for name in names:
        if name in seen:
            raise ConfigError(path, f"{name!r} appears twice")
        seen.add(name)
