"""Schedulers and server states, without sockets."""
from collections import Counter

from proxyworker.config import RealServer
from proxyworker.scheduler import (
    FirstAvailable,
    LeastConnections,
    RoundRobin,
    WeightedRoundRobin,
    candidates,
    make_scheduler,
)
from proxyworker.state import ServerStates, effective_state


def srv(name, weight=1, backup=False, admin_state="enabled"):
    return RealServer(id=f"p/{name}", name=name, address="10.0.0.1", port=443, weight=weight, backup=backup,
                      admin_state=admin_state)


A, B, C = srv("a"), srv("b"), srv("c")


def picks(scheduler, servers, n, active=None):
    return [scheduler.pick(servers, active or {}).name for _ in range(n)]


def test_it_rotates_round_robin_in_pool_order():
    assert picks(RoundRobin(), [A, B, C], 6) == ["a", "b", "c", "a", "b", "c"]


def test_it_keeps_round_robin_even_when_a_server_leaves():
    rr = RoundRobin()
    picks(rr, [A, B, C], 2)
    assert Counter(picks(rr, [A, C], 10)) == {"a": 5, "c": 5}


def test_it_spreads_weighted_round_robin_smoothly():
    heavy, b, c = srv("a", weight=5), srv("b"), srv("c")
    sequence = picks(WeightedRoundRobin(), [heavy, b, c], 7)
    assert sequence == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's smooth order, not a burst of five


def test_it_honours_weights_over_many_rounds():
    sequence = picks(WeightedRoundRobin(), [srv("a", weight=3), srv("b", weight=1)], 400)
    assert Counter(sequence) == {"a": 300, "b": 100}


def test_it_prefers_the_least_connections_per_weight():
    lc = LeastConnections()
    assert lc.pick([A, B, C], {"p/a": 3, "p/b": 1, "p/c": 2}).name == "b"
    big = srv("big", weight=4)
    assert lc.pick([A, big], {"p/a": 1, "p/big": 3}).name == "big"  # 3/4 < 1/1


def test_it_shares_least_connection_ties():
    assert Counter(picks(LeastConnections(), [A, B, C], 9)) == {"a": 3, "b": 3, "c": 3}


def test_it_sends_everything_to_the_first_available():
    assert picks(FirstAvailable(), [B, A, C], 3) == ["b", "b", "b"]


def test_it_uses_backups_only_when_no_primary_is_usable():
    backup = srv("backup", backup=True)
    servers = [A, backup, B]
    assert candidates(servers, lambda s: True) == [A, B]
    assert candidates(servers, lambda s: s is not A) == [B]
    assert candidates(servers, lambda s: s is backup) == [backup]
    assert candidates(servers, lambda s: False) == []


def test_it_returns_none_without_candidates():
    for name in ("round_robin", "weighted_round_robin", "least_connections", "first_available"):
        assert make_scheduler(name).pick([], {}) is None


def test_it_takes_the_worst_of_health_and_admin_state():
    assert effective_state(None, None, "enabled") == "up"
    assert effective_state("up", "drain", "enabled") == "drain"
    assert effective_state("drain", None, "enabled") == "drain"
    assert effective_state("down", "drain", "enabled") == "down"
    assert effective_state("up", None, "disabled") == "disabled"
    assert effective_state("up", "enabled", "disabled") == "up"  # the console's admin hash wins over the snapshot
    assert effective_state("bogus", None, "enabled") == "up"


def test_it_lets_stuck_clients_reach_a_draining_server_only():
    states = ServerStates()
    states.update({"p/b": "drain", "p/c": "down"}, {})
    assert states.accepts_new(A, 0) and states.accepts_stuck(A)
    assert not states.accepts_new(B, 0) and states.accepts_stuck(B)
    assert not states.accepts_new(C, 0) and not states.accepts_stuck(C)
    assert not states.accepts_new(srv("zero", weight=0), 0)


def test_it_holds_a_failed_server_back_from_new_clients_for_a_moment():
    states = ServerStates()
    states.connect_failed("p/a", now=100.0)
    assert not states.accepts_new(A, 100.5)
    assert states.accepts_stuck(A)
    assert states.accepts_new(A, 103.0)
