"""The appliance as the browser tests need it: daphne, a proxy worker, the health checker, real backends.

Everything runs under this test process's Redis prefix and its file-based test
database, so the console in daphne sees the users and the configuration that
the fixture created, and the worker and the checker follow what it published.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.backends import start_backend
from tests.conftest import database_url_for_subprocesses, free_port, subprocess_env

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "dashboards-test-password"


def wait_for(condition, timeout=10.0, interval=0.05, message="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class Process:
    """A subprocess with its output in a log file, stopped with SIGTERM (then SIGKILL) on close."""

    def __init__(self, name: str, args: list[str], log_dir: Path, **env):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=subprocess_env(**env), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, tail=4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def check_alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")

    def stop(self, timeout=10.0):
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def start_daphne(log_dir: Path) -> tuple[Process, str]:
    port = free_port()
    daphne = Process("daphne", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                "viewlb_site.asgi:application"], log_dir,
                     DATABASE_URL=database_url_for_subprocesses(), LOG_LEVEL="WARNING")
    url = f"http://127.0.0.1:{port}"

    def answers():
        daphne.check_alive()
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(answers, timeout=30, message=f"daphne on {url}")
    return daphne, url


def start_worker(log_dir: Path, worker_id: str) -> Process:
    return Process(worker_id, [sys.executable, "-m", "proxyworker", "--id", worker_id,
                               "--state-dir", str(log_dir / f"state-{worker_id}")], log_dir,
                   VIEWLB_DRAIN_SECONDS="1")


@dataclass
class Stack:
    url: str
    vip_port: int
    username: str
    backends: dict  # name -> tests.backends.ThreadBackend
    servers: dict  # name -> RealServer pk
    worker_id: str
    processes: list[Process] = field(default_factory=list)
    cookie: str = ""  # "sessionid=..." of the admin, for WebSocket clients

    def connect(self, source: str | None = None) -> tuple[socket.socket, str]:
        """A client connection through the worker; returns it and the name of the server it reached."""
        sock = socket.create_connection(("127.0.0.1", self.vip_port), timeout=5,
                                        source_address=(source, 0) if source else None)
        greeting = b""
        while not greeting.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                raise AssertionError("the connection closed before the server greeted")
            greeting += chunk
        return sock, greeting.decode().strip()


def build_config(admin):
    """Two simulated servers behind one VIP with source-IP persistence, checked over TCP every second."""
    from balancer import services
    from balancer.models import HealthCheck, PersistencePolicy, Pool, RealServer, VirtualService

    backends = {name: start_backend(name) for name in ("uag1", "uag2")}
    check = HealthCheck.objects.create(name="dash-tcp", type="tcp", interval=1.0, timeout=0.5, rise=1, fall=1)
    policy = PersistencePolicy.objects.create(name="dash-ip", method="source_ip", timeout=5400)
    pool = Pool.objects.create(name="dash-uag", health_check=check)
    servers = {name: RealServer.objects.create(pool=pool, name=name, address=b.host, port=b.port).pk
               for name, b in backends.items()}
    vip_port = free_port()
    VirtualService.objects.create(name="dash-horizon", address="127.0.0.1", port=vip_port, pool=pool,
                                  persistence=policy, persistence_group="dash-horizon")
    version = services.publish(admin, "dashboards test")
    return backends, servers, vip_port, version.number


def remove_config(since_audit_id: int):
    """Leave the shared test database as the other test packages expect it: without our rows."""
    from balancer.models import (
        AuditEntry,
        ConfigVersion,
        HealthCheck,
        PersistencePolicy,
        Pool,
        RealServer,
        VirtualService,
    )
    from monitoring.models import HealthEvent

    VirtualService.objects.filter(name="dash-horizon").delete()
    RealServer.objects.filter(pool__name="dash-uag").delete()
    Pool.objects.filter(name="dash-uag").delete()
    PersistencePolicy.objects.filter(name="dash-ip").delete()
    HealthCheck.objects.filter(name="dash-tcp").delete()
    AuditEntry.objects.filter(id__gt=since_audit_id).delete()
    ConfigVersion.objects.filter(comment="dashboards test").delete()
    HealthEvent.objects.filter(pool="dash-uag").delete()
