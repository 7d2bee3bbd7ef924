"""A whole simulated farm: one process per server, each answering on its own loopback address."""
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from proxyworker.config import Snapshot
from tests.conftest import free_port, subprocess_env
from tests.demo.conftest import ROOT, get, pid_alive, read_line, stop_process

pytestmark = pytest.mark.xdist_group("demo_farm")
ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def common_free_port(kind=socket.SOCK_STREAM):
    """A port free on every farm address, so the servers can share it as real UAGs do."""
    for _ in range(50):
        port = free_port(ADDRESSES[0], kind)
        try:
            for address in ADDRESSES[1:]:
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((address, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def run_module(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("farm")
    out = tmp / "farm.json"
    https_port, tcp_port, udp_port = common_free_port(), common_free_port(), common_free_port(socket.SOCK_DGRAM)
    cmd = [sys.executable, "-m", "demo.farm", "--servers", "3", "--base-address", ADDRESSES[0],
           "--https-port", str(https_port), "--tcp-ports", str(tcp_port), "--udp-ports", str(udp_port),
           "--cert-dir", str(tmp / "certs"), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    lines = []
    while not lines or not lines[-1].startswith("farm: description in"):
        line = proc.stdout.readline()
        assert line, f"farm exited: {lines}"
        lines.append(line)
    yield {"proc": proc, "out": out, "servers": json.loads(out.read_text())["servers"], "table": lines}
    stop_process(proc)


def test_it_starts_three_servers_on_their_own_addresses_and_they_answer(farm):
    servers = farm["servers"]
    assert [(s["name"], s["address"]) for s in servers] == list(zip(["uag1", "uag2", "uag3"], ADDRESSES, strict=True))
    assert len({s["pid"] for s in servers}) == 3
    assert all(s["name"] in "".join(farm["table"]) for s in servers)
    for server in servers:
        status, headers, _body = get(server, "GET", "/favicon.ico")
        assert (status, headers["X-Sim-Server"]) == (200, server["name"])
        (port,) = server["tcp_ports"]
        with socket.create_connection((server["address"], port), timeout=5) as s:
            assert read_line(s, bytearray()) == f"{server['name']} {port}"


def test_its_description_makes_a_valid_port_following_configuration(farm):
    result = run_module("demo.farmconfig", "--farm", str(farm["out"]), "--vip", "127.0.0.1", "--https-port", "8443")
    assert result.returncode == 0, result.stderr
    snapshot = Snapshot.from_json(result.stdout)
    https_pool = snapshot.pool("horizon-https")
    assert [(s.address, s.port) for s in https_pool.servers] == [(a, farm["servers"][0]["https_port"]) for a in ADDRESSES]
    assert https_pool.health_check.path == "/favicon.ico"
    assert {vs.protocol for vs in snapshot.virtual_services} == {"tcp", "udp"}
    assert {vs.group for vs in snapshot.virtual_services} == {"horizon"}
    assert {vs.persistence.method for vs in snapshot.virtual_services} == {"source_ip"}


def test_a_server_can_be_stopped_and_started_while_the_others_serve(farm):
    uag2 = farm["servers"][1]
    assert '"serving": false' in run_module("demo.ctl", "--farm", str(farm["out"]), "uag2", "stop").stdout
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((uag2["address"], uag2["https_port"]), timeout=5)
    assert get(farm["servers"][0], "GET", "/favicon.ico")[0] == 200
    assert '"serving": true' in run_module("demo.ctl", "--farm", str(farm["out"]), "uag2", "start").stdout
    assert get(uag2, "GET", "/favicon.ico")[0] == 200


def test_sigterm_stops_every_server_and_removes_the_description(tmp_path):
    out = tmp_path / "farm.json"
    # Distinct addresses and a port checked free on each: with --port-step the second
    # server's port was never checked and could be taken.
    proc = subprocess.Popen([sys.executable, "-m", "demo.farm", "--servers", "2", "--base-address", ADDRESSES[0],
                             "--https-port", str(common_free_port()),
                             "--tcp-ports", "", "--udp-ports", "", "--cert-dir", str(tmp_path), "--out", str(out)],
                            cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    while "description in" not in (line := proc.stdout.readline()):
        assert line, "farm exited early"
    pids = [s["pid"] for s in json.loads(out.read_text())["servers"]]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(p) for p in pids) and not out.exists()


def test_it_refuses_a_layout_where_servers_collide():
    result = run_module("demo.farm", "--servers", "2", "--address-step", "0")
    assert result.returncode == 2 and "servers would collide" in result.stderr
