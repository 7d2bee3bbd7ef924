"""The trace explanation, without sockets or Redis: the worker's rules, narrated."""
import itertools
import json

import pytest

from proxyworker.config import Persistence, Pool, RealServer, Snapshot, VirtualService
from proxyworker.explain import Entry, explain, lookups
from proxyworker.l7.cookies import InsertCookie, cookie_key, insert_secret
from proxyworker.state import ServerStates

CERT_KEY = "trace-test-cert-key-0123456789abcdef"


def srv(name, host, **options):
    return RealServer(id=f"web/{name}", name=name, address=host, port=443, **options)


A, B, C = srv("a", "10.0.0.1"), srv("b", "10.0.0.2"), srv("c", "10.0.0.3")


def snapshot(*services, servers=(A, B, C)):
    return Snapshot(version=7, virtual_services=tuple(services), pools=(Pool("web", tuple(servers)),))


def vip(name="https", port=443, scheduler="round_robin", method="source_ip", mode="l4", **options):
    policy = Persistence(method=method, timeout=600, ipv4_mask=options.pop("ipv4_mask", 32),
                         ipv6_mask=options.pop("ipv6_mask", 128))
    return VirtualService(name=name, address="192.0.2.10", port=port, pool="web", scheduler=scheduler,
                          persistence=policy, mode=mode, **options)


def trace_one(snap, client="10.1.2.3", health=None, admin=None, entries=None, **options):
    result = explain(snap, client, health or {}, admin or {}, entries or {}, **options)
    assert not result.problem, result.problem
    assert len(result.services) == 1
    return result.services[0]


def texts(t):
    return " | ".join(reason.text for reason in t.reasons)


def test_refusal_says_why_exactly_when_accepts_new_says_no():
    states = ServerStates()
    healths = (None, "up", "drain", "down", "disabled")
    admins = (None, "enabled", "drain", "disabled")
    for i, (health, admin, snap_admin, weight, held) in enumerate(itertools.product(
            healths, admins, ("enabled", "drain", "disabled"), (0, 1), (False, True))):
        server = RealServer(id=f"p/s{i}", name=f"s{i}", address="10.0.0.1", port=1, weight=weight,
                            admin_state=snap_admin)
        states.update({server.id: health} if health else {}, {server.id: admin} if admin else {})
        if held:
            states.connect_failed(server.id, 100.0)
        refusal = states.refusal(server, 101.0)
        assert (refusal is None) == states.accepts_new(server, 101.0), (health, admin, snap_admin, weight, held)
        if refusal is not None and states.state(server) != "up":
            assert refusal == states.state(server)


def test_an_existing_entry_names_its_host_and_remaining_time():
    t = trace_one(snapshot(vip()), entries={("https", "10.1.2.3"): Entry("10.0.0.2", 412)})
    assert t.server == B and t.client_key == "10.1.2.3" and t.entry == Entry("10.0.0.2", 412)
    assert t.kinds() == ["persist_key", "persist_entry", "stuck"]
    assert "https:10.1.2.3 -> 10.0.0.2 (412 s left" in texts(t) and "web/b (10.0.0.2:443) is up" in texts(t)


def test_a_netmask_gives_a_whole_network_one_key():
    snap = snapshot(vip(ipv4_mask=24, ipv6_mask=64))
    assert lookups(snap, "10.1.2.3") == lookups(snap, "10.1.2.200") == [("https", "10.1.2.0/24")]
    assert lookups(snap, "2001:db8:1:2::5") == [("https", "2001:db8:1:2::/64")]
    assert lookups(snap, "::ffff:10.1.2.9") == [("https", "10.1.2.0/24")]  # IPv4-mapped counts as IPv4
    entries = {("https", "10.1.2.0/24"): Entry("10.0.0.3", 60)}
    for client in ("10.1.2.3", "10.1.2.200"):
        t = trace_one(snap, client, entries=entries)
        assert t.server == C and "every address in 10.1.2.0/24 shares this key" in texts(t)
    other = trace_one(snap, "10.1.3.1", entries=entries)
    assert other.client_key == "10.1.3.0/24" and other.entry is None and "persist_none" in other.kinds()


