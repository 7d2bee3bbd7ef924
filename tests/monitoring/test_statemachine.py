"""The state machine, exhaustively and without I/O."""
import pytest

from monitoring.checks import CheckResult
from monitoring.statemachine import Counters, effective_state, observe

UP = CheckResult("up", 200, 1.0)
DRAIN = CheckResult("drain", 503, 1.0)
FAIL = CheckResult("fail", error="connection refused")


def run(results, rise=2, fall=3, start=Counters()):
    """Feed results; return the operational state after each one and the reasons of changes."""
    counters, states, reasons = start, [], []
    for result in results:
        step = observe(counters, result, rise, fall)
        counters = step.counters
        states.append(counters.operational)
        if step.reason:
            reasons.append(step.reason)
    return states, reasons


def test_it_goes_down_after_fall_failures_in_a_row():
    states, reasons = run([FAIL, FAIL, FAIL, FAIL])
    assert states == ["up", "up", "down", "down"]
    assert reasons == ["3 failed checks in a row: connection refused"]


def test_a_good_check_resets_the_failure_count():
    states, _ = run([FAIL, FAIL, UP, FAIL, FAIL, UP])
    assert states == ["up"] * 6


def test_it_returns_only_after_rise_good_checks():
    down = Counters("down", 0, 5)
    states, reasons = run([UP, FAIL, UP, UP, UP], rise=3, start=down)
    assert states == ["down", "down", "down", "down", "up"]
    assert reasons == ["3 good checks in a row"]


def test_fall_1_and_rise_1():
    states, _ = run([FAIL, UP, FAIL], rise=1, fall=1)
    assert states == ["down", "up", "down"]


def test_503_drains_at_once_from_any_state():
    for start in (Counters("up"), Counters("down", 0, 9)):
        states, reasons = run([DRAIN, DRAIN], start=start)
        assert states == ["drain", "drain"]
        assert reasons == ["answered 503: quiesced, draining"]


def test_a_quiesced_server_that_answers_200_again_is_up_at_once():
    states, reasons = run([DRAIN, DRAIN, UP])
    assert states == ["drain", "drain", "up"]
    assert reasons[-1] == "answered 200: no longer quiesced"


def test_a_dead_server_that_comes_back_quiesced_still_needs_rise():
    states, _ = run([DRAIN, UP, UP], rise=3, start=Counters("down", 0, 4))
    assert states == ["drain", "drain", "up"]


def test_a_draining_server_that_dies_goes_down_after_fall():
    states, _ = run([DRAIN, FAIL, FAIL], fall=2)
    assert states == ["drain", "drain", "down"]


def test_counters_are_kept():
    step = observe(Counters("up", 4, 0), FAIL, 2, 3)
    assert step.counters == Counters("up", 0, 1)
    step = observe(step.counters, UP, 2, 3)
    assert step.counters == Counters("up", 1, 0)


@pytest.mark.parametrize(
    "operational, admin, expected",
    [
        ("up", "enabled", "up"),
        ("up", None, "up"),
        ("up", "drain", "drain"),
        ("up", "disabled", "disabled"),
        ("drain", "enabled", "drain"),
        ("down", "drain", "down"),  # a dead server gets not even its sticky clients
        ("down", "disabled", "disabled"),
        ("drain", "disabled", "disabled"),
    ],
)
def test_admin_states_pass_through(operational, admin, expected):
    assert effective_state(operational, admin) == expected
