"""Persistence keys, the local table and the shared store (real Redis, no sockets of our own)."""
import asyncio

import pytest
import redis.asyncio as aioredis

from proxyworker.config import Keys
from proxyworker.persistence import TRUST_SECONDS, PersistenceTable, SharedPersistence, client_key
from tests.conftest import PREFIX, REDIS_URL


@pytest.mark.parametrize("ip, v4, v6, key", [
    ("10.1.2.3", 32, 128, "10.1.2.3"),
    ("10.1.2.3", 24, 128, "10.1.2.0/24"),
    ("10.1.2.200", 24, 128, "10.1.2.0/24"),
    ("10.1.2.3", 16, 128, "10.1.0.0/16"),
    ("10.1.2.3", 0, 128, "0.0.0.0/0"),
    ("::ffff:10.1.2.3", 24, 64, "10.1.2.0/24"),  # a dual-stack socket's IPv4 client is still IPv4
    ("2001:db8::1", 32, 128, "2001:db8::1"),
    ("2001:db8:1:2:3::9", 32, 64, "2001:db8:1:2::/64"),
    ("2001:db8:1:2:3::9", 32, 48, "2001:db8:1::/48"),
    ("::1", 24, 128, "::1"),
    ("fe80::1%lo", 32, 128, "fe80::1"),
])
def test_it_keys_clients_by_source_address_under_the_mask(ip, v4, v6, key):
    assert client_key(ip, v4, v6) == key


def test_it_trusts_a_confirmed_entry_only_for_a_while():
    table = PersistenceTable()
    table.remember("g", "10.0.0.1", "h1", ttl=600, now=0.0, confirmed=True)
    assert table.lookup("g", "10.0.0.1", 1.0) == ("h1", True)
    assert table.lookup("g", "10.0.0.1", TRUST_SECONDS + 1) == ("h1", False)  # ask Redis again
    assert table.lookup("g", "10.0.0.1", 601.0) == (None, False)  # expired
    assert table.lookup("other", "10.0.0.1", 1.0) == (None, False)


def test_it_extends_active_entries_and_queues_them_for_redis():
    table = PersistenceTable()
    table.remember("g", "k", "h1", ttl=10, now=0.0, confirmed=True)
    assert table.take_dirty() == []
    table.touch("g", "k", "ignored-host", ttl=10, now=8.0)
    assert table.lookup("g", "k", 15.0)[0] == "h1"  # extended to 18, host unchanged
    assert table.take_dirty() == [("g", "k", "h1", 10)]
    assert table.take_dirty() == []
    assert table.purge(18.5) == 1 and len(table) == 0


def _store(prefix, url=REDIS_URL):
    table = PersistenceTable()
    client = aioredis.from_url(url, decode_responses=True, socket_connect_timeout=0.5)
    shared = SharedPersistence(Keys(prefix), table, asyncio.get_running_loop().time)
    shared.attach(client)
    return shared, client


def test_it_claims_once_and_everyone_reads_the_winner():
    async def scenario():
        prefix = PREFIX + "core1"
        first, c1 = _store(prefix)
        second, c2 = _store(prefix)
        assert await first.claim("g", "10.0.0.1", "h1", 60) == "h1"
        assert await second.claim("g", "10.0.0.1", "h2", 60) == "h1"  # the existing entry wins
        assert await second.claim("g", "10.9.9.9", None, 60) is None  # read-only claim of nothing
        assert await c1.ttl(Keys(prefix).persist("g", "10.0.0.1")) > 50
        await c1.aclose()
        await c2.aclose()

    asyncio.run(scenario())


def test_it_repoints_with_compare_and_set_so_workers_converge():
    async def scenario():
        prefix = PREFIX + "core2"
        first, c1 = _store(prefix)
        second, c2 = _store(prefix)
        await first.claim("g", "k", "h1", 60)
        await second.claim("g", "k", "h1", 60)
        # h1 died: both workers try to move the client, to different servers.
        assert await first.repoint("g", "k", "h1", "h2", 60) == "h2"
        assert await second.repoint("g", "k", "h1", "h3", 60) == "h2"  # adopts the first move
        assert second.table.lookup("g", "k", asyncio.get_running_loop().time())[0] == "h2"
        await c1.aclose()
        await c2.aclose()

    asyncio.run(scenario())


def test_it_refreshes_in_batches_and_adopts_what_others_wrote():
    async def scenario():
        prefix = PREFIX + "core3"
        keys = Keys(prefix)
        shared, client = _store(prefix)
        now = asyncio.get_running_loop().time()
        await shared.claim("g", "a", "h1", 60)
        await client.set(keys.persist("g", "a"), "h9", ex=5)  # another worker moved it
        shared.table.touch("g", "a", "h1", 60, now)
        shared.table.touch("g", "b", "h2", 60, now)  # only known locally so far
        assert await shared.refresh() == 2
        assert shared.table.lookup("g", "a", now)[0] == "h9"
        assert await client.ttl(keys.persist("g", "a")) > 50
        assert await client.get(keys.persist("g", "b")) == "h2"
        await client.aclose()

    asyncio.run(scenario())


def test_it_decides_locally_while_redis_is_unreachable_and_pushes_later():
    async def scenario():
        prefix = PREFIX + "core4"
        shared, dead = _store(prefix, url="redis://127.0.0.1:1/0")
        assert await shared.claim("g", "k", "h1", 60) == "h1"
        assert not shared.available
        assert await shared.claim("g", "k2", "h2", 60) == "h2"  # no wait on a known-dead Redis
        # Redis is back (a working client): the local decisions reach it with the next refresh.
        alive = aioredis.from_url(REDIS_URL, decode_responses=True)
        shared.attach(alive)
        shared.available = False
        assert await shared.refresh() == 2
        assert shared.available
        assert await alive.get(Keys(prefix).persist("g", "k")) == "h1"
        await dead.aclose()
        await alive.aclose()

    asyncio.run(scenario())
