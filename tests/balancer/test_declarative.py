"""`viewlb export` / `viewlb apply`: round trips, line-precise errors, nothing half-applied."""
import io
import json
import textwrap

import pytest
import yaml
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command

from balancer import services
from balancer.declarative import DeclarativeError
from balancer.models import AuditEntry, ConfigVersion, HealthCheck, Pool, RealServer, VirtualService
from proxyworker.config import Snapshot

pytestmark = pytest.mark.django_db

GOOD = textwrap.dedent("""\
    persistence_policies:
      - name: horizon-ip
        method: source_ip
        ipv4_mask: 24
    health_checks:
      - name: favicon
        interval: 30
    pools:
      - name: uag
        health_check: favicon
        servers:
          - {name: uag1, address: 127.0.0.11, port: 9443}
          - {name: uag2, address: "::1", port: 9443, weight: 2}
    virtual_services:
      - name: horizon-443
        address: 127.0.0.1
        port: 8443
        pool: uag
        persistence: horizon-ip
        persistence_group: horizon
      - name: blast-udp
        address: 127.0.0.1
        port: 8443
        protocol: udp
        pool: uag
        persistence: horizon-ip
        persistence_group: horizon
""")


def state(redis_client, keys):
    """Everything an apply could change: the exported draft, versions, audit, Redis."""
    return (
        services.export_config(), ConfigVersion.objects.count(), AuditEntry.objects.count(),
        redis_client.get(keys.config), redis_client.hgetall(keys.admin),
    )


def test_apply_creates_the_configuration_and_publishes_it(admin_user, redis_client, keys):
    diff, version = services.apply_config(GOOD, admin_user)
    assert version.number == 1 and version.author_name == "alice"
    assert "+virtual_services/blast-udp/protocol: \"udp\"" in diff
    snapshot = Snapshot.from_json(redis_client.get(keys.config))
    assert {vs.name for vs in snapshot.virtual_services} == {"horizon-443", "blast-udp"}
    assert {vs.group for vs in snapshot.virtual_services} == {"horizon"}
    assert snapshot.pool("uag").health_check.interval == 30.0
    assert VirtualService.objects.get(name="horizon-443").persistence.ipv4_mask == 24
    assert AuditEntry.objects.filter(action="create", details__source="yaml apply").count() == 7


def test_export_then_apply_is_a_no_op(admin_user, redis_client, keys):
    services.apply_config(GOOD, admin_user)
    pks = sorted(VirtualService.objects.values_list("pk", flat=True))
    before = state(redis_client, keys)

    diff, version = services.apply_config(services.export_config(), admin_user)

    assert (diff, version) == ([], None)
    assert state(redis_client, keys) == before
    assert sorted(VirtualService.objects.values_list("pk", flat=True)) == pks  # objects kept, not recreated


def test_apply_changes_only_what_differs_and_audits_it(admin_user, redis_client, keys):
    services.apply_config(GOOD, admin_user)
    text = GOOD.replace("weight: 2", "weight: 3").replace("- name: blast-udp", "- name: blast-udp\n    enabled: false")

    diff, version = services.apply_config(text, admin_user)

    assert version.number == 2
    assert sorted(line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")) == [
        "+pools/uag/servers/uag2/weight: 3",
        "+virtual_services/blast-udp/enabled: false",
        "-pools/uag/servers/uag2/weight: 2",
        "-virtual_services/blast-udp/enabled: true",
    ]
    updates = AuditEntry.objects.filter(action="update")
    assert {(e.object_repr, json.dumps(e.details["changes"])) for e in updates} == {
        ("uag/uag2", '{"weight": [2, 3]}'), ("blast-udp", '{"enabled": [true, false]}'),
    }


