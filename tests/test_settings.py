"""Production settings: hardened, and secrets only from the environment."""
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def manage(*args, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VIEWLB_PRODUCTION"))}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_in_production_mode():
    result = manage("check", "--deploy", "--fail-level", "WARNING", VIEWLB_PRODUCTION="1",
                    DJANGO_SECRET_KEY=secrets.token_urlsafe(50), DJANGO_ALLOWED_HOSTS="lb.example.com")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_production_mode_refuses_to_start_without_a_secret_key():
    result = manage("check", VIEWLB_PRODUCTION="1")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_secret_key_can_come_from_a_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(secrets.token_urlsafe(50))
    result = manage("check", "--deploy", "--fail-level", "WARNING", VIEWLB_PRODUCTION="1",
                    DJANGO_SECRET_KEY_FILE=str(key_file), DJANGO_ALLOWED_HOSTS="lb.example.com")
    assert result.returncode == 0, result.stderr
