"""The Horizon setup wizard: the plan for each affinity method, what it creates, the checklist, the form's errors,
prefill by GET parameters, and who may use it. Fast: no browser (test_wizard_browser.py drives the pages)."""
import re

import pytest
import yaml
from django.urls import reverse

from balancer import services, wizard
from balancer.models import AuditEntry, HorizonSetup, PersistencePolicy, Pool, VirtualService

URL = "/horizon/wizard/"
SERVERS = (wizard.Server("uag1", "10.0.0.11"), wizard.Server("uag2", "10.0.0.12"))


def answers(**changes):
    values = dict(prefix="horizon", role="uag", servers=SERVERS, vip="10.0.0.1", version="horizon8", mode="tunnel",
                  reach="distinct", method="source_ip")
    values.update(changes)
    return wizard.Answers(**values)


def listening(plan_or_services):
    """{name: (address, port, protocol)} of planned services or VirtualService rows."""
    items = getattr(plan_or_services, "services", plan_or_services)
    return {s.name: (s.address, s.port, s.protocol) for s in items}


# --- the plan for each method --------------------------------------------------------------------


def test_it_plans_method_1_on_one_vip_with_standard_ports():
    plan = wizard.build_plan(answers())
    assert listening(plan) == {
        "horizon-https": ("10.0.0.1", 443, "tcp"),
        "horizon-blast-tcp": ("10.0.0.1", 8443, "tcp"), "horizon-blast-udp": ("10.0.0.1", 8443, "udp"),
        "horizon-pcoip-tcp": ("10.0.0.1", 4172, "tcp"), "horizon-pcoip-udp": ("10.0.0.1", 4172, "udp"),
    }
    assert {s.policy for s in plan.services} == {"horizon-source-ip"}
    assert [(p.name, [(s.address, s.port) for s in p.servers], p.checked) for p in plan.pools] == [
        ("horizon-https", [("10.0.0.11", 443), ("10.0.0.12", 443)], True),
        ("horizon-8443", [("10.0.0.11", 8443), ("10.0.0.12", 8443)], False),
        ("horizon-4172", [("10.0.0.11", 4172), ("10.0.0.12", 4172)], False),
    ]
    assert plan.urls["uag2"] == {"tunnel": "https://10.0.0.1:443", "blast": "https://10.0.0.1:8443",
                                 "pcoip": "10.0.0.1:4172"}
    assert plan.warnings == []


def test_it_plans_method_2_with_a_port_group_per_uag():
    plan = wizard.build_plan(answers(method="port_group", public_name="horizon.example.com"))
    ports = listening(plan)
    assert ports["horizon-https"] == ("10.0.0.1", 443, "tcp")
    assert ports["horizon-uag1-tunnel"] == ("10.0.0.1", 10143, "tcp")  # tunnel and Blast TCP share a UAG's 443
    assert ports["horizon-uag1-blast-udp"] == ("10.0.0.1", 10143, "udp")
    assert ports["horizon-uag1-pcoip-tcp"] == ("10.0.0.1", 10172, "tcp")
    assert ports["horizon-uag2-pcoip-udp"] == ("10.0.0.1", 10272, "udp")
    assert len(ports) == 9
    pools = {p.name: [(s.address, s.port) for s in p.servers] for p in plan.pools}
    assert pools["horizon-uag2-https"] == [("10.0.0.12", 443)]
    assert pools["horizon-uag2-8443"] == [("10.0.0.12", 8443)]
    assert pools["horizon-uag1-4172"] == [("10.0.0.11", 4172)]
    assert plan.urls["uag2"] == {"tunnel": "https://horizon.example.com:10243",
                                 "blast": "https://horizon.example.com:10243", "pcoip": "10.0.0.1:10272"}


def test_a_connection_servers_blast_gateway_gets_its_own_port_pair():
    plan = wizard.build_plan(answers(role="connection_server", method="port_group"))
    ports = listening(plan)
    assert ports["horizon-uag1-blast-tcp"] == ("10.0.0.1", 10144, "tcp")
    assert ports["horizon-uag1-blast-udp"] == ("10.0.0.1", 10144, "udp")
    assert plan.urls["uag1"]["blast"] == "https://10.0.0.1:10144"


