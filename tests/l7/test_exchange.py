"""The pieces together, without sockets: 50 clients behind one address, per-request routing on
keep-alive connections, cookie learning, and servers (h11, an independent implementation) that
refuse sessions they did not issue. This is the loop the worker's layer-7 handler runs."""
import itertools

import h11

from proxyworker.config import Persistence
from proxyworker.l7.cookies import InsertCookie, L7Persistence, insert_secret
from proxyworker.l7.http1 import Body, EndOfMessage, RequestHead, RequestParser, ResponseHead, ResponseParser
from proxyworker.l7.serialize import (
    body_bytes,
    client_keep_alive,
    end_bytes,
    request_head_bytes,
    response_framing,
    response_head_bytes,
)

HOSTS = ("10.1.0.1", "10.1.0.2", "10.1.0.3")
SOURCE_KEY = "ip:198.51.100.7"  # every client comes from the same NAT address


class Server:
    """A Horizon-like server over h11: issues JSESSIONID, answers 403 to sessions it does not know."""

    def __init__(self, host):
        self.host, self.sessions, self.seen = host, set(), []
        self.conn = h11.Connection(h11.SERVER)
        self.counter = itertools.count(1)

    def handle(self, data: bytes) -> bytes:
        self.conn.receive_data(data)
        request = self.conn.next_event()
        assert isinstance(request, h11.Request)
        event = self.conn.next_event()
        while not isinstance(event, h11.EndOfMessage):
            assert event is not h11.NEED_DATA, "the forwarded request is incomplete"
            event = self.conn.next_event()
        headers = dict(request.headers)
        self.seen.append(headers)
        cookie = headers.get(b"cookie", b"").partition(b"JSESSIONID=")[2].split(b";")[0]
        extra = []
        if not cookie:
            cookie = f"{self.host}-{next(self.counter)}".encode()
            self.sessions.add(cookie)
            extra = [("Set-Cookie", b"JSESSIONID=" + cookie + b"; Path=/; Secure; HttpOnly")]
        status = 200 if cookie in self.sessions else 403
        body = self.host.encode()
        out = self.conn.send(h11.Response(status_code=status, headers=[("Content-Length", str(len(body)))] + extra))
        out += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
        self.conn.start_next_cycle()
        return out


class Proxy:
    """The layer-7 loop for one VIP: parse, route, rewrite, forward, learn, answer."""

    def __init__(self, l7: L7Persistence):
        self.l7, self.store = l7, {}
        self.servers = {h: Server(h) for h in HOSTS}
        self.backends = {h: ResponseParser() for h in HOSTS}
        self.balance = itertools.cycle(HOSTS)

    def route(self, head):
        route = self.l7.route(head.headers, SOURCE_KEY, HOSTS)
        host = route.pinned or next((self.store[k] for k in route.keys if k in self.store), None)
        return route, host or next(self.balance)

    def exchange(self, parser: RequestParser, client_bytes: bytes) -> bytes:
        out = []
        events = parser.feed(client_bytes)
        while events:
            head, body = events[0], b"".join(e.data for e in events if isinstance(e, Body))
            assert isinstance(head, RequestHead) and isinstance(events[-1], EndOfMessage)
            route, host = self.route(head)
            drop = b"VIEWLBSRV" if self.l7.method == "cookie_insert" else None
            upstream = request_head_bytes(head, "198.51.100.7", drop_cookie=drop) + body_bytes(head.framing, body)
            backend = self.backends[host]
            backend.expect(head.method)
            answer = backend.feed(self.servers[host].handle(upstream + end_bytes(head.framing)))
            response = answer[0]
            assert isinstance(response, ResponseHead) and isinstance(answer[-1], EndOfMessage)
            learned = self.l7.learn(route, response.headers, host, SOURCE_KEY)
            self.store.update(learned.store)
            framing = response_framing(response, head.version)
            out.append(response_head_bytes(response, framing, keep_alive=client_keep_alive(head, framing),
                                           extra=learned.add_headers))
            out.append(b"".join(body_bytes(framing, e.data) for e in answer if isinstance(e, Body)))
            events = parser.next_request()
        return b"".join(out)


class Client:
    """One browser-like client on one keep-alive connection through the proxy."""

    def __init__(self, proxy):
        self.proxy, self.parser = proxy, RequestParser()
        self.conn, self.jar = h11.Connection(h11.CLIENT), {}

    def get(self, target="/broker/xml"):
        headers = [("Host", "view.example.com")]
        if self.jar:
            headers.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.jar.items())))
        data = self.conn.send(h11.Request(method="POST", target=target, headers=headers + [("Content-Length", "2")]))
        data += self.conn.send(h11.Data(data=b"<>")) + self.conn.send(h11.EndOfMessage())
        self.conn.receive_data(self.proxy.exchange(self.parser, data))
        response = self.conn.next_event()
        body = self.conn.next_event().data
        assert isinstance(self.conn.next_event(), h11.EndOfMessage)
        self.conn.start_next_cycle()
        for name, value in response.headers:
            if name == b"set-cookie":
                cname, _, cvalue = value.split(b";")[0].decode().partition("=")
                self.jar[cname] = cvalue
        return response.status_code, body.decode()


def test_fifty_clients_behind_one_address_each_stay_on_the_server_that_issued_their_cookie():
    proxy = Proxy(L7Persistence(Persistence(method="cookie_learn"), "horizon"))
    clients = [Client(proxy) for _ in range(50)]
    first = {}
    for round_ in range(4):
        for n, client in enumerate(clients):
            status, server = client.get()
            assert status == 200, (round_, n)
            assert first.setdefault(n, server) == server
    spread = {host: list(first.values()).count(host) for host in HOSTS}
    assert all(count >= 10 for count in spread.values()), spread
    assert all(h[b"x-forwarded-for"] == b"198.51.100.7" for s in proxy.servers.values() for h in s.seen)
    assert all(h[b"host"] == b"view.example.com" for s in proxy.servers.values() for h in s.seen)


def test_insert_mode_keeps_clients_on_their_server_without_any_store():
    proxy = Proxy(L7Persistence(Persistence(method="cookie_insert"), "horizon", InsertCookie(insert_secret("k" * 44))))
    clients = [Client(proxy) for _ in range(9)]
    first = [c.get()[1] for c in clients]
    assert set(first) == set(HOSTS)
    for _ in range(3):
        assert [c.get()[1] for c in clients] == first
    assert all("VIEWLBSRV" in c.jar for c in clients) and proxy.store == {}
    assert not any(b"VIEWLBSRV" in h.get(b"cookie", b"") for s in proxy.servers.values() for h in s.seen)


def test_fallback_mode_sends_a_cookieless_client_by_its_address_then_by_its_cookie():
    proxy = Proxy(L7Persistence(Persistence(method="cookie_source_ip"), "horizon"))
    a, b = Client(proxy), Client(proxy)
    _, server_a = a.get()
    _, server_b = b.get()  # no cookie yet: the shared address leads it to a's server
    assert server_a == server_b
    assert a.get() == (200, server_a) and b.get() == (200, server_b)
