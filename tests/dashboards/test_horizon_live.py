"""One Horizon session end to end: a client's TCP connection and UDP flow through a real proxy worker reach
the same server (port following), the Horizon-sessions page in a real Chromium shows them as one row with
both channels, Kill on that page makes the worker close them all, and Move sends the client's reconnects on
both ports to the other server."""
import socket

import pytest
from playwright.sync_api import expect

from tests.backends import start_backend
from tests.conftest import PREFIX, REDIS_URL, free_port
from tests.proxyworker.harness import closed_by_peer

from .stack import wait_for

pytestmark = pytest.mark.xdist_group("dashboards")

LIVE = 10_000  # ms
SOURCE = "127.0.0.200"  # the client's own loopback address: its own persistence entry and row
MOVED = "127.0.0.201"  # the client of the move test


@pytest.fixture(scope="module")
def blast_udp(stack, django_db_blocker):
    """A Blast-like UDP VIP in the stack's persistence group, served on the same hosts as its TCP servers."""
    import redis
    from django.contrib.auth import get_user_model

    from balancer import services
    from balancer.models import PersistencePolicy, Pool, RealServer, VirtualService
    from proxyworker.config import Keys

    udp = {name: start_backend(name, host=b.host, udp=True) for name, b in stack.backends.items()}
    client, keys = redis.Redis.from_url(REDIS_URL, decode_responses=True), Keys(PREFIX)
    port = free_port(kind=socket.SOCK_DGRAM)
    with django_db_blocker.unblock():
        admin = get_user_model().objects.get(username=stack.username)
        pool = Pool.objects.create(name="dash-uag-udp")
        for name, backend in udp.items():
            RealServer.objects.create(pool=pool, name=name, address=backend.host, port=backend.port)
        VirtualService.objects.create(name="dash-blast-udp", address="127.0.0.1", port=port, protocol="udp", pool=pool,
                                      persistence=PersistencePolicy.objects.get(name="dash-ip"),
                                      persistence_group="dash-horizon")
        version = services.publish(admin, "dashboards test").number
    wait_for(lambda: f'"config_version":{version}' in (client.get(keys.worker(stack.worker_id)) or ""), timeout=15,
             message="the worker to apply the UDP VIP")
    try:
        yield port
    finally:
        with django_db_blocker.unblock():
            VirtualService.objects.filter(name="dash-blast-udp").delete()
            Pool.objects.filter(name="dash-uag-udp").delete()
            services.publish(admin, "dashboards test")
        for backend in udp.values():
            backend.stop()
        client.delete(keys.persist("dash-horizon", SOURCE), keys.persist("dash-horizon", MOVED))
        client.close()


def blast_udp_sessions(stack, source=SOURCE) -> list[str]:
    """The worker's stored sessions of this client (raw JSON)."""
    import redis

    from proxyworker.config import Keys

    with redis.Redis.from_url(REDIS_URL, decode_responses=True) as client:
        stored = client.hvals(Keys(PREFIX).sessions(stack.worker_id))
    return [raw for raw in stored if f'"client_key":"{source}"' in raw]


def test_a_sessions_tcp_and_udp_channels_show_as_one_row_and_kill_closes_them(stack, login, blast_udp):
    page = login()
    page.goto(stack.url + "/live/horizon/?client=" + SOURCE)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=LIVE)
    expect(page.locator("#horizon")).to_contain_text("No Horizon sessions match this filter")

    tcp, server_name = stack.connect(source=SOURCE)
    tcp.sendall(b"x" * 3000)
    echoed = 0
    while echoed < 3000:
        echoed += len(tcp.recv(65536))
    flow = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flow.bind((SOURCE, 0))
    flow.settimeout(3)
    flow.sendto(b"blast", ("127.0.0.1", blast_udp))
    reply, _ = flow.recvfrom(2048)
    assert reply == server_name.encode() + b"|blast"  # the UDP flow followed its TCP server (port following)
    wait_for(lambda: len(blast_udp_sessions(stack)) == 2, timeout=5, message="the worker to list both sessions")

    # The row arrives without a reload: the page refreshes its table when the workers report new connections.
    row = page.locator(f'#horizon tr[data-group="dash-horizon"][data-client-key="{SOURCE}"]')
    expect(row).to_be_visible(timeout=LIVE)
    expect(row.locator('[data-field="connections"]')).to_have_text("2")
    channels = row.locator('[data-field="channels"]')
    expect(channels).to_contain_text(f"{stack.vip_port}/tcp")
    expect(channels).to_contain_text(f"{blast_udp}/udp")
    expect(channels).to_contain_text("dash-blast-udp")
    expect(row.locator('[data-field="server"]')).to_contain_text(server_name)
    expect(row.locator('[data-field="server"]')).to_contain_text(stack.backends[server_name].host)

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Kill session").click()
    expect(page.locator(".message-success")).to_contain_text(f"Killed the session of {SOURCE} (group dash-horizon)")
    assert closed_by_peer(tcp, timeout=5), "the worker did not close the TCP connection"
    expect(page.locator("#horizon")).to_contain_text("No Horizon sessions match this filter", timeout=LIVE)
    # The UDP flow ended too: the worker no longer lists anything of this client.
    wait_for(lambda: not blast_udp_sessions(stack), timeout=5, message="the worker to drop the client's sessions")
    tcp.close()
    flow.close()


def udp_ask(port: int, source: str) -> str:
    """Which server answers a new UDP flow from `source` (a fresh client port: a new flow)?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flow:
        flow.bind((source, 0))
        flow.settimeout(3)
        flow.sendto(b"hello", ("127.0.0.1", port))
        return flow.recvfrom(2048)[0].decode().partition("|")[0]


def test_move_sends_the_clients_reconnects_on_every_port_to_the_other_server(stack, login, blast_udp):
    tcp, before = stack.connect(source=MOVED)
    assert udp_ask(blast_udp, MOVED) == before
    other = next(name for name in stack.backends if name != before)
    page = login()
    page.goto(stack.url + "/live/horizon/?client=" + MOVED)
    row = page.locator(f'#horizon tr[data-client-key="{MOVED}"]')
    expect(row.locator('[data-field="server"]')).to_contain_text(before, timeout=LIVE)

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Move to another server").click()
    expect(page.locator(".message-success")).to_contain_text(
        f"Moved {MOVED} (group dash-horizon) from {stack.backends[before].host} to {stack.backends[other].host}")
    assert closed_by_peer(tcp, timeout=5), "the worker did not close the TCP connection"
    tcp.close()
    again, after = stack.connect(source=MOVED)
    assert after == other and udp_ask(blast_udp, MOVED) == other  # both ports follow the moved entry
    expect(row.locator('[data-field="server"]')).to_contain_text(other, timeout=LIVE)
    again.close()