def test_it_plans_method_3_with_one_vip_per_uag():
    plan = wizard.build_plan(answers(method="n_plus_one", extra_vips=("10.0.0.21", "10.0.0.22")))
    ports = listening(plan)
    assert ports["horizon-https"] == ("10.0.0.1", 443, "tcp")
    assert {v for k, v in ports.items() if k.startswith("horizon-uag2-")} == {
        ("10.0.0.22", 443, "tcp"), ("10.0.0.22", 8443, "tcp"), ("10.0.0.22", 8443, "udp"),
        ("10.0.0.22", 4172, "tcp"), ("10.0.0.22", 4172, "udp"),
    }
    assert plan.urls["uag1"] == {"tunnel": "https://10.0.0.21:443", "blast": "https://10.0.0.21:8443",
                                 "pcoip": "10.0.0.21:4172"}


def test_it_plans_the_cookie_on_layer_7_and_blast_and_pcoip_per_uag():
    plan = wizard.build_plan(answers(method="cookie", extra_vips=("10.0.0.21", "10.0.0.22"), certificate="generate"))
    balanced = plan.services[0]
    assert (balanced.name, balanced.layer7, balanced.policy) == ("horizon-https", True, "horizon-jsessionid")
    assert [p["method"] for p in plan.policies] == ["source_ip", "cookie_source_ip"]
    assert not any(s.channel == "tunnel" for s in plan.services)  # the tunnel follows the cookie on 443
    assert listening(plan)["horizon-uag2-blast-udp"] == ("10.0.0.22", 8443, "udp")
    assert plan.urls["uag2"] == {"tunnel": "https://10.0.0.1:443", "blast": "https://10.0.0.22:8443",
                                 "pcoip": "10.0.0.22:4172"}
    assert plan.certificate == "horizon-self-signed" and plan.generate_certificate


@pytest.mark.parametrize("version, persistence, idle, ports", [
    ("view5", 3600, 3600, {443, 4172}),  # KB 1032661: at least 300 s; the article's hour; no Blast yet
    ("horizon7", 5400, 5400, {443, 8443, 4172}),
    ("horizon8", 5400, 5400, {443, 8443, 4172}),  # KB 56636: about 90 minutes
])
def test_the_version_sets_timeouts_and_ports(version, persistence, idle, ports):
    plan = wizard.build_plan(answers(version=version))
    assert {p["timeout"] for p in plan.policies} == {persistence}
    assert plan.answers.rules.idle_timeout == idle
    assert {s.port for s in plan.services} == ports


def test_direct_mode_balances_the_articles_bypass_ports_for_connection_servers():
    plan = wizard.build_plan(answers(role="connection_server", mode="direct", version="view5"))
    assert {(s.port, s.protocol) for s in plan.services} == {(443, "tcp"), (3389, "tcp"), (32111, "tcp"),
                                                            (9427, "tcp")}
    assert plan.urls == {}


def test_the_health_check_is_vmwares():
    check = wizard.build_plan(answers()).check
    assert check == {"name": "horizon-favicon", "type": "https", "method": "GET", "path": "/favicon.ico",
                     "expect_up": "200", "expect_drain": "503", "verify_certificate": False, "interval": 30.0,
                     "timeout": 5.0, "rise": 2, "fall": 2}


def test_nat_with_source_ip_affinity_is_warned_about():
    plan = wizard.build_plan(answers(reach="nat"))
    assert "one NAT address" in plan.warnings[0]
    assert wizard.build_plan(answers(reach="nat", method="port_group")).warnings == []


@pytest.mark.parametrize("changes, field, words", [
    ({"servers": SERVERS[:1]}, "servers", "at least 2 servers"),
    ({"servers": (SERVERS[0], wizard.Server("uag2", "10.0.0.11"))}, "servers", "share the address 10.0.0.11"),
    ({"servers": (SERVERS[0], wizard.Server("uag1", "10.0.0.12"))}, "servers", "'uag1' appears twice"),
    ({"method": "cookie", "extra_vips": ("10.0.0.21", "10.0.0.22")}, "certificate", "choose a certificate"),
    ({"method": "n_plus_one", "extra_vips": ("10.0.0.21",)}, "extra_vips", "one extra VIP address per server"),
    ({"method": "n_plus_one", "extra_vips": ("10.0.0.21", "10.0.0.1")}, "extra_vips", "the balanced VIP"),
    ({"mode": "direct"}, "mode", "only for internal Connection Servers"),
    ({"mode": "direct", "role": "connection_server", "method": "port_group"}, "method", "only tunnel mode"),
    ({"prefix": "my horizon"}, "prefix", "letters, digits"),
])
def test_answers_that_cannot_work_name_the_field(changes, field, words):
    with pytest.raises(wizard.WizardError) as caught:
        wizard.build_plan(answers(**changes))
    assert words in " ".join(caught.value.errors[field])


