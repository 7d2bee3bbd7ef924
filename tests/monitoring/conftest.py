import pytest

from .servers import Servers, self_signed, server_tls_context


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def servers(certificate):
    servers = Servers(tls=server_tls_context(*certificate))
    yield servers
    servers.close()


@pytest.fixture(scope="module")
def restore_migrated_data(django_db_setup, django_db_blocker):
    """Put back the rows data migrations created, after a module of TRANSACTIONAL tests (see helpers.py)."""
    yield
    from django.db import connections

    with django_db_blocker.unblock():
        for connection in connections.all(initialized_only=True):
            contents = getattr(connection, "_test_serialized_contents", None)
            if contents:
                connection.creation.deserialize_db_from_string(contents)
