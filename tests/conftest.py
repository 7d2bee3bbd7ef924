"""Fixtures every test package shares.

Each pytest process (xdist worker) gets its own Redis prefix, so parallel
tests, the demo and CI never see each other's keys, channels or Celery queue.
Subprocesses started by tests (proxy workers, Celery) inherit it through
`subprocess_env()`.
"""
import os
import socket
import uuid

import pytest
import redis

from proxyworker.config import Keys

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = f"vlbtest{uuid.uuid4().hex[:8]}"
os.environ["VIEWLB_REDIS_PREFIX"] = PREFIX


@pytest.fixture(scope="session", autouse=True)
def _isolated_redis_prefix():
    from django.conf import settings

    settings.VIEWLB_REDIS_PREFIX = PREFIX
    settings.CELERY_TASK_DEFAULT_QUEUE = PREFIX + ":celery"
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = Keys(PREFIX).channels_prefix
    yield
    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(match=PREFIX + "*", count=1000):
        r.delete(key)


@pytest.fixture(scope="session")
def keys():
    return Keys(PREFIX)


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    client.close()


def free_port(host="127.0.0.1", kind=socket.SOCK_STREAM):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def subprocess_env(**extra):
    env = dict(os.environ)
    env.update(VIEWLB_REDIS_PREFIX=PREFIX, REDIS_URL=REDIS_URL, PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """SQLite test databases in a file, not in memory, so that subprocesses (Celery workers) can open them.

    One file per test process (PREFIX is unique), removed by Django when the session ends.
    Use `database_url_for_subprocesses()` to hand the test database to a subprocess.
    """
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3" and not db.get("TEST", {}).get("NAME"):
        db.setdefault("TEST", {})["NAME"] = str(settings.VAR_DIR / f"test-{PREFIX}.sqlite3")


def database_url_for_subprocesses():
    """DATABASE_URL of the test database this process set up (call after django_db_setup)."""
    from urllib.parse import quote

    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
