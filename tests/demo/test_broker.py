"""The broker XML session logic, without sockets: time is passed in."""
import pytest

from demo import broker


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def uag(clock):
    return broker.Broker("uag1", "127.0.0.2", timeout=600, clock=clock)


def test_it_creates_a_session_on_the_first_request_and_logs_in_with_the_cookie(uag):
    first = uag.handle(broker.get_configuration(), None)
    session_id = broker.cookie_value([first.set_cookie])
    assert first.set_cookie == f"JSESSIONID={session_id}; Path=/; Secure; HttpOnly"
    second = uag.handle(broker.submit_authentication("alice", "pw"), session_id)
    assert (second.set_cookie, second.session.user, uag.logins) == ("", "alice", 1)
    assert broker.results(second.body) == [("submit-authentication", "ok", "")]


def test_an_unknown_cookie_gets_not_authenticated_for_every_command(uag):
    body = broker.request_document(*(broker.parse_request(broker.get_configuration()) +
                                     broker.parse_request(broker.get_desktop_connection())))
    reply = uag.handle(body, "NOT-FROM-THIS-SERVER")
    assert reply.set_cookie == "" and reply.session is None
    assert broker.results(reply.body) == [("configuration", "error", "NOT_AUTHENTICATED"),
                                          ("desktop-connection", "error", "NOT_AUTHENTICATED")]


def test_a_session_expires_after_the_idle_timeout_but_not_while_used(uag, clock):
    session_id = broker.cookie_value([uag.handle(broker.submit_authentication("bob", "pw"), None).set_cookie])
    clock.now += 500
    assert uag.lookup(session_id).user == "bob"  # use refreshes it
    clock.now += 500
    assert uag.lookup(session_id) is not None
    clock.now += 601
    assert uag.lookup(session_id) is None
    assert broker.results(uag.handle(broker.simple("get-desktops"), session_id).body)[0][2] == "NOT_AUTHENTICATED"


def test_expire_forgets_idle_sessions(uag, clock):
    for _ in range(3):
        uag.handle(broker.get_configuration(), None)
    clock.now += 601
    uag.handle(broker.get_configuration(), None)
    assert (uag.expire(), len(uag.sessions)) == (3, 1)


def test_desktop_and_tunnel_need_a_login(uag):
    reply = uag.handle(broker.get_desktop_connection(), None)
    session_id = broker.cookie_value([reply.set_cookie])
    assert broker.results(reply.body) == [("desktop-connection", "error", "NOT_AUTHENTICATED")]
    uag.handle(broker.submit_authentication("carol", "pw"), session_id)
    reply = uag.handle(broker.simple("get-tunnel-connection"), session_id)
    assert broker.results(reply.body) == [("tunnel-connection", "ok", "")]
    assert f"<connection-id>{session_id}</connection-id>".encode() in reply.body


def test_authentication_needs_username_and_password(uag):
    reply = uag.handle(broker.submit_authentication("dave", ""), None)
    assert broker.results(reply.body) == [("submit-authentication", "error", "AUTHENTICATION_FAILED")]
    assert not reply.session.authenticated and uag.logins == 0


def test_logout_ends_the_session_and_clears_the_cookie(uag):
    session_id = broker.cookie_value([uag.handle(broker.submit_authentication("eve", "pw"), None).set_cookie])
    reply = uag.handle(broker.simple("do-logout"), session_id)
    assert reply.set_cookie.startswith("JSESSIONID=; Path=/; Max-Age=0")
    assert uag.lookup(session_id) is None


@pytest.mark.parametrize("body, message", [
    (b"not xml", "not XML"),
    (b"<broker/>", "contains no command"),
    (b"<html><body/></html>", "root element must be <broker>"),
    (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><broker><get-configuration/></broker>', "DTDs are not accepted"),
    (b"<broker>" + b"x" * broker.MAX_BODY + b"</broker>", "larger than"),
])
def test_bad_documents_get_400_and_create_no_session(uag, body, message):
    reply = uag.handle(body, None)
    assert reply.status == 400 and message.encode() in reply.body.replace(b"&lt;", b"<").replace(b"&gt;", b">")
    assert uag.sessions == {}


def test_an_unknown_command_is_an_error_but_the_others_are_answered(uag):
    body = b'<broker version="15.0"><get-configuration/><do-teleport/></broker>'
    reply = uag.handle(body, None)
    assert broker.results(reply.body) == [("configuration", "ok", ""), ("error", "error", "UNSUPPORTED_OPERATION")]


def test_cookie_value_finds_the_named_cookie_among_others():
    assert broker.cookie_value(["a=1; JSESSIONID=ABC; b=2"]) == "ABC"
    assert broker.cookie_value(["a=1", "JSESSIONID=XYZ"]) == "XYZ"
    assert broker.cookie_value(["XJSESSIONID=no"]) is None
