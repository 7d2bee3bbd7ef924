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
    # Celery's broker (kombu) also keeps a binding set per queue, named after the queue.
    for pattern in (PREFIX + "*", "_kombu.binding." + PREFIX + "*"):
        for key in r.scan_iter(match=pattern, count=1000):
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


@pytest.fixture(scope="module")
def restore_migrated_data(django_db_setup, django_db_blocker):
    """After a module of transactional tests, put the database back as the migrations left it.

    A transactional test ends with a flush that also empties what data migrations created
    (the console's role groups), and without `serialized_rollback` the flush re-creates
    content types under new ids. Later tests in the same process expect the migrated rows
    with their original ids, so: flush without post-migrate, then load Django's serialized
    copy of the migrated database (see tests/monitoring/helpers.py).
    """
    yield
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.db import connections

    from balancer.roles import ROLES

    with django_db_blocker.unblock():
        for connection in connections.all(initialized_only=True):
            contents = getattr(connection, "_test_serialized_contents", None)
            if contents:
                call_command("flush", database=connection.alias, interactive=False, inhibit_post_migrate=True,
                             verbosity=0)
                connection.creation.deserialize_db_from_string(contents)
            else:  # no serialized copy in this run: the role names are what the tests need
                for name in ROLES:
                    Group.objects.using(connection.alias).get_or_create(name=name)
