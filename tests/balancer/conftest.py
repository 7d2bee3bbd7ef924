"""Users for each role, a small Horizon configuration, certificates, and a clean Redis namespace per test."""
import pytest
from django.contrib.auth.models import Group

from balancer.models import Certificate, HealthCheck, PersistencePolicy, Pool, RealServer, VirtualService
from tests.l7.pki import Pki

PASSWORD = "correct-horse-battery"


def make_user(django_user_model, name, role):
    user = django_user_model.objects.create_user(name, password=PASSWORD)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Hashing a password the production way takes most of a page test's time; these tests check pages."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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


@pytest.fixture(scope="session")
def pki():
    """root -> intermediate -> leaf for horizon.example.com and view.example.com (EC keys: fast)."""
    return Pki(("horizon.example.com", "view.example.com"))


def make_certificate(name, cert_pem, key_pem, chain_pem=""):
    cert = Certificate(name=name)
    cert.set_material(cert_pem, chain_pem, key_pem)
    cert.full_clean()
    cert.save()
    return cert


@pytest.fixture
def certificate(db, pki):
    return make_certificate("horizon-cert", pki.leaf_pem, pki.key_pem, pki.chain_pem)


@pytest.fixture
def layer7(horizon, certificate):
    """The Horizon VIP as a layer-7 service presenting `certificate`, cookie persistence."""
    policy = PersistencePolicy.objects.create(name="jsessionid", method="cookie_learn", timeout=5400)
    vip = horizon["vip"]
    vip.mode, vip.persistence = "l7", policy
    vip.save()
    vip.set_certificates([certificate])
    return {**horizon, "vip": vip, "certificate": certificate, "cookie_policy": policy}