def test_bad_server_lines_are_named_each():
    with pytest.raises(wizard.WizardError) as caught:
        wizard.parse_servers("uag1 10.0.0.11\nuag2 10.0.0.300\n\n# a comment\nuag3\nuag4 10.0.0.14 70000\n")
    assert caught.value.errors["servers"] == [
        "line 2 ('uag2 10.0.0.300'): '10.0.0.300' is not an IPv4 or IPv6 address",
        "line 5 ('uag3'): write 'name address' or 'name address port'",
        "line 6 ('uag4 10.0.0.14 70000'): the port '70000' must be a number from 1 to 65535",
    ]
    assert wizard.parse_servers("uag1 10.0.0.11 9443\ncs2 fd00::0:12") == [
        wizard.Server("uag1", "10.0.0.11", 9443), wizard.Server("cs2", "fd00::12", 443)]


# --- creating it -----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("method, extra", [
    ("source_ip", ()), ("port_group", ()), ("n_plus_one", ("10.0.0.21", "10.0.0.22")),
    ("cookie", ("10.0.0.21", "10.0.0.22")),
])
def test_it_creates_ordinary_configuration_that_compiles_and_exports(method, extra, admin_user):
    plan = wizard.build_plan(answers(method=method, extra_vips=extra,
                                     certificate="generate" if method == "cookie" else ""))
    setup = wizard.create_setup(plan, admin_user, "/apply/")

    rows = VirtualService.objects.select_related("pool", "persistence")
    assert listening(rows) == listening(plan)
    assert {vs.persistence_group for vs in rows} == {"horizon"}
    assert {vs.idle_timeout for vs in rows} == {5400.0}
    assert {vs.persistence.timeout for vs in rows} == {5400}
    https = rows.get(name="horizon-https")
    assert https.pool.health_check.path == "/favicon.ico"
    assert (https.mode, https.persistence.method) == (
        ("l7", "cookie_source_ip") if method == "cookie" else ("l4", "source_ip"))
    snapshot = services.compile_snapshot()
    assert {vs.name for vs in snapshot.virtual_services} == set(listening(plan))
    assert {vs.group for vs in snapshot.virtual_services} == {"horizon"}
    exported = yaml.safe_load(services.export_config())
    assert {vs["name"] for vs in exported["virtual_services"]} == set(listening(plan))
    assert {(c["name"], c["interval"], c["expect_drain"][0]) for c in exported["health_checks"]} == {
        ("horizon-favicon", 30.0, 503)}

    assert len(setup.created_objects) == AuditEntry.objects.filter(details__wizard="horizon").count()
    assert AuditEntry.objects.filter(object_type="horizon setup").count() == 1
    assert setup.answers["method"] == method
    titles = [section["title"] for section in setup.checklist]
    assert titles[:2] == ["UAG / Security Server uag1 (10.0.0.11)", "UAG / Security Server uag2 (10.0.0.12)"]
    assert titles[-1] == "Apply the configuration" and setup.checklist[-1]["items"][0]["link"] == "/apply/"
    uag2 = " ".join(item["text"] for item in setup.checklist[1]["items"])
    for url in plan.urls["uag2"].values():
        assert url in uag2


@pytest.mark.django_db
def test_a_name_clash_refuses_naming_the_object_and_a_new_prefix_works(admin_user):
    PersistencePolicy.objects.create(name="horizon-source-ip")
    with pytest.raises(wizard.WizardError) as caught:
        wizard.create_setup(wizard.build_plan(answers()), admin_user, "/apply/")
    assert caught.value.errors["prefix"] == [
        "a persistence policy named 'horizon-source-ip' exists already; choose another name prefix"]
    assert not Pool.objects.exists()
    wizard.create_setup(wizard.build_plan(answers(prefix="view")), admin_user, "/apply/")
    assert VirtualService.objects.filter(name="view-https").exists()


