import pytest

from tests.proxyworker.harness import Harness


@pytest.fixture(scope="module")
def harness(request, tmp_path_factory):
    """A Redis prefix of this module's own, and the workers it starts (killed at the end)."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    h = Harness(name, tmp_path_factory.mktemp(name))
    yield h
    h.close()


@pytest.fixture
def opened():
    """Track client sockets so they close even when a test fails (a leak would skew the next test)."""
    sockets = []

    def track(sock):
        sockets.append(sock)
        return sock

    yield track
    for sock in sockets:
        sock.close()
