"""NAT detection on the overview: many live connections from one client key on a layer-4 source-IP VIP warn,
with the three ways out (port group per UAG, N+1 VIPs, layer-7 cookie) linked to the prefilled wizard."""
import html as htmllib
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from monitoring.live import horizon, nat, overview, sources

from . import livedata

pytestmark = pytest.mark.django_db


def connections(count, vs="web-443", one_address=True):
    """`count` live connections on `vs`, from one address (different ports) or from as many addresses."""
    return [livedata.session("w1", n, vs=vs, client_ip="203.0.113.7" if one_address else f"10.3.0.{n + 1}")
            for n in range(count)]


def warnings_on(admin):
    page = admin.get(reverse("live:live_overview")).content.decode()
    return re.findall(r'<div class="verdict[^"]*nat-warning".*?</div>', page, re.S)


def test_25_connections_from_one_address_warn_with_the_three_prefilled_wizard_links(admin, redis_client, keys):
    livedata.publish(redis_client, keys, livedata.snapshot())
    livedata.add_sessions(redis_client, keys, "w1", connections(25) + [livedata.session("w1", 99)])
    found = warnings_on(admin)
    assert len(found) == 1
    warning = htmllib.unescape(found[0])
    assert 'data-vs="web-443"' in warning and "203.0.113.7" in warning
    assert "25 live connections from one address" in warning and "25 of its 26 connections" in warning
    assert "sends all of them to one server" in warning
    links = re.findall(r'<a class="button" href="([^"]+)">([^<]+)</a>', warning)
    assert [label for _, label in links] == [label for _, label in nat.METHODS]
    for (url, _), (method, _) in zip(links, nat.METHODS, strict=True):
        parts = urlsplit(url)
        assert parts.path == "/horizon/wizard/"
        assert parse_qs(parts.query) == {"reach": ["nat"], "method": [method], "vip": ["127.0.0.1"],
                                         "servers": ["10.0.0.1,10.0.0.2"]}
        wizard = admin.get(url)  # the wizard takes the prefill (an admin may open it)
        assert wizard.status_code == 200 and "10.0.0.2" in wizard.content.decode()


def test_25_clients_from_25_addresses_do_not_warn(admin, redis_client, keys):
    livedata.publish(redis_client, keys, livedata.snapshot())
    livedata.add_sessions(redis_client, keys, "w1", connections(25, one_address=False))
    assert warnings_on(admin) == []
    assert 'id="nat-warnings"' not in admin.get(reverse("live:live_overview")).content.decode()


def test_a_vip_without_source_ip_persistence_does_not_warn(admin, redis_client, keys):
    livedata.publish(redis_client, keys, livedata.snapshot())
    livedata.add_sessions(redis_client, keys, "w1", connections(25, vs="plain-80"))
    assert warnings_on(admin) == []


def test_the_threshold_is_a_setting(admin, redis_client, keys, settings):
    settings.VIEWLB_NAT_CONNECTIONS = 30
    livedata.publish(redis_client, keys, livedata.snapshot())
    livedata.add_sessions(redis_client, keys, "w1", connections(25))
    assert warnings_on(admin) == []


def test_the_overview_counts_and_warns_from_the_one_horizon_pass(redis_client, keys):
    livedata.publish(redis_client, keys, livedata.snapshot())
    livedata.add_sessions(redis_client, keys, "w1", connections(20))
    view = overview.build(redis_client, keys)
    assert view.sessions == 20 and len(view.nat_warnings) == 1
    assert [s.active for s in view.services if s.name == "web-443"] == [20]
    assert horizon.aggregate.peek(keys) is not None
    assert sources.session_totals.peek(keys) is None  # no second scan of the session hashes
