"""docker-compose.yml runs the same processes, with the same commands, as the local demo.

Docker's engine is not available on these machines, so the file is checked with
Debian's `docker-compose config`, which parses and validates it without one.
"""
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {"DJANGO_SECRET_KEY": "k" * 50, "VIEWLB_CERT_KEY": "c" * 44, "POSTGRES_PASSWORD": "p" * 20}


def compose_config(**env):
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is not installed (apt-get install docker-compose; .ci/run does it)")
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile", "demo", "config"],
        env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture(scope="module")
def services():
    result = compose_config(**SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def procfile():
    processes = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, command = line.split(":", 1)
        processes[name] = shlex.split(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", command))
    return processes


def argv(service):
    command = service["command"]
    return shlex.split(command[2]) if command[:2] == ["sh", "-c"] else command


def test_it_is_valid_and_runs_every_demo_process_with_the_demo_command(services):
    for name, command in procfile().items():
        assert name in services, f"Procfile process {name!r} has no compose service"
        assert argv(services[name]) == command, name


def test_it_runs_two_proxy_workers_and_the_backing_services(services):
    assert {"proxy1", "proxy2", "redis", "postgres", "migrate", "demo-config"} <= set(services)
    assert services["proxy1"]["command"] != services["proxy2"]["command"]


def test_app_services_run_in_production_mode_on_postgresql(services):
    for name in ("web", "celery", "beat", "proxy1", "migrate"):
        env = services[name]["environment"]
        assert env["VIEWLB_PRODUCTION"] == "1"
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["DJANGO_SECRET_KEY"] == SECRETS["DJANGO_SECRET_KEY"]


def test_it_refuses_to_start_without_secrets():
    result = compose_config()
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr or "POSTGRES_PASSWORD" in result.stderr


def test_no_secret_is_written_in_the_file():
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"(SECRET_KEY|PASSWORD|CERT_KEY):\s*['\"]?\w{8,}", text)
