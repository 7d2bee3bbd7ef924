"""Model validation: every rule refuses with a message on the field it concerns."""
import json
import typing

import pytest
from django.core.exceptions import ValidationError

from balancer import choices, services
from balancer.models import HealthCheck, PersistencePolicy, Pool, RealServer, VirtualService
from proxyworker import config

pytestmark = pytest.mark.django_db


def errors_of(obj) -> dict:
    with pytest.raises(ValidationError) as info:
        obj.full_clean()
    return info.value.message_dict


def vs(pool, **fields):
    values = {"name": "vip", "address": "127.0.0.1", "port": 443, "pool": pool}
    values.update(fields)
    return VirtualService(**values)


@pytest.mark.parametrize(
    "choice_class, literal",
    [
        (choices.Protocol, config.Protocol),
        (choices.Mode, config.Mode),
        (choices.Scheduler, config.SchedulerName),
        (choices.PersistenceMethod, config.PersistenceMethod),
        (choices.AdminState, config.AdminState),
        (choices.CheckType, config.CheckType),
        (choices.HttpMethod, config.HttpMethod),
    ],
)
def test_it_spells_choices_like_the_snapshot_schema(choice_class, literal):
    assert set(choice_class.values) == set(typing.get_args(literal))


# --- virtual services --------------------------------------------------------


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_it_refuses_ports_out_of_range(horizon, port):
    errors = errors_of(vs(horizon["pool"], port=port))
    assert list(errors) == ["port"]
    assert "between 1 and 65535" in errors["port"][0]


@pytest.mark.parametrize("address", ["10.0.0.256", "horizon.example.com", "", "2001:db8::g"])
def test_it_refuses_invalid_listen_addresses(horizon, address):
    errors = errors_of(vs(horizon["pool"], address=address, port=1443))
    assert "address" in errors


def test_it_refuses_names_that_would_break_redis_keys(horizon):
    errors = errors_of(vs(horizon["pool"], name="my vip", port=1443))
    assert "without spaces" in errors["name"][0]


def test_it_refuses_a_second_enabled_service_on_the_same_listener(horizon):
    errors = errors_of(vs(horizon["pool"], name="other", address="127.0.0.1", port=8443))
    assert "'horizon-443' already listens on 127.0.0.1 port 8443/tcp" in errors["port"][0]


def test_it_compares_ipv6_listen_addresses_normalised(horizon):
    vs(horizon["pool"], name="v6", address="2001:db8::1", port=443).save()
    errors = errors_of(vs(horizon["pool"], name="v6-again", address="2001:0db8:0:0:0:0:0:0001", port=443))
    assert "'v6' already listens" in errors["port"][0]


def test_it_allows_the_same_address_and_port_on_another_protocol_or_when_disabled(horizon):
    vs(horizon["pool"], name="udp", address="127.0.0.1", port=8443, protocol="udp").full_clean()
    vs(horizon["pool"], name="spare", address="127.0.0.1", port=8443, enabled=False).full_clean()


def test_it_refuses_an_enabled_service_whose_pool_has_no_servers(horizon):
    empty = Pool.objects.create(name="empty")
    errors = errors_of(vs(empty, port=1443))
    assert "pool 'empty' has no real servers" in errors["pool"][0]
    vs(empty, port=1443, enabled=False).full_clean()  # a disabled one may wait for its servers


def test_it_refuses_layer_7_on_udp(horizon):
    errors = errors_of(vs(horizon["pool"], port=1443, protocol="udp", mode="l7"))
    assert errors == {"mode": ["layer 7 (HTTPS) needs protocol TCP"]}


def test_it_refuses_cookie_persistence_on_layer_4(horizon):
    cookie = PersistencePolicy.objects.create(name="jsession", method="cookie_learn")
    errors = errors_of(vs(horizon["pool"], port=1443, mode="l4", persistence=cookie))
    assert "cookie persistence, which needs layer-7 mode" in errors["persistence"][0]
    vs(horizon["pool"], port=1443, mode="l7", persistence=cookie).full_clean()


def test_it_refuses_turning_a_policy_used_by_layer_4_into_cookie_persistence(horizon):
    policy = horizon["policy"]
    policy.method = "cookie_insert"
    errors = errors_of(policy)
    assert "layer-4 virtual services use this policy: horizon-443" in errors["method"][0]


def test_it_warns_about_an_idle_timeout_shorter_than_horizon_needs(horizon):
    assert horizon["vip"].warnings() == [] or "90 minutes" in horizon["vip"].warnings()[0]
    short = vs(horizon["pool"], idle_timeout=120)
    assert "KB 1032661" in short.warnings()[0]


# --- persistence ---------------------------------------------------------------


@pytest.mark.parametrize(
    "timeout, expected",
    [(120, "VMware KB 1032661"), (299, "3-4 minutes"), (1800, "three misses"), (5399, "90 minutes"), (5400, None)],
)
def test_it_warns_about_persistence_timeouts_shorter_than_horizon_needs(timeout, expected):
    warnings = PersistencePolicy(name="p", method="source_ip", timeout=timeout).warnings()
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and expected in warnings[0]


