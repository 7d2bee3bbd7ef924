"""The Horizon setup wizard driven in a real Chromium against a live console: for each affinity method (and the
cookie) an administrator fills in the questions, looks at the plan, creates it and lands on the checklist; the
configuration it made has the VIPs, ports, persistence group, check and timeouts of HORIZON.md, compiles and
exports. Also: the prefill from the overview's NAT warning, a bad server line, and the login on the way in."""

import pytest
import yaml
from django.core.management import call_command
from playwright.sync_api import expect

from balancer import services
from balancer.models import HorizonSetup, VirtualService
from tests.balancer.conftest import PASSWORD, make_user
from tests.browser import chromium

# The live server answers from its own threads, so the data must be committed: transactional tests.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.xdist_group("wizard-browser")]


def put_back_roles():
    """A transactional test ends with a flush, which also empties the role groups of migration 0002 (the only
    data migration): put them back for the next test of this module."""
    from django.contrib.auth.models import Group

    from balancer.roles import ROLES

    for name in ROLES:
        Group.objects.get_or_create(name=name)


@pytest.fixture(scope="module", autouse=True)
def _roles_after_the_module(restore_migrated_data):
    """Later modules in this process find the migrated rows with their ids again (tests/conftest.py)."""


@pytest.fixture(scope="module")
def browser():
    with chromium() as started:
        yield started


@pytest.fixture
def wizard_page(browser, live_server, django_user_model):
    """open(query="") -> a page on the wizard, reached as an anonymous user through the login form."""
    put_back_roles()
    make_user(django_user_model, "alice", "admin")
    context = browser.new_context(viewport={"width": 1280, "height": 1000})

    def open_page(query=""):
        page = context.new_page()
        page.goto(f"{live_server.url}/horizon/wizard/{query}")
        expect(page).to_have_url(f"{live_server.url}/accounts/login/?next=/horizon/wizard/" + query.replace(
            "?", "%3F").replace("&", "%26").replace("=", "%3D").replace(",", "%2C"))
        page.fill("#id_username", "alice")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Horizon setup wizard")
        return page

    yield open_page
    context.close()


def fill(page, method, extra="", certificate=""):
    page.fill("#id_servers", "uag1 10.0.0.11\nuag2 10.0.0.12")
    page.fill("#id_vip", "10.0.0.1")
    page.fill("#id_public_name", "horizon.example.com")
    page.check("input[name=version][value=horizon8]")
    page.check(f"input[name=method][value={method}]")
    page.fill("#id_extra_vips", extra)
    page.select_option("#id_certificate", certificate)


# HORIZON.md / vendor guidance, per method: the VIPs (address, port, protocol) and the URLs on UAG 2.
EXPECTED = {
    "source_ip": ({
        ("10.0.0.1", 443, "tcp"), ("10.0.0.1", 8443, "tcp"), ("10.0.0.1", 8443, "udp"), ("10.0.0.1", 4172, "tcp"),
        ("10.0.0.1", 4172, "udp"),
    }, ["https://horizon.example.com:443", "https://horizon.example.com:8443", "10.0.0.1:4172"]),
    "port_group": ({
        ("10.0.0.1", 443, "tcp"), ("10.0.0.1", 10143, "tcp"), ("10.0.0.1", 10143, "udp"), ("10.0.0.1", 10172, "tcp"),
        ("10.0.0.1", 10172, "udp"), ("10.0.0.1", 10243, "tcp"), ("10.0.0.1", 10243, "udp"),
        ("10.0.0.1", 10272, "tcp"), ("10.0.0.1", 10272, "udp"),
    }, ["https://horizon.example.com:10243", "10.0.0.1:10272"]),
    "n_plus_one": ({("10.0.0.1", 443, "tcp")} | {
        (vip, port, proto) for vip in ("10.0.0.21", "10.0.0.22")
        for port, proto in ((443, "tcp"), (8443, "tcp"), (8443, "udp"), (4172, "tcp"), (4172, "udp"))
    }, ["https://10.0.0.22:443", "https://10.0.0.22:8443", "10.0.0.22:4172"]),
    "cookie": ({("10.0.0.1", 443, "tcp")} | {
        (vip, port, proto) for vip in ("10.0.0.21", "10.0.0.22")
        for port, proto in ((8443, "tcp"), (8443, "udp"), (4172, "tcp"), (4172, "udp"))
    }, ["https://horizon.example.com:443", "https://10.0.0.22:8443", "10.0.0.22:4172"]),
}


