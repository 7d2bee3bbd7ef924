"""The broker XML API of a simulated Horizon server: phase 1, without sockets.

A Horizon client authenticates with a series of `POST /broker/xml` requests,
often over several TCP connections. The server sets `JSESSIONID` on its first
answer and knows the client only by that cookie from then on; a server that
never saw the cookie answers NOT_AUTHENTICATED, exactly what a client sees
when a balancer sends it to the wrong server. That is the behaviour a
balancer's persistence has to get right, so it is what this module models.

Requests look like Horizon's (one or more commands in one `<broker>`)::

    <broker version="15.0"><do-submit-authentication><screen>
      <name>windows-password</name><params>
        <param><name>username</name><values><value>alice</value></values></param>
        <param><name>password</name><values><value>secret</value></values></param>
      </params></screen></do-submit-authentication></broker>

Supported commands: get-configuration, do-submit-authentication,
get-desktops, get-desktop-connection, get-tunnel-connection, do-logout.
"""
from __future__ import annotations

import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

VERSION = "15.0"
MAX_BODY = 64 * 1024
UAG_SESSION_TIMEOUT = 36000  # a UAG keeps an idle session up to 10 hours
COOKIE = "JSESSIONID"

# request command -> the element its answer is wrapped in
REPLIES = {
    "get-configuration": "configuration",
    "do-submit-authentication": "submit-authentication",
    "get-desktops": "desktops",
    "get-desktop-connection": "desktop-connection",
    "get-tunnel-connection": "tunnel-connection",
    "do-logout": "logout",
}
NEEDS_LOGIN = {"get-desktops", "get-desktop-connection", "get-tunnel-connection", "do-logout"}


@dataclass
class Session:
    id: str
    created: float
    last_seen: float
    user: str = ""
    tunnels: int = 0

    @property
    def authenticated(self) -> bool:
        return bool(self.user)


@dataclass
class BrokerReply:
    status: int
    body: bytes
    set_cookie: str = ""  # a full Set-Cookie value, or "" for none
    session: Session | None = None
    errors: list[str] = field(default_factory=list)


class BrokerError(ValueError):
    """A request that is not a broker XML document."""


class Broker:
    """Sessions of one simulated server and the answers to its XML requests."""

    def __init__(self, server: str, address: str = "127.0.0.1", timeout: float = UAG_SESSION_TIMEOUT, clock=time.monotonic):
        self.server = server
        self.address = address
        self.timeout = timeout
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.logins = 0

    # -- sessions --
    def lookup(self, session_id: str | None) -> Session | None:
        """The live session for a cookie value; expired ones are forgotten."""
        if not session_id:
            return None
        session = self.sessions.get(session_id)
        now = self.clock()
        if session and now - session.last_seen > self.timeout:
            del self.sessions[session_id]
            return None
        if session:
            session.last_seen = now
        return session

    def expire(self) -> int:
        now = self.clock()
        stale = [sid for sid, s in self.sessions.items() if now - s.last_seen > self.timeout]
        for sid in stale:
            del self.sessions[sid]
        return len(stale)

    def _new_session(self) -> Session:
        now = self.clock()
        session = Session(id=secrets.token_hex(16).upper(), created=now, last_seen=now)
        self.sessions[session.id] = session
        return session

    # -- the XML API --
    def handle(self, body: bytes, session_id: str | None) -> BrokerReply:
        try:
            commands = parse_request(body)
        except BrokerError as exc:
            return BrokerReply(400, error_document("BAD_REQUEST", str(exc)), errors=["BAD_REQUEST"])
        if session_id:
            session = self.lookup(session_id)
            if session is None:  # a cookie from another server, or one that expired
                replies = [_error(REPLIES.get(c.tag, "error"), "NOT_AUTHENTICATED", "Session expired or unknown") for c in commands]
                return BrokerReply(200, document(replies), errors=["NOT_AUTHENTICATED"])
            set_cookie = ""
        else:
            session = self._new_session()
            set_cookie = f"{COOKIE}={session.id}; Path=/; Secure; HttpOnly"
        replies, errors = [], []
        for command in commands:
            reply = self._command(command, session)
            if reply.findtext("result") == "error":
                errors.append(reply.findtext("error-code"))
            replies.append(reply)
        if session.id not in self.sessions:  # logged out in this request
            set_cookie = f"{COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly"
        return BrokerReply(200, document(replies), set_cookie, session, errors)

    def _command(self, command: ET.Element, session: Session) -> ET.Element:
        reply_tag = REPLIES.get(command.tag)
        if reply_tag is None:
            return _error("error", "UNSUPPORTED_OPERATION", f"unknown command {command.tag}")
        if command.tag in NEEDS_LOGIN and not session.authenticated:
            return _error(reply_tag, "NOT_AUTHENTICATED", "Log in first")
        return getattr(self, "_" + command.tag.replace("-", "_"))(command, session, reply_tag)

    def _get_configuration(self, command, session, tag):
        reply = _ok(tag)
        screen = ET.SubElement(ET.SubElement(reply, "authentication"), "screen")
        ET.SubElement(screen, "name").text = "windows-password"
        return reply

    def _do_submit_authentication(self, command, session, tag):
        params = auth_params(command)
        if not params.get("username") or not params.get("password"):
            return _error(tag, "AUTHENTICATION_FAILED", "Username and password are required")
        session.user = params["username"]
        self.logins += 1
        reply = _ok(tag)
        screen = ET.SubElement(ET.SubElement(reply, "authentication"), "screen")
        ET.SubElement(screen, "name").text = "success"
        return reply

    def _get_desktops(self, command, session, tag):
        reply = _ok(tag)
        desktop = ET.SubElement(reply, "desktop")
        ET.SubElement(desktop, "id").text = "cn=win10-pool,ou=applications,dc=vdi,dc=vmware,dc=int"
        ET.SubElement(desktop, "name").text = "Windows 10"
        return reply

    def _get_desktop_connection(self, command, session, tag):
        reply = _ok(tag)
        ET.SubElement(reply, "id").text = command.findtext("desktop-id", "")
        ET.SubElement(reply, "address").text = self.address
        ET.SubElement(reply, "port").text = "3389"
        ET.SubElement(reply, "protocol-name").text = command.findtext("protocol/name", "RDP")
        ET.SubElement(reply, "username").text = session.user
        ET.SubElement(reply, "enable-secure-tunnel").text = "true"
        return reply

    def _get_tunnel_connection(self, command, session, tag):
        reply = _ok(tag)
        ET.SubElement(reply, "connection-id").text = session.id
        ET.SubElement(reply, "server1").text = "/ice/tunnel"
        ET.SubElement(reply, "generation").text = "1"
        return reply

    def _do_logout(self, command, session, tag):
        self.sessions.pop(session.id, None)
        return _ok(tag)


