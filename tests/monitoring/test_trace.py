"""Trace a client: the console page and `viewlb trace`, on real Redis data, and against a real proxy worker."""
import io
import json

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.urls import reverse

from monitoring.live import sources
from proxyworker.config import Persistence, Pool, RealServer, Snapshot, VirtualService
from proxyworker.l7.cookies import cookie_key
from tests.backends import start_backend
from tests.conftest import free_port
from tests.proxyworker.harness import Harness, ask, pool, server, service, source_ip

pytestmark = pytest.mark.django_db

URL = "/monitoring/trace/"


def srv(name, host, **options):
    return RealServer(id=f"uag/{name}", name=name, address=host, port=9443, **options)


A, B, C = srv("a", "10.0.0.1"), srv("b", "10.0.0.2"), srv("c", "10.0.0.3")


def vip(name, port, scheduler="round_robin", method="source_ip", **options):
    policy = Persistence(method=method, timeout=5400, ipv4_mask=options.pop("ipv4_mask", 32))
    return VirtualService(name=name, address="192.0.2.10", port=port, pool="uag", scheduler=scheduler,
                          persistence=policy, **options)


@pytest.fixture
def redis_state(redis_client, keys):
    """The Redis a trace reads, under this process's prefix, emptied before and after."""

    def clean():
        redis_client.delete(keys.config, keys.health, keys.admin)
        for name in redis_client.scan_iter(match=keys.persist_pattern(), count=1000):
            redis_client.delete(name)
        for name in redis_client.scan_iter(match=keys.sessions("*"), count=1000):
            redis_client.delete(name)
        sources.session_totals.entries.pop(keys.prefix, None)  # the per-process count cache

    clean()
    yield redis_client
    clean()


@pytest.fixture
def running(redis_state, keys):
    """Publish a snapshot the way the control plane does (SET Keys.config)."""

    def publish(*services, servers=(A, B, C)):
        snapshot = Snapshot(version=41, virtual_services=tuple(services), pools=(Pool("uag", tuple(servers)),))
        redis_state.set(keys.config, snapshot.to_json())
        return snapshot

    return publish


@pytest.fixture
def viewer(client, django_user_model):
    user = django_user_model.objects.create_user("vera")
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)
    return client


def trace_page(browser, **params):
    response = browser.get(URL, params)
    assert response.status_code == 200
    return response.context["trace"], response.content.decode()


