"""The Horizon-sessions page over worker state written into Redis in the workers' own format: one row per
(persistence group, client key) across VIPs and workers, filters and pages, and kill / move for operators
(persistence entry, control message, audit), refused for viewers."""
import json
import re
import time

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from balancer.models import AuditEntry
from monitoring.live import control, horizon

from . import livedata

pytestmark = pytest.mark.django_db

PAGE = "live:live_horizon_sessions"


def user_client(client, django_user_model, role: str):
    if role == "admin":
        user = django_user_model.objects.create_superuser(f"{role}-user", password=None)
    else:
        user = django_user_model.objects.create_user(f"{role}-user", password=None)
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    client.force_login(user)
    return client


@pytest.fixture
def operator(client, django_user_model):
    return user_client(client, django_user_model, "operator")


def horizon_user(worker, n, ip, server="s1", group="uag"):
    """One Horizon user's connections: two on 443/tcp (XML API, tunnel) and one Blast flow on 8443/udp."""
    return [
        livedata.session(worker, n, server=f"uag443/{server}", vs="uag-443", client_ip=ip, port=443, group=group),
        livedata.session(worker, n + 1, server=f"uag443/{server}", vs="uag-443", client_ip=ip, port=443,
                         group=group, opened_ago=10),
        livedata.session(worker, n + 2, server=f"uag8443/{server}", vs="uag-blast-udp", client_ip=ip, port=8443,
                         protocol="udp", group=group, server_port=8443, opened_ago=5),
    ]


def rows(html):
    table = html[html.index('id="horizon"'):]
    return re.findall(r"<tr data-group=.*?</tr>", table[:table.index("</table>")], re.S)


def test_it_folds_a_users_tcp_and_udp_connections_of_every_worker_into_one_row():
    sessions = horizon_user("w1", 1, "10.1.0.5")
    sessions[2]["id"] = "w2:3"  # the UDP flow landed on another worker
    old_worker = livedata.session("w1", 9, server="uag443/s1", vs="uag-443", client_ip="10.1.0.5", port=443)
    texts = [livedata.compact(s) for s in [*sessions, old_worker]] + ["not json", "[1]"]
    agg = horizon.fold(texts, groups={"uag-443": "uag", "uag-blast-udp": "uag"}, now=1000.0)
    assert len(agg.rows) == 1  # the session without "group" (an older worker) joined by its VIP's group
    row = agg.rows[0]
    assert (row.group, row.client_key, row.connections) == ("uag", "10.1.0.5", 4)
    assert row.channels == {(443, "tcp", "uag-443"): 3, (8443, "udp", "uag-blast-udp"): 1}
    assert row.hosts == ["10.0.0.1"] and set(row.servers) == {"uag443/s1", "uag8443/s1"}
    assert row.bytes_in == sum(1000 + n for n in (1, 2, 3, 9))
    assert row.opened_at == min(s["opened_at"] for s in sessions)
    assert agg.totals.by_vs == {"uag-443": 3, "uag-blast-udp": 1} and agg.totals.total == 4


def test_the_page_shows_one_row_per_user_with_its_channels(operator, redis_client, keys):
    livedata.publish(redis_client, keys, livedata.horizon_snapshot())
    livedata.add_sessions(redis_client, keys, "w1", horizon_user("w1", 1, "10.1.0.5")
                          + horizon_user("w1", 10, "10.1.0.6", server="s2"))
    livedata.add_sessions(redis_client, keys, "w2", [
        livedata.session("w2", 1, server="uag443/s1", vs="plain-80", client_ip="10.1.0.5", port=80)])
    html = operator.get(reverse(PAGE)).content.decode()
    found = rows(html)
    assert len(found) == 3  # two users in group uag, and the plain VIP's own group
    alice = next(r for r in found if 'data-group="uag" data-client-key="10.1.0.5"' in r)
    assert "443/tcp" in alice and "8443/udp" in alice and "uag-blast-udp" in alice and "×2" in alice
    assert re.search(r'data-field="connections">3<', alice)
    assert "10.0.0.1" in alice and "uag443/s1" in alice and "10.1.0.5" in alice
    assert re.search(r'data-field="age">30 s<', alice)
    assert "Kill session" in alice and "Move to another server" in alice
    plain = next(r for r in found if 'data-group="plain-80"' in r)
    assert "Kill session" in plain and "Move to another server" not in plain  # no persistence: nowhere to move
    assert "3</strong> Horizon sessions" in html and "7</strong> live connections" in html
    assert 'href="/live/horizon/"' in html  # the main navigation links the page