@pytest.mark.parametrize("method", list(EXPECTED))
def test_each_method_produces_the_horizon_configuration(wizard_page, method, capsys):
    page = wizard_page()
    per_server = method in ("n_plus_one", "cookie")
    fill(page, method, extra="10.0.0.21\n10.0.0.22" if per_server else "",
         certificate="generate" if method == "cookie" else "")
    page.get_by_role("button", name="Show the plan").click()
    plan = page.locator("#plan")
    expect(plan).to_contain_text("horizon-https")
    assert not VirtualService.objects.exists()  # the plan is only shown

    page.get_by_role("button", name="Create the configuration").click()
    expect(page.locator("h1")).to_contain_text("Horizon setup horizon: checklist")
    expect(page.locator(".message-success")).to_contain_text("Nothing is live until you apply it")
    vips, urls = EXPECTED[method]
    uag2 = page.locator(".checklist-section", has_text="uag2 (10.0.0.12)")
    for url in urls:
        expect(uag2).to_contain_text(url)
    expect(page.locator("#checklist")).to_contain_text("503 = quiesced = drain")

    rows = list(VirtualService.objects.select_related("pool__health_check", "persistence"))
    assert {(vs.address, vs.port, vs.protocol) for vs in rows} == vips
    assert {vs.persistence_group for vs in rows} == {"horizon"}  # every port follows the client's server
    assert {(vs.persistence.timeout, vs.idle_timeout) for vs in rows} == {(5400, 5400.0)}  # Horizon 8, KB 56636
    https = next(vs for vs in rows if vs.name == "horizon-https")
    check = https.pool.health_check
    assert (check.type, check.path, check.expect_up, check.expect_drain, check.interval, check.verify_certificate) == (
        "https", "/favicon.ico", "200", "503", 30.0, False)
    assert (https.mode, https.persistence.method) == (
        ("l7", "cookie_source_ip") if method == "cookie" else ("l4", "source_ip"))
    assert services.compile_snapshot().virtual_services
    capsys.readouterr()
    call_command("viewlb", "export")
    exported = yaml.safe_load(capsys.readouterr().out)
    assert {(vs["address"], vs["port"], vs["protocol"]) for vs in exported["virtual_services"]} == vips

    page.get_by_role("link", name="Apply the configuration").click()
    expect(page.locator("h1")).to_contain_text("Apply")
    expect(page.locator("body")).to_contain_text("virtual_services/horizon-https")


def test_the_nat_warning_prefills_it_and_errors_name_the_line(wizard_page):
    page = wizard_page("?reach=nat&method=port_group&vip=10.0.0.1&servers=10.0.0.11,10.0.0.12&role=uag")
    expect(page.locator("input[name=reach][value=nat]")).to_be_checked()
    expect(page.locator("input[name=method][value=port_group]")).to_be_checked()
    expect(page.locator("#id_vip")).to_have_value("10.0.0.1")
    expect(page.locator("#id_servers")).to_have_value("uag1 10.0.0.11\nuag2 10.0.0.12")

    page.fill("#id_servers", "uag1 10.0.0.11\nuag2 10.0.0.x")
    page.get_by_role("button", name="Create the configuration").click()
    expect(page.locator(".form-error")).to_contain_text("Nothing created.")
    expect(page.locator("#field-servers .field-error")).to_have_text(
        "Servers: line 2 ('uag2 10.0.0.x'): '10.0.0.x' is not an IPv4 or IPv6 address")
    expect(page.locator("#id_servers")).to_have_value("uag1 10.0.0.11\nuag2 10.0.0.x")  # nothing lost

    page.fill("#id_servers", "uag1 10.0.0.11\nuag2 10.0.0.12")
    page.check("input[name=method][value=source_ip]")
    page.get_by_role("button", name="Show the plan").click()
    expect(page.locator("#plan")).to_contain_text("one NAT address")
    assert not HorizonSetup.objects.exists()