# --- documents ---------------------------------------------------------------


def parse_request(body: bytes) -> list[ET.Element]:
    if len(body) > MAX_BODY:
        raise BrokerError(f"request larger than {MAX_BODY} bytes")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:  # no entity expansion games
        raise BrokerError("DTDs are not accepted")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise BrokerError(f"not XML: {exc}") from None
    if root.tag != "broker":
        raise BrokerError(f"root element must be <broker>, not <{root.tag}>")
    commands = list(root)
    if not commands:
        raise BrokerError("<broker> contains no command")
    return commands


def auth_params(command: ET.Element) -> dict[str, str]:
    params = {}
    for param in command.iterfind("screen/params/param"):
        name = param.findtext("name")
        if name:
            params[name] = param.findtext("values/value", "")
    return params


def request_document(*commands: ET.Element) -> bytes:
    root = ET.Element("broker", version=VERSION)
    root.extend(commands)
    return b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root)


def document(replies: list[ET.Element]) -> bytes:
    return request_document(*replies)


def error_document(code: str, message: str) -> bytes:
    return document([_error("error", code, message)])


def _ok(tag: str) -> ET.Element:
    reply = ET.Element(tag)
    ET.SubElement(reply, "result").text = "ok"
    return reply


def _error(tag: str, code: str, message: str) -> ET.Element:
    reply = ET.Element(tag)
    ET.SubElement(reply, "result").text = "error"
    ET.SubElement(reply, "error-code").text = code
    ET.SubElement(reply, "error-message").text = message
    ET.SubElement(reply, "user-message").text = message
    return reply


# --- requests a client sends (used by demo.clients and the tests) -------------


def get_configuration() -> bytes:
    return request_document(ET.Element("get-configuration"))


def submit_authentication(username: str, password: str, domain: str = "VDI") -> bytes:
    command = ET.Element("do-submit-authentication")
    screen = ET.SubElement(command, "screen")
    ET.SubElement(screen, "name").text = "windows-password"
    params = ET.SubElement(screen, "params")
    for name, value in (("username", username), ("domain", domain), ("password", password)):
        param = ET.SubElement(params, "param")
        ET.SubElement(param, "name").text = name
        ET.SubElement(ET.SubElement(param, "values"), "value").text = value
    return request_document(command)


def get_desktop_connection(desktop_id: str = "cn=win10-pool", protocol: str = "BLAST") -> bytes:
    command = ET.Element("get-desktop-connection")
    ET.SubElement(command, "desktop-id").text = desktop_id
    ET.SubElement(ET.SubElement(command, "protocol"), "name").text = protocol
    return request_document(command)


def simple(command: str) -> bytes:
    return request_document(ET.Element(command))


def results(body: bytes) -> list[tuple[str, str, str]]:
    """(reply tag, result, error-code) for each reply in a response document."""
    root = ET.fromstring(body)
    return [(r.tag, r.findtext("result", ""), r.findtext("error-code", "")) for r in root]


def cookie_value(header_values, name: str = COOKIE) -> str | None:
    """The value of cookie `name` in one or more `Cookie` header values."""
    for header in header_values:
        for part in header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
    return None
