"""Running real proxy workers against real Redis and real backends, and talking through them.

Each test module gets its own Redis prefix (under the per-process test prefix,
so the session cleanup in tests/conftest.py removes it) and publishes configs
the way the control plane does: SET `Keys.config` + PUBLISH the version.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from proxyworker.config import Keys, Persistence, Pool, RealServer, Snapshot, VirtualService
from tests.conftest import PREFIX, REDIS_URL, subprocess_env

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition, timeout=5.0, interval=0.02, message="condition"):
    """Poll `condition` until it returns something truthy; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# --- snapshot building ---------------------------------------------------------


def server(pool: str, backend, name: str | None = None, **options) -> RealServer:
    name = name or backend.name
    return RealServer(id=f"{pool}/{name}", name=name, address=backend.host, port=backend.port, **options)


def pool(name: str, *servers: RealServer) -> Pool:
    return Pool(name=name, servers=tuple(servers))


def service(name: str, port: int, pool_name: str, address: str = "127.0.0.1", **options) -> VirtualService:
    return VirtualService(name=name, address=address, port=port, pool=pool_name, **options)


def source_ip(timeout: int = 600, ipv4_mask: int = 32, ipv6_mask: int = 128) -> Persistence:
    return Persistence(method="source_ip", timeout=timeout, ipv4_mask=ipv4_mask, ipv6_mask=ipv6_mask)


# --- clients -------------------------------------------------------------------


def connect(port: int, host: str = "127.0.0.1", source: str | None = None, timeout: float = 3.0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source:
        sock.bind((source, 0))
    sock.connect((host, port))
    return sock


def read_line(sock: socket.socket) -> str:
    """The greeting of an ident backend; '' if the connection closed before one came."""
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = sock.recv(1)
        except ConnectionResetError:
            return ""
        if not chunk:
            return ""
        data += chunk
    return data[:-1].decode()


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def ask(port: int, host: str = "127.0.0.1", source: str | None = None) -> str:
    """Which server does a new connection (from `source`) reach?"""
    with connect(port, host, source) as sock:
        return read_line(sock)


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@contextlib.contextmanager
def private_redis(port: int):
    """A Redis of our own, so the test can stop, restart or pause it."""
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, decode_responses=True)

    def up():
        try:
            return client.ping()
        except redis.ConnectionError:
            return False

    try:
        wait_for(up, 5, message="private redis")
        yield client
    finally:
        client.close()
        proc.kill()
        proc.wait()


# --- workers -------------------------------------------------------------------


class WorkerProcess:
    def __init__(self, harness: Harness, worker_id: str, state_dir: Path, **env):
        self.harness, self.id, self.state_dir = harness, worker_id, state_dir
        self.log_path = harness.tmp / f"{worker_id}.log"
        self.expected_errors: list[str] = []
        env.setdefault("VIEWLB_REDIS_PREFIX", harness.prefix)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxyworker", "--id", worker_id, "--state-dir", str(state_dir)],
                env=subprocess_env(**env), cwd=ROOT, stdout=log, stderr=log)

    def heartbeat(self) -> dict | None:
        raw = self.harness.redis.get(self.harness.keys.worker(self.id))
        return json.loads(raw) if raw else None

    def wait_version(self, version: int, timeout: float = 5.0) -> dict:
        def applied():
            self.check_alive()
            beat = self.heartbeat()
            return beat if beat and beat["config_version"] == version else None

        return wait_for(applied, timeout, message=f"worker {self.id} to apply version {version}\n{self.log()}")

    def wait_server_state(self, server_id: str, state: str, timeout: float = 5.0) -> None:
        def seen():
            beat = self.heartbeat()
            return beat and beat["servers"].get(server_id) == state

        wait_for(seen, timeout, message=f"worker {self.id} to see {server_id} {state}")

    def check_alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"worker {self.id} exited with {self.proc.returncode}\n{self.log()}")

    def expect_error(self, text: str) -> None:
        """An ERROR line containing `text` is expected (e.g. a test published a bad snapshot)."""
        self.expected_errors.append(text)

    def assert_clean_log(self) -> None:
        text = self.log_path.read_text(errors="replace")
        assert "Traceback" not in text, text[-6000:]
        unexpected = [line for line in text.splitlines()
                      if " ERROR " in line and not any(e in line for e in self.expected_errors)]
        assert not unexpected, "\n".join(unexpected[:20])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> int:
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker {self.id} did not stop on SIGTERM\n{self.log()}") from None


class Harness:
    def __init__(self, name: str, tmp: Path):
        self.prefix = f"{PREFIX}{name}"
        self.keys = Keys(self.prefix)
        self.tmp = tmp
        self.redis = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        self.version = 0
        self.workers: list[WorkerProcess] = []

    def publish(self, services, pools) -> int:
        self.version += 1
        snapshot = Snapshot(version=self.version, virtual_services=tuple(services), pools=tuple(pools))
        self.publish_json(snapshot.to_json())
        return self.version

    def publish_json(self, text: str) -> None:
        self.redis.set(self.keys.config, text)
        self.redis.publish(self.keys.config, str(self.version))

    def apply(self, services, pools, workers=None) -> int:
        """Publish and wait until every running worker (or the given ones) applied it."""
        version = self.publish(services, pools)
        for worker in workers or self.running():
            worker.wait_version(version)
        return version

    def start_worker(self, worker_id: str | None = None, wait_version: int | None = None,
                     state_dir: Path | None = None, **env) -> WorkerProcess:
        worker_id = worker_id or f"w{len(self.workers) + 1}-{os.getpid()}"
        worker = WorkerProcess(self, worker_id, state_dir or self.tmp / f"state-{worker_id}", **env)
        self.workers.append(worker)
        if wait_version is not None:
            worker.wait_version(wait_version)
        return worker

    def running(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.proc.poll() is None]

    def set_admin(self, server_id: str, state: str) -> None:
        self.redis.hset(self.keys.admin, server_id, state)
        self.redis.publish(self.keys.health, server_id)

    def set_health(self, server_id: str, state: str) -> None:
        self.redis.hset(self.keys.health, server_id, state)
        self.redis.publish(self.keys.health, server_id)

    def close(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
        for key in self.redis.scan_iter(match=self.prefix + ":*", count=1000):
            self.redis.delete(key)
        self.redis.close()