def test_apply_removes_what_the_document_no_longer_lists(admin_user):
    services.apply_config(GOOD, admin_user)
    smaller = GOOD.split("virtual_services:")[0].replace(
        "      - {name: uag2, address: \"::1\", port: 9443, weight: 2}\n", ""
    )
    services.apply_config(smaller, admin_user)
    assert not VirtualService.objects.exists()
    assert list(RealServer.objects.values_list("name", flat=True)) == ["uag1"]


def test_dry_run_shows_the_diff_and_changes_nothing(admin_user, redis_client, keys):
    before = state(redis_client, keys)
    diff, version = services.apply_config(GOOD, admin_user, dry_run=True)
    assert version is None and "+virtual_services/horizon-443/port: 8443" in diff
    assert state(redis_client, keys) == before


def replace_line(text, old, new):
    assert old in text, old
    return text.replace(old, new, 1)


BAD = [
    # (description, transform of GOOD, expected line, expected text)
    ("YAML syntax", lambda t: replace_line(t, "ipv4_mask: 24", "ipv4_mask: [24"), 5, "not valid YAML"),
    ("unknown key", lambda t: replace_line(t, "persistence_group: horizon\n  - name: blast",
                                           "persistence_group: horizon\n    colour: red\n  - name: blast"),
     21, "virtual_services[0].colour: unknown field"),
    ("wrong type", lambda t: replace_line(t, "port: 8443", "port: eighty"), 17,
     "virtual_services[0].port: must be an integer, not 'eighty'"),
    ("out of range", lambda t: replace_line(t, "port: 8443", "port: 70000"), 17,
     "virtual_services[0].port: must be between 1 and 65535, not 70000"),
    ("bad address", lambda t: replace_line(t, "address: 127.0.0.11", "address: uag1.example.com"), 12,
     "pools[0].servers[0].address: Enter a valid IPv4 or IPv6 address"),
    ("bad choice", lambda t: replace_line(t, "protocol: udp", "protocol: sctp"), 24,
     "virtual_services[1].protocol: must be one of tcp, udp, not 'sctp'"),
    ("dangling reference", lambda t: replace_line(t, "pool: uag\n    persistence: horizon-ip\n    persistence_group: horizon\n  - name: blast",
                                                  "pool: cs\n    persistence: horizon-ip\n    persistence_group: horizon\n  - name: blast"),
     18, "virtual_services[0].pool: no pool named 'cs' in this document"),
    ("duplicate name", lambda t: replace_line(t, "name: blast-udp", "name: horizon-443"), 21,
     "virtual_services[1].name: 'horizon-443' appears twice (first on line 15)"),
    ("listen conflict", lambda t: replace_line(t, "protocol: udp", "protocol: tcp"), 15,
     "virtual_services[0]: listens on the same address, port and protocol as 'blast-udp'"),
    ("empty pool", lambda t: replace_line(t, "    servers:\n      - {name: uag1, address: 127.0.0.11, port: 9443}\n      - {name: uag2, address: \"::1\", port: 9443, weight: 2}\n",
                                          "    servers: []\n"),
     23, "virtual_services[1].pool: pool 'uag' has no real servers"),
    ("cookie on layer 4", lambda t: replace_line(t, "method: source_ip", "method: cookie_learn"), 19,
     "virtual_services[0].persistence: policy 'horizon-ip' uses cookie persistence, which needs layer-7 mode"),
    ("layer 7 on udp", lambda t: replace_line(t, "protocol: udp", "protocol: udp\n    mode: l7"), 25,
     "virtual_services[1].mode: layer 7 (HTTPS) needs protocol TCP"),
    ("missing field", lambda t: replace_line(t, "    address: 127.0.0.1\n    port: 8443\n    pool: uag\n    persistence: horizon-ip\n    persistence_group: horizon\n  - name: blast",
                                             "    port: 8443\n    pool: uag\n    persistence: horizon-ip\n    persistence_group: horizon\n  - name: blast"),
     15, "virtual_services[0].address: is required"),
    ("health check overlap", lambda t: replace_line(t, "interval: 30", "interval: 30\n    expect_drain: [200]"), 8,
     "health_checks[0].expect_drain: a status cannot mean both up and drain"),
    ("alias bomb", lambda t: replace_line(t, "servers:\n", "servers: &s\n").replace(
        "virtual_services:", "  - {name: cs, servers: *s}\nvirtual_services:"), 14,
     "pools[1].servers: YAML aliases (*name) of lists or mappings are not supported"),
    ("not a mapping", lambda t: "- just\n- a list\n", 1, "the document must be a mapping"),
    ("empty", lambda t: "", 1, "the document is empty"),
]


