"""A real Celery worker with embedded beat, as a subprocess on this test process's queue."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import PREFIX, database_url_for_subprocesses, subprocess_env

ROOT = Path(__file__).resolve().parents[2]


class CeleryWorker:
    def __init__(self, workdir: Path, prefix: str = PREFIX, concurrency: int = 4):
        self.workdir = workdir
        self.prefix = prefix
        self.concurrency = concurrency
        self.log = workdir / f"celery-{prefix}.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "viewlb_site", "worker", "-B",
            "--pool", "threads", "--concurrency", str(self.concurrency),
            "--queues", f"{self.prefix}:celery", "--hostname", f"health-{self.prefix}@%h",
            "--schedule", str(self.workdir / f"beat-{self.prefix}"),
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
        ]

    def start(self, timeout=30.0) -> CeleryWorker:
        env = subprocess_env(DATABASE_URL=database_url_for_subprocesses(), VIEWLB_REDIS_PREFIX=self.prefix)
        with open(self.log, "ab") as out:
            # its own session, so that stop() can end the worker and its beat child together
            self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while " ready." not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"celery worker did not start:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout=10.0):
        if not self.proc or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        try:  # the embedded beat may outlive the worker by a moment
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class ServerProcess:
    """One test server in its own process, so that a test can kill it like a crashed Horizon server."""

    def __init__(self, kind: str, port: int, status: int = 200):
        self.args = [sys.executable, "-m", "tests.monitoring.servers", kind, str(port), str(status)]
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.kill()
            raise RuntimeError(f"test server did not start: {line!r}")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