@pytest.mark.django_db
def test_a_vip_another_service_listens_on_is_refused_and_nothing_is_created(admin_user, horizon):
    existing = horizon["vip"]
    plan = wizard.build_plan(answers(prefix="second", vip=existing.address, version="view5"))
    plan.services[0].port = existing.port  # the other service's port
    with pytest.raises(wizard.WizardError) as caught:
        wizard.create_setup(plan, admin_user, "/apply/")
    assert "virtual service 'second-https': port: virtual service 'horizon-443' already listens" in str(caught.value)
    assert not Pool.objects.filter(name__startswith="second").exists()
    assert not HorizonSetup.objects.exists()


# --- the pages -------------------------------------------------------------------------------------


def form_data(**changes):
    data = {"prefix": "horizon", "role": "uag", "servers": "uag1 10.0.0.11\nuag2 10.0.0.12", "vip": "10.0.0.1",
            "public_name": "", "version": "horizon8", "mode": "tunnel", "reach": "distinct", "method": "source_ip",
            "extra_vips": "", "certificate": "", "action": "create"}
    data.update(changes)
    return data


@pytest.mark.django_db
def test_it_creates_and_ends_on_the_checklist(admin_client):
    response = admin_client.post(URL, form_data(public_name="horizon.example.com"))
    setup = HorizonSetup.objects.get()
    assert response.status_code == 302 and response["Location"] == setup.get_absolute_url()
    page = admin_client.get(setup.get_absolute_url()).content.decode()
    assert "Tunnel (HTTP(S) Secure Tunnel) External URL: https://horizon.example.com:443" in page
    assert f'href="{reverse("balancer:apply")}"' in page and "published nothing" in page
    assert setup.get_absolute_url() in admin_client.get("/horizon/").content.decode()


@pytest.mark.django_db
def test_preview_shows_the_plan_and_creates_nothing(admin_client):
    page = admin_client.post(URL, form_data(action="preview", method="port_group")).content.decode()
    assert "horizon-uag2-pcoip-udp" in page and "10272/udp" in page
    assert not VirtualService.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("changes, field, words", [
    ({"servers": "uag1 10.0.0.11\nuag2 10.0.0.x"}, "servers", "line 2 (&#x27;uag2 10.0.0.x&#x27;)"),
    ({"servers": "uag1 10.0.0.11\nuag2 10.0.0.11"}, "servers", "share the address 10.0.0.11"),
    ({"method": "cookie", "extra_vips": "10.0.0.21\n10.0.0.22"}, "certificate", "choose a certificate"),
    ({"method": "n_plus_one", "extra_vips": "10.0.0.21 nonsense"}, "extra_vips", "&#x27;nonsense&#x27; is not"),
])
def test_form_errors_name_the_field_and_keep_the_answers(admin_client, changes, field, words):
    response = admin_client.post(URL, form_data(**changes))
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert list(errors) == [field]
    page = response.content.decode()
    assert words in page and "Nothing created." in page
    assert "10.0.0.11" in page  # the servers textarea keeps what was typed
    assert not VirtualService.objects.exists()


@pytest.mark.django_db
def test_get_parameters_prefill_the_form(admin_client):
    query = "?reach=nat&method=n_plus_one&vip=192.0.2.10&servers=10.0.0.11,10.0.0.12&role=connection_server"
    form = admin_client.get(URL + query).context["form"]
    assert form.initial == {"reach": "nat", "method": "n_plus_one", "vip": "192.0.2.10",
                            "role": "connection_server", "servers": "cs1 10.0.0.11\ncs2 10.0.0.12"}
    page = admin_client.get(URL + query).content.decode()
    assert re.search(r'<input type="radio" name="method" value="n_plus_one"[^>]* checked', page)
    assert re.search(r'<input type="radio" name="reach" value="nat"[^>]* checked', page)
    assert admin_client.get(URL + "?method=bogus").context["form"].initial == {}


@pytest.mark.django_db
def test_only_admins_use_the_wizard(client, viewer_user, operator_user):
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    for user in (viewer_user, operator_user):
        client.force_login(user)
        assert client.get(URL).status_code == 403
        assert client.post(URL, form_data()).status_code == 403
        assert client.get("/horizon/").status_code == 200  # the checklists are for everyone to read
    assert not VirtualService.objects.exists()


@pytest.mark.django_db
def test_the_nav_and_the_service_list_link_to_it(admin_client):
    page = admin_client.get(reverse("balancer:service_list")).content.decode()
    assert page.count(f'href="{URL}"') == 1 and 'href="/horizon/"' in page