def test_a_stuck_server_in_drain_keeps_its_client():
    t = trace_one(snapshot(vip()), admin={"web/b": "drain"}, entries={("https", "10.1.2.3"): Entry("10.0.0.2", 30)})
    assert t.server == B and t.kinds()[-1] == "stuck_drain"
    assert "keeps the ones stuck to it" in texts(t)
    # health 503 (drain) does the same as the console's drain
    assert trace_one(snapshot(vip()), health={"web/b": "drain"},
                     entries={("https", "10.1.2.3"): Entry("10.0.0.2", 30)}).server == B


def test_a_stuck_server_that_is_down_is_re_pointed_and_the_alternatives_are_named():
    t = trace_one(snapshot(vip()), health={"web/b": "down"}, entries={("https", "10.1.2.3"): Entry("10.0.0.2", 30)})
    assert t.server is None and t.one_of == (A, C)
    assert "stuck_unusable" in t.kinds() and "re-pointed to one of web/a (10.0.0.1:443), web/c (10.0.0.3:443)" in texts(t)
    first = trace_one(snapshot(vip(scheduler="first_available")), health={"web/b": "down"},
                      entries={("https", "10.1.2.3"): Entry("10.0.0.2", 30)})
    assert first.server == A and "re-pointed to web/a" in texts(first)


def test_disabled_servers_get_no_clients_stuck_or_new():
    entries = {("https", "10.1.2.3"): Entry("10.0.0.1", 30)}
    t = trace_one(snapshot(vip(scheduler="first_available")), admin={"web/a": "disabled"}, entries=entries)
    assert t.server == B and t.kinds()[:3] == ["persist_key", "persist_entry", "stuck_unusable"]
    assert "is disabled by an administrator" in texts(t)
    # the snapshot's own admin state counts when the console's hash has no entry
    snap = snapshot(vip(scheduler="first_available"), servers=(srv("a", "10.0.0.1", admin_state="disabled"), B, C))
    assert trace_one(snap, entries=entries).server == B


def test_backups_only_when_no_primary_can_take_a_client():
    backup = srv("d", "10.0.0.4", backup=True)
    snap = snapshot(vip(method="none"), servers=(A, B, backup))
    t = trace_one(snap, health={"web/a": "down"})
    assert t.server == B and "skip_backup" in t.kinds() and "skip_down" in t.kinds()
    t = trace_one(snap, health={"web/a": "down"}, admin={"web/b": "drain"})
    assert t.server == backup and "backup_used" in t.kinds() and "skip_drain" in t.kinds()


def test_first_available_takes_the_first_usable_server_in_pool_order():
    snap = snapshot(vip(scheduler="first_available", method="none"))
    assert trace_one(snap).server == A
    t = trace_one(snap, health={"web/a": "down"})
    assert t.server == B and "first usable server in pool order" in texts(t)


def test_weight_zero_is_skipped_and_round_robin_names_every_candidate():
    snap = snapshot(vip(method="none"), servers=(A, srv("b", "10.0.0.2", weight=0), C))
    t = trace_one(snap)
    assert t.server is None and [s.name for s in t.one_of] == ["a", "c"]
    assert "skip_weight" in t.kinds() and "rotation is per worker" in texts(t)


def test_least_connections_names_the_least_loaded_server_from_the_live_counts():
    snap = snapshot(vip(scheduler="least_connections", method="none"))
    t = trace_one(snap, active={"web/a": 5, "web/b": 1, "web/c": 3})
    assert t.server == B and "web/a 5, web/b 1, web/c 3" in texts(t)
    tie = trace_one(snap, active={"web/a": 2, "web/b": 2, "web/c": 3})
    assert tie.one_of == (A, B)
    unknown = trace_one(snap)
    assert len(unknown.one_of) == 3 and "not known here" in texts(unknown)


def test_no_server_says_why_none():
    t = trace_one(snapshot(vip(method="none")), health={"web/a": "down", "web/b": "down", "web/c": "down"})
    assert t.server is None and not t.one_of and "connection would be refused" in t.why_none
    assert t.kinds() == ["no_persistence", "skip_down", "skip_down", "skip_down", "no_server"]


def test_an_entry_for_a_host_outside_the_pool_balances_and_leaves_the_entry():
    t = trace_one(snapshot(vip(scheduler="first_available")), entries={("https", "10.1.2.3"): Entry("10.9.9.9", 30)})
    assert t.server == A and "persist_foreign" in t.kinds()