@pytest.mark.parametrize("description, transform, line, text", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_the_line_and_reason_and_changes_nothing(
    description, transform, line, text, admin_user, redis_client, keys
):
    services.apply_config(GOOD.replace("weight: 2", "weight: 5"), admin_user)  # something to protect
    before = state(redis_client, keys)
    with pytest.raises(DeclarativeError) as info:
        services.apply_config(transform(GOOD), admin_user)
    assert str(info.value).startswith(f"line {line}: "), str(info.value)
    assert text in str(info.value)
    assert state(redis_client, keys) == before


def test_the_command_exports_and_applies_files(tmp_path, admin_user, redis_client, keys):
    source = tmp_path / "horizon.yaml"
    source.write_text(GOOD)
    out = io.StringIO()
    call_command("viewlb", "apply", "-f", str(source), "--user", "alice", "-m", "initial", stdout=out)
    assert "published version 1" in out.getvalue()
    assert ConfigVersion.objects.get().comment == "initial"

    exported = tmp_path / "export.yaml"
    call_command("viewlb", "export", "-o", str(exported), stderr=io.StringIO())
    out = io.StringIO()
    call_command("viewlb", "apply", "-f", str(exported), stdout=out)
    assert "no changes: nothing to publish" in out.getvalue()


def test_the_command_reports_the_line_and_changes_nothing(tmp_path, admin_user, redis_client, keys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("port: 8443", "port: 0", 1))
    with pytest.raises(CommandError, match=r"bad.yaml: line 17: virtual_services\[0\].port: must be between"):
        call_command("viewlb", "apply", "-f", str(bad), stdout=io.StringIO())
    assert not Pool.objects.exists() and not HealthCheck.objects.exists()
    assert redis_client.get(keys.config) is None


def test_publish_command_publishes_the_draft(admin_user, redis_client, keys):
    services.apply_config(GOOD, admin_user, dry_run=True)
    assert not Pool.objects.exists()
    services.apply_config(GOOD, admin_user)
    VirtualService.objects.filter(name="blast-udp").update(port=4172)
    out = io.StringIO()
    call_command("viewlb", "publish", "--user", "alice", stdout=out)
    assert "+virtual_services/blast-udp/port: 4172" in out.getvalue()
    assert Snapshot.from_json(redis_client.get(keys.config)).version == 2


def test_createadmin_prints_a_password_that_logs_in(db):
    out = io.StringIO()
    call_command("viewlb", "createadmin", "--username", "root", stdout=out)
    password = out.getvalue().split("password: ")[1].strip()
    user = authenticate(username="root", password=password)
    assert user is not None and user.is_superuser
    call_command("viewlb", "createadmin", "--username", "root", stdout=io.StringIO())  # reset
    assert authenticate(username="root", password=password) is None


def test_rollback_restores_names_that_the_snapshot_does_not_carry(admin_user):
    services.apply_config(GOOD, admin_user)
    services.apply_config(GOOD.replace("horizon-ip", "renamed-ip").replace("weight: 2", "weight: 4"), admin_user)
    services.rollback(1, admin_user)
    assert VirtualService.objects.get(name="horizon-443").persistence.name == "horizon-ip"
    # (PostgreSQL's jsonb keeps no key order, so compare data, not text.)
    assert yaml.safe_load(services.export_config()) == ConfigVersion.objects.get(number=1).document
