"""Layer-7 persistence decisions: cookie extraction, learn, insert, source-IP fallback."""
import pytest

from proxyworker.config import Persistence
from proxyworker.l7.cookies import (
    InsertCookie,
    L7Persistence,
    Learn,
    cookie_key,
    insert_secret,
    request_cookie,
    response_cookie,
    strip_cookie,
)

SECRET = insert_secret("a-test-fernet-key-does-not-need-to-be-valid-here")
HOSTS = ("10.0.0.11", "10.0.0.12", "10.0.0.13")


def policy(method, **kw):
    return L7Persistence(Persistence(method=method, **kw), "horizon", InsertCookie(SECRET))


# --- extraction ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers, value", [
    ([(b"Cookie", b"JSESSIONID=ABC123")], b"ABC123"),
    ([(b"cookie", b"a=1; JSESSIONID=ABC123; b=2")], b"ABC123"),
    ([(b"Cookie", b"a=1;JSESSIONID=x;JSESSIONID=y")], b"x"),  # first wins
    ([(b"Cookie", b"a=1"), (b"Cookie", b"JSESSIONID=second-field")], b"second-field"),
    ([(b"Cookie", b"XJSESSIONID=no; JSESSIONIDX=no")], None),  # names match exactly
    ([(b"Cookie", b"jsessionid=lower")], None),  # cookie names are case-sensitive
    ([(b"Cookie", b"JSESSIONID=")], None),
    ([(b"Cookie", b"JSESSIONID")], None),
    ([(b"X-Cookie", b"JSESSIONID=no")], None),
    ([(b"Cookie", b'JSESSIONID="quoted"')], b'"quoted"'),
    ([], None),
])
def test_request_cookie(headers, value):
    assert request_cookie(headers, b"JSESSIONID") == value


def test_response_cookie_reads_set_cookie_and_sees_deletions():
    learned = response_cookie([(b"Set-Cookie", b"other=1"), (b"Set-Cookie", b"JSESSIONID=F00D; Path=/; Secure")],
                              b"JSESSIONID")
    assert learned.value == b"F00D" and not learned.deleted
    gone = response_cookie([(b"Set-Cookie", b"JSESSIONID=F00D; Max-Age=0; Path=/")], b"JSESSIONID")
    assert gone.deleted
    assert response_cookie([(b"Set-Cookie", b"JSESSIONID=; Path=/")], b"JSESSIONID").deleted
    assert response_cookie([(b"Set-Cookie", b"JSESSIONID2=x")], b"JSESSIONID") is None
    last = response_cookie([(b"Set-Cookie", b"JSESSIONID=a"), (b"Set-Cookie", b"JSESSIONID=b")], b"JSESSIONID")
    assert last.value == b"b"


def test_cookie_key_is_stable_bounded_and_does_not_reveal_the_session():
    key = cookie_key(b"4A1B2C3D4E5F")
    assert key == cookie_key(b"4A1B2C3D4E5F") and key.startswith("cookie:") and len(key) == 7 + 32
    assert "4A1B2C3D4E5F" not in key
    assert cookie_key(b"4A1B2C3D4E5E") != key
    assert cookie_key(b"") is None and cookie_key(b"x" * 5000) is None


def test_strip_cookie_keeps_the_others():
    headers = [(b"Host", b"a"), (b"Cookie", b"VIEWLBSRV=t; JSESSIONID=j"), (b"Cookie", b"VIEWLBSRV=t")]
    assert strip_cookie(headers, b"VIEWLBSRV") == [(b"Host", b"a"), (b"Cookie", b"JSESSIONID=j")]
    assert strip_cookie(headers, b"NOPE") == headers


# --- insert --------------------------------------------------------------------------------


def test_insert_cookie_tokens_are_opaque_distinct_and_decodable():
    insert = InsertCookie(SECRET)
    tokens = {insert.token("horizon", h) for h in HOSTS}
    assert len(tokens) == 3
    for host in HOSTS:
        token = insert.token("horizon", host)
        assert host.encode() not in token and b"10.0" not in token
        assert insert.host_for(token, "horizon", HOSTS) == host
    assert insert.host_for(b"forged-token-forged-toke", "horizon", HOSTS) is None
    assert insert.host_for(insert.token("other-group", HOSTS[0]), "horizon", HOSTS) is None
    assert InsertCookie(insert_secret("another key")).host_for(insert.token("horizon", HOSTS[0]),
                                                               "horizon", HOSTS) is None


def test_insert_cookie_header_has_the_safe_attributes():
    name, value = InsertCookie(SECRET).set_cookie("horizon", HOSTS[1])
    assert name == b"Set-Cookie" and value.startswith(b"VIEWLBSRV=")
    assert value.endswith(b"; Path=/; Secure; HttpOnly")