def test_it_filters_by_client_server_vip_and_group_and_pages(operator, redis_client, keys):
    livedata.publish(redis_client, keys, livedata.horizon_snapshot())
    users = [s for i in range(60) for s in horizon_user("w1", 10 * i, f"10.2.0.{i + 1}", server=f"s{1 + i % 2}")]
    livedata.add_sessions(redis_client, keys, "w1", users)

    def keys_of(params):
        html = operator.get(reverse(PAGE), params).content.decode()
        return [re.search(r'data-client-key="([^"]+)"', r).group(1) for r in rows(html)], html

    first, html = keys_of({})
    assert len(first) == horizon.PAGE_SIZE and "Page 1 of 2" in html and "page=2" in html
    second, _ = keys_of({"page": 2})
    assert len(second) == 10 and not set(first) & set(second)
    assert keys_of({"client": "10.2.0.1"})[0] == ["10.2.0.1"] + [f"10.2.0.{n}" for n in range(10, 20)]
    on_s2, _ = keys_of({"server": "uag8443/s2", "page": 1})
    assert len(on_s2) == 30 and "10.2.0.2" in on_s2 and "10.2.0.1" not in on_s2
    assert len(keys_of({"vs": "uag-blast-udp"})[0]) == 50 and keys_of({"vs": "plain-80"})[0] == []
    assert keys_of({"group": "plain-80"})[0] == [] and len(keys_of({"group": "uag", "page": 2})[0]) == 10
    bad = operator.get(reverse(PAGE), {"server": "nope/none"}).content.decode()
    assert "The filter was not applied" in bad and "server:" in bad


def test_viewers_see_no_buttons_and_may_not_kill_or_move(client, django_user_model, redis_client, keys):
    livedata.publish(redis_client, keys, livedata.horizon_snapshot())
    livedata.add_sessions(redis_client, keys, "w1", horizon_user("w1", 1, "10.1.0.5"))
    livedata.add_persistence(redis_client, keys, "uag", {"10.1.0.5": "10.0.0.1"})
    viewer = user_client(client, django_user_model, "viewer")
    html = viewer.get(reverse(PAGE)).content.decode()
    assert len(rows(html)) == 1 and "Kill session" not in html and "Move to another" not in html
    for name in ("live:live_horizon_kill", "live:live_horizon_move"):
        assert viewer.post(reverse(name), {"group": "uag", "client_key": "10.1.0.5"}).status_code == 403
    assert redis_client.get(keys.persist("uag", "10.1.0.5")) == "10.0.0.1"
    assert not AuditEntry.objects.filter(action__in=["kill", "move"]).exists()


@pytest.mark.parametrize("name", ["live:live_horizon_sessions", "live:live_horizon_kill", "live:live_horizon_move"])
def test_anonymous_users_are_sent_to_the_login(client, name):
    for response in (client.get(reverse(name)), client.post(reverse(name), {"group": "uag", "client_key": "x"})):
        assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_kill_and_move_need_a_post_with_csrf(django_user_model, redis_client, keys):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(django_user_model.objects.create_superuser("strict", password=None))
    livedata.add_persistence(redis_client, keys, "uag", {"10.1.0.5": "10.0.0.1"})
    assert strict.get(reverse("live:live_horizon_kill")).status_code == 405
    assert strict.post(reverse("live:live_horizon_kill"), {"group": "uag", "client_key": "10.1.0.5"}).status_code == 403
    assert redis_client.get(keys.persist("uag", "10.1.0.5")) == "10.0.0.1"


class ControlListener:
    """A subscriber on Keys.control, standing in for the workers: what did the console publish?"""

    def __init__(self, redis_client, keys):
        self.pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(keys.control)

    def messages(self, timeout=2.0):
        found, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.1)
            if message:
                found.append(json.loads(message["data"]))
            elif found:
                break
        self.pubsub.close()
        return found


