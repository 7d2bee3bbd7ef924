"""Mutated requests, seeded and bounded: the parser never raises, and whatever it accepts is
forwarded so that an independent parser (h11) reads exactly the same requests."""
import random

import h11
import pytest

from proxyworker.l7.http1 import ProtocolError, RequestHead, ResponseParser

from .helpers import requests_of
from .test_serialize import forward, h11_reads

SEEDS = [
    b"GET /broker/xml HTTP/1.1\r\nHost: a\r\nCookie: JSESSIONID=1\r\n\r\n",
    b"POST /broker/xml HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
]
PIECES = [b"\r", b"\n", b" ", b"\t", b":", b",", b";", b"0", b"1", b"f", b"a", b"\x00", b"\"", b"\r\n",
          b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"Host: b\r\n", b"\r\n\r\n"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(data) + 1)
        kind = rng.random()
        if kind < 0.4:
            data = data[:i] + rng.choice(PIECES) + data[i:]
        elif kind < 0.7:
            data = data[:i] + data[i + rng.randint(1, 3):]
        else:
            data = data[:i] + rng.choice(PIECES) + data[i + 1:]
    return data


def parse_all(data):
    results = requests_of(data)
    accepted = [r for r in results if isinstance(r[0], RequestHead)]
    return accepted, [r for r in results if r[0] == "error"]


@pytest.mark.parametrize("seed", range(4))
def test_mutated_requests_are_refused_or_forwarded_unambiguously(seed):
    rng = random.Random(seed)
    accepted_total = refused_total = 0
    for _ in range(600):
        data = mutate(rng, rng.choice(SEEDS))
        accepted, refused = parse_all(data)  # must not raise
        refused_total += bool(refused)
        if not accepted:
            continue
        accepted_total += 1
        out = forward(data)
        ours = [(h.method, h.target, body) for h, body, _ in accepted]
        theirs = [(m, t, b) for m, t, _, b in h11_reads(out)]
        assert theirs == ours, data
        assert [(h.method, h.target, b) for h, b, _ in requests_of(out) if isinstance(h, RequestHead)] == ours
    assert accepted_total > 50 and refused_total > 50  # the mutations exercised both paths


@pytest.mark.parametrize("seed", range(2))
def test_mutated_responses_never_raise(seed):
    rng = random.Random(seed)
    seeds = [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
             b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
             b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"]
    for _ in range(500):
        data = mutate(rng, rng.choice(seeds))
        parser = ResponseParser()
        parser.expect(b"GET")
        events = parser.feed(data) + parser.feed_eof()
        errors = [e for e in events if isinstance(e, ProtocolError)]
        assert len(errors) <= 1 and (not errors or events[-1] is errors[0])


def test_h11_itself_agrees_on_the_seeds():
    for data in SEEDS:
        accepted, refused = parse_all(data)
        assert not refused
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(data)
        assert isinstance(conn.next_event(), h11.Request)