def test_a_short_secret_is_refused():
    with pytest.raises(ValueError):
        InsertCookie(b"short")


def test_insert_mode_pins_known_tokens_and_sets_the_cookie_otherwise():
    l7 = policy("cookie_insert")
    first = l7.route([(b"Host", b"a")], "ip:192.0.2.1", HOSTS)
    assert first.pinned is None and first.keys == ()
    learned = l7.learn(first, [], HOSTS[2])
    [(name, value)] = learned.add_headers
    token = value.split(b";")[0].split(b"=", 1)[1]
    later = l7.route([(b"Cookie", b"VIEWLBSRV=" + token)], "ip:192.0.2.1", HOSTS)
    assert later.pinned == HOSTS[2]
    assert l7.learn(later, [], HOSTS[2]) == Learn()  # already right: no new Set-Cookie
    moved = l7.learn(later, [], HOSTS[0])  # its server was down: the cookie follows the new one
    assert moved.add_headers and InsertCookie(SECRET).token("horizon", HOSTS[0]) in moved.add_headers[0][1]


def test_insert_mode_needs_the_secret():
    with pytest.raises(ValueError):
        L7Persistence(Persistence(method="cookie_insert"), "g")


# --- learn and fallback -------------------------------------------------------------------------


def test_learn_mode_without_a_cookie_is_balanced_then_learns_the_servers_cookie():
    l7 = policy("cookie_learn")
    route = l7.route([(b"Host", b"a")], "ip:192.0.2.1")
    assert route.keys == () and route.pinned is None  # the scheduler decides
    learned = l7.learn(route, [(b"Set-Cookie", b"JSESSIONID=S1; Path=/; Secure; HttpOnly")], HOSTS[1])
    assert learned.store == ((cookie_key(b"S1"), HOSTS[1]),) and not learned.add_headers
    again = l7.route([(b"Cookie", b"JSESSIONID=S1")], "ip:192.0.2.1")
    assert again.keys == (cookie_key(b"S1"),) and again.cookie == b"S1"


def test_learn_mode_never_stores_a_cookie_the_server_did_not_set():
    l7 = policy("cookie_learn")
    route = l7.route([(b"Cookie", b"JSESSIONID=invented")], "ip:192.0.2.1")
    assert l7.learn(route, [], HOSTS[0]) == Learn()


def test_a_logout_forgets_the_entry():
    l7 = policy("cookie_learn")
    route = l7.route([(b"Cookie", b"JSESSIONID=S1")], None)
    learned = l7.learn(route, [(b"Set-Cookie", b"JSESSIONID=S1; Max-Age=0")], HOSTS[0])
    assert learned.forget == (cookie_key(b"S1"),) and learned.store == ()


def test_a_custom_cookie_name_is_used():
    l7 = policy("cookie_learn", cookie_name="SESSION")
    assert l7.route([(b"Cookie", b"JSESSIONID=a; SESSION=b")], None).cookie == b"b"


def test_fallback_uses_the_source_ip_until_a_cookie_is_known():
    l7 = policy("cookie_source_ip")
    first = l7.route([(b"Host", b"a")], "ip:192.0.2.0")
    assert first.keys == ("ip:192.0.2.0",)
    learned = l7.learn(first, [(b"Set-Cookie", b"JSESSIONID=S9")], HOSTS[0], "ip:192.0.2.0")
    assert set(learned.store) == {(cookie_key(b"S9"), HOSTS[0]), ("ip:192.0.2.0", HOSTS[0])}
    later = l7.route([(b"Cookie", b"JSESSIONID=S9")], "ip:192.0.2.0")
    assert later.keys == (cookie_key(b"S9"), "ip:192.0.2.0")  # cookie first, address as a fallback
    # once the client has a cookie, its requests no longer move the address entry
    assert l7.learn(later, [], HOSTS[2], "ip:192.0.2.0").store == ()


def test_source_ip_and_none_at_layer_7():
    assert policy("source_ip").route([(b"Cookie", b"JSESSIONID=x")], "ip:a").keys == ("ip:a",)
    assert policy("source_ip").learn(policy("source_ip").route([], "ip:a"), [], "h", "ip:a").store == (("ip:a", "h"),)
    none = policy("none")
    assert none.route([(b"Cookie", b"JSESSIONID=x")], "ip:a").keys == ()
    assert none.learn(none.route([], "ip:a"), [(b"Set-Cookie", b"JSESSIONID=x")], "h", "ip:a") == Learn()


def test_fifty_clients_behind_one_address_get_fifty_keys():
    l7 = policy("cookie_learn")
    keys = {l7.route([(b"Cookie", b"JSESSIONID=%032x" % n)], "ip:198.51.100.1").keys for n in range(50)}
    assert len(keys) == 50
