"""Layer-7 persistence decisions, pure: which keys to look up, what to learn.

The worker's persistence store maps (group, client key) -> server host and is
shared in Redis; this module only produces the client keys and the headers:

- cookie_learn: the server sets `JSESSIONID` (the policy's cookie name); the
  response teaches `cookie:<digest>` -> the server that set it, and every later
  request carrying that cookie looks it up. Requests without a known cookie are
  balanced by the scheduler. Only cookies a server set are stored: a client
  inventing cookie values cannot fill Redis. (Refreshing the TTL of an entry
  that was hit is the persistence store's job, as at layer 4.)
- cookie_insert: the appliance sets its own cookie (`VIEWLBSRV`) whose value is
  an HMAC of the server host: opaque to clients, checkable by every worker that
  shares the secret, and needing no Redis at all. It is removed from requests
  before they reach the server (HAProxy's `cookie ... insert indirect`).
- cookie_source_ip: cookie_learn, with the source-IP key as fallback until a
  cookie is known (and the source-IP entry is kept up to date as well).
- source_ip / none: as at layer 4.

Why the Redis key holds a digest and not the cookie value: a JSESSIONID is a
login session; persistence entries are listed on dashboards and readable by
anyone with Redis access, and they must not become a list of live sessions to
hijack. SHA-256 is deterministic, so every worker derives the same key.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field

from proxyworker.config import Persistence

INSERT_COOKIE = b"VIEWLBSRV"
INSERT_ATTRIBUTES = b"Path=/; Secure; HttpOnly"
MAX_COOKIE_VALUE = 4096
_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_EXPIRED = re.compile(rb"(?i)^\s*max-age\s*=\s*(-?[0-9]+)\s*$")


# --- reading cookies ----------------------------------------------------------------


def request_cookie(headers, name: bytes) -> bytes | None:
    """The value of cookie `name` in the request's Cookie header(s); the first one wins.

    Browsers put the most specific path first, and a value the client sends
    twice can only be routed one way: the first is what Tomcat-style servers read.
    """
    for key, value in headers:
        if key.lower() != b"cookie":
            continue
        for pair in value.split(b";"):
            cname, eq, cvalue = pair.strip().partition(b"=")
            if eq and cname == name and cvalue:
                return cvalue.strip()
    return None


@dataclass(frozen=True)
class SetCookie:
    name: bytes
    value: bytes
    deleted: bool  # Max-Age <= 0 or an empty value: the server ends the session


def response_cookie(headers, name: bytes) -> SetCookie | None:
    """The last Set-Cookie for `name` in a response (a later one overrides an earlier one)."""
    found = None
    for key, value in headers:
        if key.lower() != b"set-cookie":
            continue
        pair, _sep, attributes = value.partition(b";")
        cname, eq, cvalue = pair.strip().partition(b"=")
        if not eq or cname != name:
            continue
        cvalue = cvalue.strip()
        found = SetCookie(name, cvalue, not cvalue or _max_age_expired(attributes))
    return found


def _max_age_expired(attributes: bytes) -> bool:
    for attribute in attributes.split(b";"):
        match = _EXPIRED.match(attribute)
        if match and int(match.group(1)) <= 0:
            return True
    return False


def cookie_key(value: bytes) -> str | None:
    """The persistence client key for a session cookie value, or None for an unusable value."""
    if not value or len(value) > MAX_COOKIE_VALUE:
        return None
    return "cookie:" + hashlib.sha256(value).hexdigest()[:32]


def strip_cookie(headers, name: bytes) -> list[tuple[bytes, bytes]]:
    """The headers with cookie `name` removed from every Cookie header (an emptied header goes)."""
    out = []
    for key, value in headers:
        if key.lower() == b"cookie" and name in value:
            pairs = [p.strip() for p in value.split(b";")]
            kept = [p for p in pairs if p and p.partition(b"=")[0] != name]
            if not kept:
                continue
            value = b"; ".join(kept)
        out.append((key, value))
    return out


# --- cookie insert --------------------------------------------------------------------


class InsertCookie:
    """The appliance's own persistence cookie: value = HMAC(secret, group, host), truncated.

    Decoding tries the candidate hosts (a pool is small), so the value reveals
    nothing about the server and cannot be forged without the secret.
    """

    def __init__(self, secret: bytes, name: bytes = INSERT_COOKIE):
        if len(secret) < 16:
            raise ValueError("the cookie-insert secret must be at least 16 bytes")
        self.secret = secret
        self.name = name

    def token(self, group: str, host: str) -> bytes:
        mac = hmac.new(self.secret, f"{group}\0{host}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:18])  # 144 bits, 24 characters, no padding

    def host_for(self, token: bytes | None, group: str, hosts) -> str | None:
        if not token:
            return None
        for host in hosts:
            if hmac.compare_digest(self.token(group, host), token):
                return host
        return None

    def set_cookie(self, group: str, host: str) -> tuple[bytes, bytes]:
        return (b"Set-Cookie", self.name + b"=" + self.token(group, host) + b"; " + INSERT_ATTRIBUTES)


def insert_secret(cert_key: bytes | str) -> bytes:
    """The cookie-insert secret, derived from VIEWLB_CERT_KEY so every worker and appliance share it."""
    if isinstance(cert_key, str):
        cert_key = cert_key.encode()
    return hmac.new(cert_key, b"viewlb cookie-insert v1", hashlib.sha256).digest()


# --- the decisions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """How to place one request: `pinned` host (insert cookie) else the first `keys` hit, else balance."""

    keys: tuple[str, ...] = ()
    pinned: str | None = None
    cookie: bytes | None = None  # the session cookie value the request carried
    token: bytes | None = None  # the insert cookie value the request carried


@dataclass(frozen=True)
class Learn:
    """What a response teaches: entries to store and forget, headers to add for the client."""

    store: tuple[tuple[str, str], ...] = ()  # (client key, server host)
    forget: tuple[str, ...] = ()
    add_headers: tuple[tuple[bytes, bytes], ...] = field(default_factory=tuple)


NOTHING = Learn()  # most responses teach nothing: one shared answer


class L7Persistence:
    """The persistence policy of one layer-7 virtual service, as pure decisions."""

    def __init__(self, policy: Persistence, group: str, insert: InsertCookie | None = None):
        self.policy = policy
        self.method = policy.method
        self.group = group
        self.cookie_name = policy.cookie_name.encode()
        self.insert = insert
        if self.method == "cookie_insert" and insert is None:
            raise ValueError("cookie_insert needs the insert-cookie secret")

        self.uses_cookie = self.method in ("cookie_learn", "cookie_source_ip")

    def route(self, headers, source_key: str | None, hosts=()) -> Route:
        """Where to look for this request's server. `hosts`: the pool's server hosts (insert mode)."""
        if self.method == "cookie_insert":
            token = request_cookie(headers, self.insert.name)
            return Route(pinned=self.insert.host_for(token, self.group, hosts), token=token)
        keys = []
        cookie = None
        if self.uses_cookie:
            cookie = request_cookie(headers, self.cookie_name)
            key = cookie_key(cookie) if cookie else None
            if key:
                keys.append(key)
        if self.method in ("source_ip", "cookie_source_ip") and source_key:
            keys.append(source_key)
        return Route(tuple(keys), None, cookie)

    def learn(self, route: Route, response_headers, host: str, source_key: str | None = None) -> Learn:
        """What to store after `host` answered the request routed by `route`."""
        if self.method == "cookie_insert":
            if route.pinned == host:
                return NOTHING
            return Learn(add_headers=(self.insert.set_cookie(self.group, host),))
        store, forget = [], []
        if self.uses_cookie:
            set_cookie = response_cookie(response_headers, self.cookie_name)
            key = cookie_key(set_cookie.value) if set_cookie and not set_cookie.deleted else None
            if key:
                store.append((key, host))
            elif set_cookie and set_cookie.deleted and route.cookie:
                forget.append(cookie_key(route.cookie))  # logout: the session is over, its entry goes
        if source_key and (self.method == "source_ip" or (self.method == "cookie_source_ip" and not route.cookie)):
            store.append((source_key, host))  # the fallback holds only until the client has a cookie
        if not store and not forget:
            return NOTHING
        return Learn(tuple(store), tuple(k for k in forget if k))
