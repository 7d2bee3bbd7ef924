"""Placing a client without awaiting Redis (`Dispatcher.choose_now`), sans-io."""
from proxyworker.config import Keys, Persistence, Pool, RealServer, VirtualService
from proxyworker.dispatch import Counters, Dispatcher, Service
from proxyworker.persistence import TRUST_SECONDS, PersistenceTable, SharedPersistence
from proxyworker.scheduler import make_scheduler
from proxyworker.state import ServerStates

A = RealServer(id="p/a", name="a", address="10.0.0.1", port=443)
B = RealServer(id="p/b", name="b", address="10.0.0.2", port=443)


def setup(method="source_ip"):
    clock = [100.0]
    table, states = PersistenceTable(), ServerStates()
    vs = VirtualService(name="v", address="127.0.0.1", port=8443, pool="p", persistence=Persistence(method=method))
    service = Service(vs, Pool(name="p", servers=(A, B)), make_scheduler("round_robin"), Counters())
    shared = SharedPersistence(Keys("unused"), table, lambda: clock[0])
    return Dispatcher(states, table, shared, {}, lambda: clock[0]), service, table, states, clock


def test_a_client_the_worker_does_not_know_needs_redis():
    dispatcher, service, *_ = setup()
    assert dispatcher.choose_now(service, "192.0.2.7") == (False, None)


def test_a_known_client_is_placed_at_once_and_a_stale_entry_is_queued_for_the_batched_refresh():
    dispatcher, service, table, _states, clock = setup()
    table.remember("v", "192.0.2.7", B.address, ttl=600, now=clock[0], confirmed=True)
    assert dispatcher.choose_now(service, "192.0.2.7") == (True, (B, "192.0.2.7"))
    assert table.take_dirty() == []  # trusted: nothing to confirm
    clock[0] += TRUST_SECONDS + 1
    assert dispatcher.choose_now(service, "192.0.2.7") == (True, (B, "192.0.2.7"))
    assert [entry[:3] for entry in table.take_dirty()] == [("v", "192.0.2.7", B.address)]


def test_a_known_client_whose_server_is_down_goes_through_redis_to_be_moved():
    dispatcher, service, table, states, clock = setup()
    table.remember("v", "192.0.2.7", B.address, ttl=600, now=clock[0], confirmed=True)
    states.update({"p/b": "down"}, {})
    assert dispatcher.choose_now(service, "192.0.2.7") == (False, None)


def test_without_persistence_the_scheduler_decides_at_once():
    dispatcher, service, *_ = setup(method="none")
    picks = [dispatcher.choose_now(service, "192.0.2.7")[1].server for _ in range(4)]
    assert picks == [A, B, A, B]
