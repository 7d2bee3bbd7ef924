"""The whole appliance against simulated Horizon servers: console -> Redis -> Celery checks -> proxy worker.

A configuration applied through the console's own service (the YAML path an
administrator uses) is checked by a real Celery worker + beat and served by a
real proxy worker; the simulated UAGs are real HTTPS servers that answer
`/favicon.ico` with 503 when quiesced, like Horizon. The issue's bound: with
interval 1 s and fall 2, a killed server is down, and a quiesced one drained,
within 3 s, and the worker sends no new client to it after that.
"""
import http.client
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from balancer import services
from proxyworker.config import Keys
from tests.conftest import PREFIX, REDIS_URL, free_port, subprocess_env
from tests.demo.conftest import control, start_sim, stop_process
from tests.monitoring.celeryproc import CeleryWorker
from tests.monitoring.helpers import TRANSACTIONAL, wait_for

pytestmark = [pytest.mark.xdist_group("e2e-horizon"), TRANSACTIONAL, pytest.mark.usefixtures("restore_migrated_data")]

ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 3.0
E2E_PREFIX = PREFIX + "e2e"


@pytest.fixture(scope="module")
def keys():
    """This module's own Redis prefix, for the console (settings), Celery and the proxy worker alike."""
    old = settings.VIEWLB_REDIS_PREFIX
    settings.VIEWLB_REDIS_PREFIX = E2E_PREFIX
    yield Keys(E2E_PREFIX)
    settings.VIEWLB_REDIS_PREFIX = old


@pytest.fixture(scope="module")
def rdb():
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    certs = tmp_path_factory.mktemp("certs")
    sims = {}
    # Each UAG on its own address, as in a real farm: persistence remembers the server host.
    for name, address in (("uag1", "127.0.0.2"), ("uag2", "127.0.0.3")):
        proc, info = start_sim(certs, name, "--address", address)
        info["proc"] = proc
        sims[name] = info
    yield sims
    for info in sims.values():
        stop_process(info["proc"])


@pytest.fixture(scope="module")
def vip_port():
    return free_port()


@pytest.fixture(scope="module")
def celery(keys, django_db_setup, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock():
        worker = CeleryWorker(tmp_path_factory.mktemp("celery"), prefix=keys.prefix).start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def proxy(keys, tmp_path_factory):
    state = tmp_path_factory.mktemp("proxy")
    log = open(state / "worker.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "proxyworker", "--id", "e2e", "--state-dir", str(state)],
                            cwd=ROOT, env=subprocess_env(VIEWLB_REDIS_PREFIX=keys.prefix), stdout=log, stderr=log)
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def horizon_yaml(farm, vip_port):
    servers = "\n".join(
        f"      - {{name: {name}, address: {info['address']}, port: {info['https_port']}}}" for name, info in farm.items()
    )
    return textwrap.dedent("""\
        persistence_policies:
          - {name: horizon-ip, method: source_ip, timeout: 5400}
        health_checks:
          - {name: favicon, type: https, path: /favicon.ico, interval: 1, timeout: 0.5, rise: 2, fall: 2}
        pools:
          - name: uag
            health_check: favicon
            servers:
        %s
        virtual_services:
          - {name: horizon, address: 127.0.0.1, port: %d, pool: uag, persistence: horizon-ip, idle_timeout: 5400}
        """) % (servers, vip_port)


@pytest.fixture(scope="module")
def appliance(farm, vip_port, keys, rdb, celery, proxy, django_db_blocker):
    """The configuration applied through the console and every server up, as seen by the worker."""
    with django_db_blocker.unblock():
        _diff, version = services.apply_config(horizon_yaml(farm, vip_port), None, comment="e2e")
    assert version is not None
    ids = [f"uag/{name}" for name in farm]
    wait_for(lambda: rdb.hmget(keys.health, ids) == ["up"] * len(ids), timeout=15)
    wait_for(lambda: worker_sees(rdb, keys, {i: "up" for i in ids}), timeout=5)
    return farm


def worker_sees(rdb, keys, expected):
    import json

    raw = rdb.get(keys.worker("e2e"))
    servers = json.loads(raw)["servers"] if raw else {}
    return all(servers.get(sid) == state for sid, state in expected.items())


def landed_on(vip_port, source):
    """Which UAG answers a client from `source` (an HTTPS request through the VIP)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", vip_port, context=ctx, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", "/favicon.ico")
        resp = conn.getresponse()
        resp.read()
        return resp.headers["X-Sim-Server"]
    finally:
        conn.close()


def clients(first, count):
    return [f"127.0.0.{i}" for i in range(first, first + count)]


def test_a_quiesced_server_is_drained_within_the_bound_and_keeps_only_its_own_clients(appliance, vip_port, keys, rdb):
    stuck = {source: landed_on(vip_port, source) for source in clients(10, 8)}
    assert set(stuck.values()) == {"uag1", "uag2"}, "round robin spreads new clients over both UAGs"
    quiesced = stuck["127.0.0.10"]
    other = "uag2" if quiesced == "uag1" else "uag1"

    control(appliance[quiesced], "quiesce")
    started = time.monotonic()
    wait_for(lambda: rdb.hget(keys.health, f"uag/{quiesced}") == "drain", timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed <= BOUND_S, f"drained after {elapsed:.2f} s"
    wait_for(lambda: worker_sees(rdb, keys, {f"uag/{quiesced}": "drain"}), timeout=2)

    # Existing users stay where they authenticated; no new user is sent to the quiesced UAG.
    for source, server in stuck.items():
        assert landed_on(vip_port, source) == server
    assert {landed_on(vip_port, source) for source in clients(30, 10)} == {other}

    control(appliance[quiesced], "resume")
    wait_for(lambda: rdb.hget(keys.health, f"uag/{quiesced}") == "up", timeout=10)


def test_a_killed_server_is_down_within_the_bound_and_no_client_fails(appliance, vip_port, keys, rdb):
    wait_for(lambda: worker_sees(rdb, keys, {"uag/uag1": "up", "uag/uag2": "up"}), timeout=10)
    stuck = {source: landed_on(vip_port, source) for source in clients(50, 6)}
    victim = stuck["127.0.0.50"]
    survivor = "uag2" if victim == "uag1" else "uag1"

    appliance[victim]["proc"].kill()
    appliance[victim]["proc"].wait(5)
    started = time.monotonic()
    # Between the kill and the health verdict, the worker redispatches: no client fails.
    answers = []
    while rdb.hget(keys.health, f"uag/{victim}") != "down":
        assert time.monotonic() - started <= BOUND_S, "not marked down within the bound"
        answers.append(landed_on(vip_port, "127.0.0.50"))
    elapsed = time.monotonic() - started
    assert elapsed <= BOUND_S, f"down after {elapsed:.2f} s"
    assert set(answers) <= {survivor}

    # Every client, including those that stuck to the dead UAG, now reaches the survivor.
    for source in [*stuck, *clients(70, 6)]:
        assert landed_on(vip_port, source) == survivor
