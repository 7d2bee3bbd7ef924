"""Users for each role, a small Horizon configuration, and a clean Redis namespace per test."""
import pytest
from django.contrib.auth.models import Group

from balancer.models import HealthCheck, PersistencePolicy, Pool, RealServer, VirtualService

PASSWORD = "correct-horse-battery"


def make_user(django_user_model, name, role):
    user = django_user_model.objects.create_user(name, password=PASSWORD)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def admin_user(django_user_model):
    return make_user(django_user_model, "alice", "admin")


@pytest.fixture
def operator_user(django_user_model):
    return make_user(django_user_model, "oscar", "operator")


@pytest.fixture
def viewer_user(django_user_model):
    return make_user(django_user_model, "vera", "viewer")


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture(autouse=True)
def clean_redis(redis_client, keys):
    """Each test starts with no published snapshot and no admin states under this process's prefix."""
    redis_client.delete(keys.config, keys.admin)
    yield
    redis_client.delete(keys.config, keys.admin)


@pytest.fixture
def horizon(db):
    """Two UAGs behind one VIP with source-IP persistence, checked the VMware way."""
    policy = PersistencePolicy.objects.create(name="horizon-ip", method="source_ip", timeout=5400, ipv4_mask=24)
    check = HealthCheck.objects.create(name="favicon", interval=30.0, timeout=5.0)
    pool = Pool.objects.create(name="uag", health_check=check)
    uag1 = RealServer.objects.create(pool=pool, name="uag1", address="127.0.0.11", port=9443)
    uag2 = RealServer.objects.create(pool=pool, name="uag2", address="127.0.0.12", port=9443)
    vip = VirtualService.objects.create(
        name="horizon-443", address="127.0.0.1", port=8443, pool=pool, persistence=policy,
        persistence_group="horizon",
    )
    return {"policy": policy, "check": check, "pool": pool, "uag1": uag1, "uag2": uag2, "vip": vip}