def test_it_does_not_warn_when_there_is_no_persistence():
    assert PersistencePolicy(name="p", method="none", timeout=10).warnings() == []


def test_it_keeps_a_short_timeout_as_a_warning_not_a_refusal():
    PersistencePolicy(name="lab", method="source_ip", timeout=60).full_clean()


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"ipv4_mask": 33}, "ipv4_mask"),
        ({"ipv6_mask": 129}, "ipv6_mask"),
        ({"timeout": 0}, "timeout"),
        ({"method": "cookie_learn", "cookie_name": ""}, "cookie_name"),
        ({"method": "cookie_learn", "cookie_name": "JSESSION ID"}, "cookie_name"),
        ({"method": "sticky"}, "method"),
    ],
)
def test_it_refuses_bad_persistence_settings(fields, field):
    assert field in errors_of(PersistencePolicy(name="p", **fields))


def test_cookie_name_defaults_to_jsessionid():
    assert PersistencePolicy(name="p").cookie_name == "JSESSIONID"


# --- health checks -------------------------------------------------------------


def test_health_check_defaults_follow_vmware():
    check = HealthCheck(name="c")
    check.full_clean()
    assert (check.type, check.method, check.path) == ("https", "GET", "/favicon.ico")
    assert (check.codes("expect_up"), check.codes("expect_drain"), check.verify_certificate) == ([200], [503], False)
    assert (check.interval, check.timeout, check.rise, check.fall) == (2.0, 2.0, 2, 3)


@pytest.mark.parametrize(
    "fields, field, reason",
    [
        ({"expect_up": "ok"}, "expect_up", "'ok' is not an HTTP status code"),
        ({"expect_up": "200,999"}, "expect_up", "'999' is not an HTTP status code"),
        ({"expect_up": ""}, "expect_up", ""),
        ({"expect_drain": "200"}, "expect_drain", "both up and drain"),
        ({"path": "favicon.ico"}, "path", "must start with /"),
        ({"interval": 0}, "interval", "greater than 0"),
        ({"timeout": -1}, "timeout", "greater than 0"),
        ({"rise": 0}, "rise", "between 1 and 100"),
        ({"fall": 101}, "fall", "between 1 and 100"),
        ({"method": "POST"}, "method", ""),
    ],
)
def test_it_refuses_bad_health_checks(fields, field, reason):
    errors = errors_of(HealthCheck(name="c", **fields))
    assert field in errors and reason in errors[field][0]


def test_it_normalises_status_code_lists():
    check = HealthCheck(name="c", expect_up=" 200, 204 ", expect_drain="503,")
    check.full_clean()
    assert (check.expect_up, check.expect_drain) == ("200,204", "503")


# --- real servers ----------------------------------------------------------------


def test_it_refuses_two_servers_of_one_pool_with_the_same_name(horizon):
    errors = errors_of(RealServer(pool=horizon["pool"], name="uag1", address="127.0.0.13", port=443))
    assert "pool 'uag' already has a server named 'uag1'" in errors["name"][0]
    other = Pool.objects.create(name="cs")
    RealServer(pool=other, name="uag1", address="127.0.0.13", port=443).full_clean()


@pytest.mark.parametrize(
    "fields, field",
    [({"port": 0}, "port"), ({"weight": 257}, "weight"), ({"address": "uag1.local"}, "address"),
     ({"admin_state": "maint"}, "admin_state"), ({"name": "a/b"}, "name")],
)
def test_it_refuses_bad_server_settings(horizon, fields, field):
    values = {"pool": horizon["pool"], "name": "s", "address": "127.0.0.13", "port": 443, **fields}
    assert field in errors_of(RealServer(**values))


# --- compiling ---------------------------------------------------------------------


def test_it_compiles_the_draft_into_a_valid_snapshot(horizon):
    RealServer.objects.create(pool=horizon["pool"], name="uag0", address="2001:db8::10", port=9443, backup=True)
    snapshot = services.compile_snapshot()
    assert snapshot.version == 0
    assert [s.id for s in snapshot.servers()] == ["uag/uag0", "uag/uag1", "uag/uag2"]
    vip = snapshot.virtual_services[0]
    assert (vip.name, vip.pool, vip.group, vip.persistence.method, vip.persistence.ipv4_mask) == (
        "horizon-443", "uag", "horizon", "source_ip", 24
    )
    assert snapshot.pool("uag").health_check.interval == 30.0
    # The compiled dict is already exactly what the schema produces: diffs compare like with like.
    assert json.loads(snapshot.to_json()) == json.loads(json.dumps(services.compile_dict()))


def test_a_service_without_a_policy_compiles_to_no_persistence(horizon):
    vip = horizon["vip"]
    vip.persistence = None
    vip.save()
    assert services.compile_snapshot().virtual_services[0].persistence == config.Persistence(method="none")