def test_a_cookie_vip_looks_up_the_cookie_key():
    snap = snapshot(vip(name="portal", method="cookie_learn", mode="l7"))
    key = cookie_key(b"abc123")
    assert lookups(snap, "10.1.2.3", cookie="abc123") == [("portal", key)]
    assert lookups(snap, "10.1.2.3", cookie="other=1; JSESSIONID=abc123") == [("portal", key)]
    t = trace_one(snap, cookie="abc123", entries={("portal", key): Entry("10.0.0.3", 99)})
    assert t.server == C and t.client_key == key and t.kinds() == ["cookie_key", "persist_entry", "stuck"]
    unknown = trace_one(snap, cookie="nobody-set-this")
    assert "cookie_unknown" in unknown.kinds() and len(unknown.one_of) == 3
    down = trace_one(snap, cookie="abc123", health={"web/c": "down"}, entries={("portal", key): Entry("10.0.0.3", 99)})
    assert "cookie_unusable" in down.kinds() and down.one_of == (A, B)


def test_cookie_source_ip_falls_back_to_the_source_address():
    snap = snapshot(vip(name="portal", method="cookie_source_ip", mode="l7"))
    assert lookups(snap, "10.1.2.3") == [("portal", "10.1.2.3")]
    t = trace_one(snap, entries={("portal", "10.1.2.3"): Entry("10.0.0.1", 50)})
    assert t.server == A and t.kinds()[0] == "cookie_none"
    key = cookie_key(b"s1")
    both = {("portal", key): Entry("10.0.0.2", 50), ("portal", "10.1.2.3"): Entry("10.0.0.1", 50)}
    assert trace_one(snap, cookie="s1", entries=both).server == B  # the cookie comes first


def test_the_insert_cookie_names_its_host():
    snap = snapshot(vip(name="portal", method="cookie_insert", mode="l7"))
    token = InsertCookie(insert_secret(CERT_KEY)).token("portal", "10.0.0.3").decode()
    assert lookups(snap, "10.1.2.3", cookie=token, cert_key=CERT_KEY) == []  # no Redis: the cookie says it
    t = trace_one(snap, cookie=token, cert_key=CERT_KEY)
    assert t.server == C and t.kinds() == ["insert_cookie", "stuck"]
    forged = trace_one(snap, cookie="AAAAAAAAAAAAAAAAAAAAAAAA", cert_key=CERT_KEY)
    assert forged.kinds()[0] == "insert_none" and len(forged.one_of) == 3
    assert trace_one(snap, cookie=token).kinds()[0] == "insert_unreadable"


def test_vip_filter_disabled_vip_and_no_configuration():
    snap = snapshot(vip(), vip(name="blast", port=8443, protocol="udp", enabled=False, persistence_group="https"))
    both = explain(snap, "10.1.2.3", {}, {}, {})
    assert [t.vs.name for t in both.services] == ["https", "blast"] and both.version == 7
    assert both.service("blast").kinds() == ["vip_disabled"] and both.service("blast").server is None
    only = explain(snap, "10.1.2.3", {}, {}, {}, vs_name="https")
    assert [t.vs.name for t in only.services] == ["https"]
    assert lookups(snap, "10.1.2.3") == [("https", "10.1.2.3")] and lookups(snap, "10.1.2.3", vs_name="blast") == []
    assert "no virtual service 'nope'" in explain(snap, "10.1.2.3", {}, {}, {}, vs_name="nope").problem
    nothing = explain(None, "10.1.2.3", {}, {}, {})
    assert not nothing.services and "No configuration has been published yet" in nothing.problem


@pytest.mark.parametrize("scheduler", ["round_robin", "weighted_round_robin", "least_connections", "first_available"])
def test_the_result_is_plain_json(scheduler):
    t = explain(snapshot(vip(scheduler=scheduler)), "10.1.2.3", {"web/a": "down"}, {},
                {("https", "10.1.2.3"): Entry("10.0.0.1", 5)}, active={})
    data = json.loads(json.dumps(t.as_dict()))
    assert data["services"][0]["reasons"][2]["kind"] == "stuck_unusable"
    assert data["services"][0]["entry"] == {"host": "10.0.0.1", "ttl": 5}
