"""The slowloris policy, driven by a real parser and explicit times."""
import pytest

from proxyworker.l7.deadline import HeadDeadline
from proxyworker.l7.http1 import RequestParser

HEAD = b"GET /broker/xml HTTP/1.1\r\nHost: view.example.com\r\nUser-Agent: slow\r\n\r\n"


def test_a_head_sent_one_byte_at_a_time_expires_at_the_limit():
    parser, deadline = RequestParser(), HeadDeadline(10.0)
    deadline.begin(0.0)
    now = 0.0
    for byte in HEAD[:-1]:
        now += 0.5
        parser.feed(bytes([byte]))
        deadline.update(parser.in_head, now)
        if now >= 10.0:
            break
    assert deadline.expired(now)  # steady trickling never extends the deadline
    assert deadline.remaining(now) == 0.0


def test_a_head_completed_in_time_stops_the_clock():
    parser, deadline = RequestParser(), HeadDeadline(10.0)
    deadline.begin(100.0)
    parser.feed(HEAD[:20])
    deadline.update(parser.in_head, 104.0)
    assert not deadline.expired(109.9) and deadline.remaining(104.0) == pytest.approx(6.0)
    events = parser.feed(HEAD[20:])
    assert events and not parser.in_head
    deadline.head_arrived()
    assert not deadline.expired(1000.0) and deadline.remaining(1000.0) is None


def test_a_connection_that_never_sends_a_byte_expires():
    deadline = HeadDeadline(10.0)
    deadline.begin(5.0)
    assert not deadline.expired(14.9) and deadline.expired(15.0)


def test_empty_lines_do_not_reset_the_clock():
    parser, deadline = RequestParser(), HeadDeadline(10.0)
    deadline.begin(0.0)
    for t in range(1, 12):
        parser.feed(b"\r\n")
        deadline.update(parser.in_head, float(t))
    assert deadline.expired(11.0)


def test_between_requests_the_clock_waits_for_the_next_heads_first_byte():
    parser, deadline = RequestParser(), HeadDeadline(10.0)
    deadline.begin(0.0)
    parser.feed(HEAD)
    deadline.head_arrived()
    parser.next_request()
    deadline.update(parser.in_head, 50.0)
    assert not deadline.expired(500.0)  # idle between requests: the idle timeout's business
    parser.feed(b"GET / HT")
    deadline.update(parser.in_head, 600.0)
    assert not deadline.expired(609.0) and deadline.expired(610.0)


def test_the_limit_must_be_positive():
    with pytest.raises(ValueError):
        HeadDeadline(0)