def test_it_requires_a_login(client):
    response = client.get(reverse("monitoring:trace"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_any_logged_in_user_gets_the_form_and_the_nav_link(viewer, running):
    running(vip("https", 443))
    response = viewer.get(URL)
    html = response.content.decode()
    assert response.context["trace"] is None and 'name="client"' in html
    assert f'href="{URL}" class="active">Trace</a>' in html
    assert '<option value="https">https</option>' in html


def test_a_bad_address_names_the_field_and_keeps_what_was_typed(viewer, running):
    running(vip("https", 443))
    trace, html = trace_page(viewer, client="10.1.2.300", cookie="abc")
    assert trace is None
    assert "Client address: &#x27;10.1.2.300&#x27; is not an IPv4 or IPv6 address" in html
    assert 'value="10.1.2.300"' in html and 'value="abc"' in html


def test_an_existing_entry_shows_its_host_and_remaining_time(viewer, running, redis_state, keys):
    running(vip("https", 443))
    redis_state.set(keys.persist("https", "10.1.2.3"), "10.0.0.2", ex=300)
    trace, html = trace_page(viewer, client="10.1.2.3")
    t = trace.service("https")
    assert t.server == B and 295 <= t.entry.ttl <= 300
    assert f"Would reach <strong>uag/b</strong> (10.0.0.2:9443), persistence {t.entry.ttl} s left." in html
    assert f"Persistence entry https:10.1.2.3 -&gt; 10.0.0.2 ({t.entry.ttl} s left" in html


def test_two_addresses_in_one_netmask_share_the_key_and_the_server(viewer, running, redis_state, keys):
    running(vip("https", 443, ipv4_mask=24))
    redis_state.set(keys.persist("https", "10.1.2.0/24"), "10.0.0.3", ex=600)
    first, _ = trace_page(viewer, client="10.1.2.3")
    second, html = trace_page(viewer, client="10.1.2.250")
    for trace in (first, second):
        assert trace.service("https").client_key == "10.1.2.0/24" and trace.service("https").server == C
    assert "every address in 10.1.2.0/24 shares this key" in html
    other, _ = trace_page(viewer, client="10.1.3.1")
    assert other.service("https").entry is None and "persist_none" in other.service("https").kinds()


def test_a_stuck_server_in_drain_is_still_used(viewer, running, redis_state, keys):
    running(vip("https", 443))
    redis_state.set(keys.persist("https", "10.1.2.3"), "10.0.0.1", ex=600)
    redis_state.hset(keys.admin, "uag/a", "drain")
    trace, html = trace_page(viewer, client="10.1.2.3")
    assert trace.service("https").server == A and trace.service("https").kinds()[-1] == "stuck_drain"
    assert "keeps the ones stuck to it, so this client stays" in html


def test_a_stuck_server_that_is_down_is_re_pointed_and_the_alternatives_named(viewer, running, redis_state, keys):
    running(vip("https", 443))
    redis_state.set(keys.persist("https", "10.1.2.3"), "10.0.0.1", ex=600)
    redis_state.hset(keys.health, "uag/a", "down")
    trace, html = trace_page(viewer, client="10.1.2.3")
    t = trace.service("https")
    assert t.server is None and t.one_of == (B, C) and "stuck_unusable" in t.kinds()
    assert "uag/a (10.0.0.1:9443) is down (health check): no traffic, so the client would be re-pointed" in html
    assert "The client would be re-pointed to one of uag/b (10.0.0.2:9443), uag/c (10.0.0.3:9443)." in html
    assert "Would reach one of <strong>uag/b</strong>, <strong>uag/c</strong>" in html
    redis_state.hset(keys.health, "uag/b", "down")  # one alternative left: named, without the old entry's time
    _, html = trace_page(viewer, client="10.1.2.3")
    assert "Would reach <strong>uag/c</strong> (10.0.0.3:9443)." in html


def test_a_disabled_server_is_skipped(viewer, running, redis_state, keys):
    running(vip("https", 443, scheduler="first_available", method="none"))
    redis_state.hset(keys.admin, "uag/a", "disabled")
    trace, html = trace_page(viewer, client="10.1.2.3")
    assert trace.service("https").server == B and "skip_disabled" in trace.service("https").kinds()
    assert "uag/a (10.0.0.1:9443) is disabled by an administrator" in html


def test_a_backup_only_when_no_primary_can_take_the_client(viewer, running, redis_state, keys):
    backup = srv("d", "10.0.0.4", backup=True)
    running(vip("https", 443, method="none"), servers=(A, B, backup))
    redis_state.hset(keys.health, "uag/a", "down")
    trace, _ = trace_page(viewer, client="10.1.2.3")
    assert trace.service("https").server == B and "skip_backup" in trace.service("https").kinds()
    redis_state.hset(keys.health, "uag/b", "down")
    trace, html = trace_page(viewer, client="10.1.2.3")
    assert trace.service("https").server == backup and "backup_used" in trace.service("https").kinds()
    assert "No primary server can take a new client, so the backups do." in html


def test_first_available_follows_pool_order(viewer, running, redis_state, keys):
    running(vip("https", 443, scheduler="first_available", method="none"))
    assert trace_page(viewer, client="10.1.2.3")[0].service("https").server == A
    redis_state.hset(keys.admin, "uag/a", "drain")
    trace, html = trace_page(viewer, client="10.1.2.3")
    assert trace.service("https").server == B and "first usable server in pool order" in html


def test_a_cookie_vip_uses_the_cookie_key(viewer, running, redis_state, keys):
    running(vip("portal", 443, method="cookie_learn", mode="l7"))
    key = cookie_key(b"0123ABCD")
    redis_state.set(keys.persist("portal", key), "10.0.0.3", ex=900)
    trace, html = trace_page(viewer, client="10.1.2.3", cookie="0123ABCD")
    t = trace.service("portal")
    assert t.server == C and t.client_key == key and t.kinds() == ["cookie_key", "persist_entry", "stuck"]
    assert f"The JSESSIONID cookie gives the key {key} in group portal." in html
    without, _ = trace_page(viewer, client="10.1.2.3")
    assert without.service("portal").kinds()[0] == "cookie_none" and len(without.service("portal").one_of) == 3


def test_least_connections_counts_the_live_connections_of_every_worker(viewer, running, redis_state, keys):
    running(vip("https", 443, scheduler="least_connections", method="none"))
    for worker, servers in (("w1", ["uag/a", "uag/a", "uag/c"]), ("w2", ["uag/a", "uag/b", "uag/b"])):
        for i, server_id in enumerate(servers):
            redis_state.hset(keys.sessions(worker), f"{worker}:{i}", json.dumps({"vs": "https", "server": server_id}, separators=(",", ":")))
    trace, html = trace_page(viewer, client="10.1.2.3")
    assert trace.service("https").server == C  # a 3, b 2, c 1
    assert "live connections over all workers: uag/a 3, uag/b 2, uag/c 1" in html


def test_the_vip_filter_traces_one_vip(viewer, running):
    running(vip("https", 443), vip("blast", 8443, protocol="udp", persistence_group="https"))
    both, _ = trace_page(viewer, client="10.1.2.3")
    assert [t.vs.name for t in both.services] == ["https", "blast"]
    one, html = trace_page(viewer, client="10.1.2.3", vs="blast")
    assert [t.vs.name for t in one.services] == ["blast"] and 'id="vip-https"' not in html
    _, html = trace_page(viewer, client="10.1.2.3", vs="nope")
    assert "VIP: Select a valid choice. nope is not one of the available choices." in html


def test_without_a_published_configuration_it_says_so(viewer, redis_state):
    trace, html = trace_page(viewer, client="10.1.2.3")
    assert "No configuration has been published yet" in trace.problem and html.count('id="trace-problem"') == 1
    with pytest.raises(CommandError, match="No configuration has been published yet"):
        call_command("viewlb", "trace", "10.1.2.3", stdout=io.StringIO())


def test_the_command_prints_the_same_explanation_as_text_and_json(running, redis_state, keys):
    running(vip("https", 443), vip("blast", 8443, protocol="udp", persistence_group="https"))
    redis_state.set(keys.persist("https", "10.1.2.3"), "10.0.0.2", ex=120)
    out = io.StringIO()
    call_command("viewlb", "trace", "10.1.2.3", "--vs", "blast", stdout=out)
    text = out.getvalue()
    assert "blast  192.0.2.10:8443/udp l4" in text and "  -> uag/b (10.0.0.2:9443)" in text
    assert "[persist_entry] Persistence entry https:10.1.2.3 -> 10.0.0.2" in text and "https  " not in text
    out = io.StringIO()
    call_command("viewlb", "trace", "10.1.2.3", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["version"] == 41 and [s["vs"] for s in data["services"]] == ["https", "blast"]
    assert all(s["server"]["id"] == "uag/b" for s in data["services"])
    with pytest.raises(CommandError, match="client: 'not-an-ip' is not an IPv4 or IPv6 address"):
        call_command("viewlb", "trace", "not-an-ip")
    with pytest.raises(CommandError, match="no virtual service 'nope'"):
        call_command("viewlb", "trace", "10.1.2.3", "--vs", "nope")


# --- against a real proxy worker ------------------------------------------------------


@pytest.fixture(scope="module")
def worker_stack(tmp_path_factory):
    harness = Harness("trace", tmp_path_factory.mktemp("trace"))
    backends = [start_backend(f"t{i}") for i in (1, 2, 3)]
    worker = harness.start_worker()
    yield harness, backends, worker
    assert worker.stop() == 0
    worker.assert_clean_log()
    harness.close()
    for backend in backends:
        backend.stop()


def traced(harness, settings, client_ip):
    settings.VIEWLB_REDIS_PREFIX = harness.prefix
    out = io.StringIO()
    call_command("viewlb", "trace", client_ip, "--json", stdout=out)
    service = json.loads(out.getvalue())["services"][0]
    return service, (service["server"] or {}).get("name")


def test_a_connection_through_the_worker_lands_where_the_trace_said(worker_stack, settings):
    harness, backends, worker = worker_stack
    port = free_port()
    servers = [server("xpool", backend) for backend in backends]
    vs = service("xvip", port, "xpool", scheduler="first_available", persistence=source_ip(ipv4_mask=24))
    harness.apply([vs], [pool("xpool", *servers)])

    harness.set_admin("xpool/t1", "drain")  # no entry yet: the scheduler, t1 skipped
    worker.wait_server_state("xpool/t1", "drain")
    explained, name = traced(harness, settings, "127.0.50.1")
    assert name == "t2" and "skip_drain" in [r["kind"] for r in explained["reasons"]]
    assert ask(port, source="127.0.50.1") == "t2"

    explained, name = traced(harness, settings, "127.0.50.77")  # same /24: the entry the worker just wrote
    assert name == "t2" and explained["entry"]["host"] == backends[1].host
    assert ask(port, source="127.0.50.77") == "t2"

    harness.set_health("xpool/t2", "down")  # its server is down: re-pointed, t1 still in drain
    worker.wait_server_state("xpool/t2", "down")
    explained, name = traced(harness, settings, "127.0.50.1")
    assert name == "t3" and "stuck_unusable" in [r["kind"] for r in explained["reasons"]]
    assert ask(port, source="127.0.50.1") == "t3"

    harness.redis.set(harness.keys.persist("xvip", "127.0.51.0/24"), backends[0].host, ex=600)
    explained, name = traced(harness, settings, "127.0.51.9")  # stuck to t1, in drain: stays
    assert name == "t1" and explained["reasons"][-1]["kind"] == "stuck_drain"
    assert ask(port, source="127.0.51.9") == "t1"
    assert 0 < harness.redis.ttl(harness.keys.persist("xvip", "127.0.51.0/24")) <= 600