def test_an_operator_kills_a_session(operator, redis_client, keys):
    livedata.publish(redis_client, keys, livedata.horizon_snapshot())
    livedata.add_sessions(redis_client, keys, "w1", horizon_user("w1", 1, "10.1.0.5"))
    livedata.add_persistence(redis_client, keys, "uag", {"10.1.0.5": "10.0.0.1", "10.1.0.6": "10.0.0.1"})
    listener = ControlListener(redis_client, keys)
    response = operator.post(reverse("live:live_horizon_kill"),
                             {"group": "uag", "client_key": "10.1.0.5", "next": "/live/horizon/?client=10.1."},
                             follow=True)
    assert response.redirect_chain[-1][0] == "/live/horizon/?client=10.1."
    assert "Killed the session of 10.1.0.5 (group uag)" in response.content.decode()
    assert redis_client.get(keys.persist("uag", "10.1.0.5")) is None
    assert redis_client.get(keys.persist("uag", "10.1.0.6")) == "10.0.0.1"  # nobody else's
    assert listener.messages() == [{"type": "session.kill", "group": "uag", "client_key": "10.1.0.5",
                                    "by": "operator-user"}]
    entry = AuditEntry.objects.get(action="kill")
    assert entry.username == "operator-user" and entry.details["group"] == "uag"
    assert entry.details["client_key"] == "10.1.0.5" and entry.details["changes"] == {"server host": ["10.0.0.1", None]}
    audit = operator.get(reverse("balancer:audit")).content.decode()
    assert "session uag 10.1.0.5" in audit and "10.0.0.1 → —" in audit


def test_an_operator_moves_a_session_to_the_other_server(operator, redis_client, keys):
    livedata.publish(redis_client, keys, livedata.horizon_snapshot())
    livedata.add_sessions(redis_client, keys, "w1", horizon_user("w1", 1, "10.1.0.5"))
    livedata.add_persistence(redis_client, keys, "uag", {"10.1.0.5": "10.0.0.1"})
    listener = ControlListener(redis_client, keys)
    response = operator.post(reverse("live:live_horizon_move"), {"group": "uag", "client_key": "10.1.0.5"},
                             follow=True)
    assert "Moved 10.1.0.5 (group uag) from 10.0.0.1 to 10.0.0.2" in response.content.decode()
    assert redis_client.get(keys.persist("uag", "10.1.0.5")) == "10.0.0.2"
    assert 5300 < redis_client.ttl(keys.persist("uag", "10.1.0.5")) <= 5400  # the group's persistence timeout
    assert listener.messages()[0]["client_key"] == "10.1.0.5"
    entry = AuditEntry.objects.get(action="move")
    assert entry.details["changes"] == {"server host": ["10.0.0.1", "10.0.0.2"]}
    assert entry.details["group"] == "uag" and entry.username == "operator-user"


def test_a_move_is_refused_when_no_other_server_can_take_the_client(operator, redis_client, keys):
    livedata.publish(redis_client, keys, livedata.horizon_snapshot())
    livedata.add_persistence(redis_client, keys, "uag", {"10.1.0.5": "10.0.0.1"})
    redis_client.hset(keys.health, "uag443/s2", "down")
    listener = ControlListener(redis_client, keys)
    html = operator.post(reverse("live:live_horizon_move"), {"group": "uag", "client_key": "10.1.0.5"},
                         follow=True).content.decode()
    assert "No other server can take this client: uag443/s2 is down, uag8443/s2 is up." in html
    assert redis_client.get(keys.persist("uag", "10.1.0.5")) == "10.0.0.1"
    assert listener.messages(timeout=0.5) == [] and not AuditEntry.objects.filter(action="move").exists()
    html = operator.post(reverse("live:live_horizon_move"), {"group": "plain-80", "client_key": "10.1.0.5"},
                         follow=True).content.decode()
    assert "uses no persistence" in html
    html = operator.post(reverse("live:live_horizon_move"), {"group": "a:b", "client_key": ""},
                         follow=True).content.decode()
    assert "Nothing was done: group:" in html and "client key:" in html


def test_a_move_prefers_a_primary_over_a_backup_and_takes_a_backup_when_no_primary_is_left(redis_client, keys):
    snap = livedata.horizon_snapshot(backup_s3=True)
    states = control.states_from_redis(redis_client, keys)
    pools = ["uag443", "uag8443"]
    assert control.choose_host(snap, states, pools, {"10.0.0.1"}) == "10.0.0.2"
    redis_client.hset(keys.admin, "uag8443/s2", "drain")  # one port of s2 drains: s2 cannot take all ports
    states = control.states_from_redis(redis_client, keys)
    assert control.choose_host(snap, states, pools, {"10.0.0.1"}) == "10.0.0.3"
    redis_client.hset(keys.health, "uag443/s3", "down")
    states = control.states_from_redis(redis_client, keys)
    assert control.choose_host(snap, states, pools, {"10.0.0.1"}) is None
