"""Simulators as real subprocesses, and small stdlib clients to talk to them.

The tests speak to the simulator with http.client and raw sockets rather than
demo.httpclient, so a framing bug shared by both sides cannot hide itself.
"""
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]


def start_sim(cert_dir, name, *extra):
    """Start `python -m demo.horizon_sim` on free ports; return (process, its ready line)."""
    cmd = [sys.executable, "-m", "demo.horizon_sim", "--name", name, "--https-port", "0",
           "--tcp-ports", "0,0", "--udp-ports", "0", "--cert-dir", str(cert_dir), *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        raise RuntimeError(f"{name} did not start (exit {proc.returncode})")
    info = json.loads(line)
    assert info["event"] == "ready"
    return proc, info


def stop_process(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    proc, info = start_sim(tmp_path_factory.mktemp("certs"), "sim1", "--heartbeat", "0.5")
    info["proc"] = proc
    yield info
    stop_process(proc)


def client_tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def https(info, **kw) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(info["address"], info["https_port"], context=client_tls(), timeout=5, **kw)


def get(info, method, path, body=None, headers=None):
    """One request on a fresh connection; returns (status, headers, body)."""
    conn = https(info)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def control(info, action, method="POST"):
    request = urllib.request.Request(f"http://127.0.0.1:{info['control_port']}/{action}", method=method,
                                     data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.load(resp)


def tls_socket(address, port, source=None):
    raw = socket.create_connection((address, port), timeout=5, source_address=(source, 0) if source else None)
    return client_tls().wrap_socket(raw)


def read_head(sock) -> tuple[int, dict, bytes]:
    """Read an HTTP response head from a raw socket: (status, lower-case headers, bytes after the head)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest


def read_line(sock, buffer: bytearray, skip_heartbeats=True) -> str:
    while True:
        while b"\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("stream closed")
            buffer += chunk
        line, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        text = line.decode()
        if not (skip_heartbeats and text.startswith("HEARTBEAT ")):
            return text


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
