"""The snapshot schema refuses what a worker could not serve as configured."""
import pytest

from proxyworker.config import ConfigError, Snapshot


def snapshot(method="source_ip", addresses=("127.0.0.2", "127.0.0.3")):
    servers = [{"id": f"p/s{i}", "name": f"s{i}", "address": a, "port": 9443 + i} for i, a in enumerate(addresses)]
    return {
        "version": 1,
        "pools": [{"name": "p", "servers": servers}],
        "virtual_services": [{"name": "v", "address": "127.0.0.1", "port": 8443, "pool": "p",
                              "persistence": {"method": method}}],
    }


def test_it_accepts_a_persistent_pool_of_distinct_hosts():
    assert Snapshot.from_dict(snapshot()).pool("p").servers[1].address == "127.0.0.3"


def test_it_refuses_persistence_over_servers_that_share_an_address():
    with pytest.raises(ConfigError, match=r"virtual_services\[0\]\.pool: servers 's0' and 's1' .* share the address"):
        Snapshot.from_dict(snapshot(addresses=("::1", "0:0::1")))


def test_without_persistence_servers_may_share_an_address():
    Snapshot.from_dict(snapshot(method="none", addresses=("127.0.0.1", "127.0.0.1")))


@pytest.mark.parametrize("change, path", [
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d["pools"][0]["servers"][0].update(port=70000), r"pools\[0\]\.servers\[0\]\.port"),
    (lambda d: d["virtual_services"][0].update(pool="nope"), r"virtual_services\[0\]\.pool"),
    (lambda d: d["virtual_services"][0].update(protocol="sctp"), r"virtual_services\[0\]\.protocol"),
    (lambda d: d.update(version="1"), "version"),
])
def test_every_error_names_the_field(change, path):
    data = snapshot()
    change(data)
    with pytest.raises(ConfigError, match=path):
        Snapshot.from_dict(data)
