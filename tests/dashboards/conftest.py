"""One appliance for the whole package (daphne, a proxy worker, Celery with beat, two backends) and one
Chromium; both end when the package's last test has run, so other packages on this test process find
their Redis prefix, Celery queue and database as they expect."""

import uuid

import pytest

from proxyworker.config import Keys
from tests.browser import chromium
from tests.conftest import PREFIX, REDIS_URL

from . import livedata
from .stack import PASSWORD, Stack, remove_config, start_daphne, start_worker, wait_for


@pytest.fixture(scope="package")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    import redis
    from django.contrib.auth import get_user_model

    from balancer.models import AuditEntry
    from tests.monitoring.celeryproc import CeleryWorker

    from .stack import build_config

    logs = tmp_path_factory.mktemp("dashboards")
    client, keys = redis.Redis.from_url(REDIS_URL, decode_responses=True), Keys(PREFIX)
    processes = []
    with django_db_blocker.unblock():
        since = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
        admin = get_user_model().objects.create_superuser("dash-admin", password=PASSWORD)
        try:
            backends, servers, vip_port, version = build_config(admin)
            celery = CeleryWorker(logs).start()
            processes.append(celery)
            daphne, url = start_daphne(logs)
            processes.append(daphne)
            worker = start_worker(logs, f"dash-{PREFIX[-6:]}")
            processes.append(worker)

            def applied():
                worker.check_alive()
                raw = client.get(keys.worker(worker.name))
                return raw and f'"config_version":{version}' in raw

            wait_for(applied, timeout=15, message=f"the worker to apply version {version}")
            yield Stack(url=url, vip_port=vip_port, username="dash-admin", backends=backends, servers=servers,
                        worker_id=worker.name, processes=processes, cookie=login_cookie(admin))
        finally:
            for process in reversed(processes):
                process.stop()
            for backend in locals().get("backends", {}).values():
                backend.stop()
            remove_config(since)
            admin.delete()
            for key in (keys.config, keys.admin, keys.health, keys.health_detail):
                client.delete(key)
            for key in client.scan_iter(match=keys.persist_pattern(), count=1000):
                client.delete(key)


def login_cookie(user) -> str:
    """Made here, before Playwright runs an event loop in this thread (the ORM refuses to run beside one)."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


@pytest.fixture(scope="package")
def browser(stack):
    with chromium() as started:
        yield started


@pytest.fixture
def login(stack, browser):
    """login() -> a new page of a fresh browser context, logged in as the admin."""
    contexts = []

    def open_page(viewport=None):
        context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.goto(stack.url + "/accounts/login/")
        page.fill("#id_username", stack.username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(stack.url + "/live/")
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture(scope="package")
def session_cookie(stack):
    """The Cookie header of a logged-in admin session, for WebSocket clients that are not a browser."""
    return stack.cookie


@pytest.fixture
def keys(settings, redis_client):
    """A Redis prefix of this test's own, for the console (settings) and for the data the test writes
    (the page tests that do not need the package's running stack)."""
    keys = Keys(f"{PREFIX}pg{uuid.uuid4().hex[:6]}")
    settings.VIEWLB_REDIS_PREFIX = keys.prefix
    yield keys
    livedata.remove(redis_client, keys)


@pytest.fixture
def admin(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password=None))
    return client
