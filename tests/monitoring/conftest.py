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
