"""Placing requests from the local cache: the router keeps the scheduler's candidates and the
servers that keep their clients between two changes of the server states, and must place
exactly as `Dispatcher.pick_new` and `Dispatcher.stuck_server` would."""
import pytest

from proxyworker.config import Persistence, Pool, RealServer, VirtualService
from proxyworker.dispatch import Counters, Dispatcher, Service
from proxyworker.l7.cookies import L7Persistence
from proxyworker.l7.routing import Router
from proxyworker.persistence import PersistenceTable
from proxyworker.scheduler import make_scheduler
from proxyworker.state import HOLD_DOWN_SECONDS, ServerStates


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def services(scheduler: str):
    """Two identical services (same servers): one placed by the router, one by pick_new."""
    servers = (RealServer("web/a", "a", "10.0.0.1", 80), RealServer("web/b", "b", "10.0.0.2", 80, weight=3),
               RealServer("web/c", "c", "10.0.0.3", 80), RealServer("web/spare", "spare", "10.0.0.4", 80, backup=True))
    vs = VirtualService("vip", "127.0.0.1", 443, "web", mode="l7", scheduler=scheduler,
                        persistence=Persistence(method="cookie_learn"))
    pool = Pool("web", servers)
    return [Service(vs, pool, make_scheduler(scheduler), Counters()) for _ in range(2)]


@pytest.mark.parametrize("scheduler", ["round_robin", "weighted_round_robin", "least_connections",
                                       "first_available"])
def test_the_router_places_as_pick_new_while_states_change(scheduler):
    clock, states = Clock(), ServerStates()
    active = {}
    dispatcher = Dispatcher(states, PersistenceTable(), None, active, clock)
    routed, reference = services(scheduler)
    router = Router(dispatcher, routed, L7Persistence(routed.vs.persistence, routed.vs.group))
    route = router.route([], None)
    changes = [
        lambda: None,
        lambda: states.update({"web/a": "down"}, {}),
        lambda: states.update({"web/a": "down"}, {"web/c": "drain"}),
        lambda: states.connect_failed("web/b", clock.now),  # every primary unusable: the backup
        lambda: setattr(clock, "now", clock.now + HOLD_DOWN_SECONDS),  # the hold-down runs out, no call
        lambda: states.update({}, {}),
        lambda: states.connect_failed("web/c", clock.now),
        lambda: states.connect_succeeded("web/c"),
        lambda: states.update({}, {"web/a": "disabled", "web/b": "disabled", "web/c": "disabled"}),
        lambda: states.update({"web/spare": "down"}, {"web/a": "disabled", "web/b": "disabled", "web/c": "disabled"}),
        lambda: states.update({}, {}),
    ]
    for change in changes:
        change()
        for _ in range(7):
            decided, choice = router.choose_now(route)
            expected = dispatcher.pick_new(reference, frozenset())
            assert decided
            assert (choice.server.id if choice else None) == (expected.id if expected else None)
            if choice:
                dispatcher.reserve(choice.server)  # least connections sees the load grow
            clock.now += 0.1
    assert states.version >= 8


def test_a_client_stays_on_its_server_as_stuck_server_says_while_states_change():
    clock, states = Clock(), ServerStates()
    table = PersistenceTable()
    dispatcher = Dispatcher(states, table, None, {}, clock)
    routed, reference = services("round_robin")
    router = Router(dispatcher, routed, L7Persistence(routed.vs.persistence, routed.vs.group))
    route = router.route([(b"Cookie", b"JSESSIONID=s1")], None)
    table.remember(routed.vs.group, route.keys[0], "10.0.0.1", 600, clock.now, confirmed=True)
    for health, admin in [({}, {}), ({}, {"web/a": "drain"}), ({"web/a": "down"}, {}), ({}, {}),
                          ({}, {"web/a": "disabled"}), ({}, {"web/a": "enabled"})]:
        states.update(health, admin)
        stuck = dispatcher.stuck_server(reference, "10.0.0.1", frozenset())
        for _ in range(3):
            decided, choice = router.choose_now(route)
            assert decided
            if stuck is not None:
                assert choice.server.id == stuck.id and choice.client_key == route.keys[0]
            else:  # its server no longer keeps it: balanced, and it learns the new server's cookie
                assert choice.server.id != "web/a" and choice.client_key == ""
    states.connect_failed("web/a", clock.now)  # a hold-down stops new clients, not stuck ones
    assert router.choose_now(route)[1].server.id == "web/a"


def test_a_hold_down_expiring_brings_the_server_back_without_a_state_change():
    clock, states = Clock(), ServerStates()
    dispatcher = Dispatcher(states, PersistenceTable(), None, {}, clock)
    routed, _ = services("first_available")
    router = Router(dispatcher, routed, L7Persistence(routed.vs.persistence, routed.vs.group))
    route = router.route([], None)
    assert router.choose_now(route)[1].server.id == "web/a"
    states.connect_failed("web/a", clock.now)
    assert router.choose_now(route)[1].server.id == "web/b"
    version = states.version
    clock.now += HOLD_DOWN_SECONDS - 0.01
    assert router.choose_now(route)[1].server.id == "web/b"
    clock.now += 0.01
    assert router.choose_now(route)[1].server.id == "web/a" and states.version == version
