"""The client generator against real simulators: it completes, reports, and notices broken persistence."""
import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import subprocess_env
from tests.demo.conftest import ROOT, control, start_sim, stop_process

pytestmark = pytest.mark.xdist_group("demo_clients")


def clients(*args, timeout=60):
    cmd = [sys.executable, "-m", "demo.clients", "--rate", "20", "--ping", "0.2", "--timeout", "5", *args]
    return subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def sim_args(sim):
    return ["--target", f"{sim['address']}:{sim['https_port']}",
            "--bypass-ports", ",".join(map(str, sim["tcp_ports"])),
            "--udp-ports", ",".join(map(str, sim["udp_ports"]))]


@pytest.fixture(scope="module")
def second_sim(tmp_path_factory):
    proc, info = start_sim(tmp_path_factory.mktemp("certs2"), "sim2")
    yield info
    stop_process(proc)


def test_five_users_each_do_both_phases_and_all_succeed(sim, tmp_path):
    logins_before = control(sim, "stats", "GET")["totals"]["logins"]
    report = tmp_path / "report.json"
    result = clients(*sim_args(sim), "--users", "4", "--shared-users", "1", "--visits-per-user", "1",
                     "--stay", "0.5-1", "--duration", "30", "--seed", "7", "--report", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "users: 5/5 succeeded" in result.stdout
    data = json.loads(report.read_text())
    assert data["totals"]["ok"] == data["totals"]["persistence_held"] == 5
    visits = data["visits"]
    assert sorted(v["source"] for v in visits) == ["127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.200"]
    assert {v["mode"] for v in visits} == {"tunnel", "bypass"}
    assert all(set(v["phase1"]) == {"sim1"} and v["phase2"] and set(v["phase2"]) == {"sim1"} for v in visits)
    assert control(sim, "stats", "GET")["totals"]["logins"] == logins_before + 5


def test_it_reports_bypass_connections_that_miss_the_phase_1_server(sim, second_sim):
    result = clients("--target", f"{sim['address']}:{sim['https_port']}", "--mode", "bypass",
                     "--bypass-host", second_sim["address"],
                     "--bypass-ports", ",".join(map(str, second_sim["tcp_ports"])),
                     "--users", "2", "--shared-users", "0", "--visits-per-user", "1", "--stay", "0", "--duration", "20")
    assert result.returncode == 1
    assert result.stdout.count("reached sim2, phase 1 was on sim1") == 2
    assert "failed 2" in result.stdout and "persistence held 0/2" in result.stdout


def test_sigint_ends_the_run_with_totals(sim):
    cmd = [sys.executable, "-m", "demo.clients", *sim_args(sim), "--users", "3", "--shared-users", "0",
           "--stay", "60", "--duration", "120", "--rate", "20", "--mode", "tunnel"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while control(sim, "stats", "GET")["connections"].get("tunnel", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=15)
    assert "visits 3: ok 0, failed 0, interrupted 3" in out
    assert proc.returncode == 0


@pytest.mark.parametrize("args, message", [
    (["--users", "300", "--mode", "tunnel"], "at most 240 users"),
    (["--mode", "bypass"], "--mode bypass needs --bypass-ports"),
    (["--stay", "5-1"], "need 0 <= MIN <= MAX"),
])
def test_it_explains_bad_arguments(args, message):
    result = clients("--target", "127.0.0.1:1", *args)
    assert result.returncode == 2 and message in result.stderr


def test_a_visit_cut_short_by_the_end_of_the_run_does_not_count_against_its_user():
    from demo.clients import totals
    from demo.visit import User, Visit

    alice, bob = User("alice", "127.0.0.10"), User("bob", "127.0.0.11")
    done = Visit(alice, "tunnel", 1.0, phase1=["uag1", "uag1"], phase2=["uag1"])
    cut = Visit(alice, "tunnel", 1.0, phase1=["uag1"], interrupted=True)
    broken = Visit(bob, "bypass", 1.0, phase1=["uag1"], phase2=["uag2"], error="bypass reached uag2")
    result = totals([done, cut, broken], [alice, bob])
    assert (result["users_succeeded"], result["failed"], result["interrupted"]) == (1, 1, 1)
