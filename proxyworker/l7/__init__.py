"""Layer 7 for the proxy worker: TLS termination and HTTP/1.1 routed request by request.

Sans-io (no socket, no clock):
- `http1`: strict HTTP/1.1 request and response parsers (bytes in, events out);
- `chunked`: the strict chunked-body decoder both parsers share;
- `serialize`: writes requests and responses with normalised framing;
- `cookies`: layer-7 persistence decisions (JSESSIONID learn, insert, fallback);
- `deadline`: the slow-request-head (slowloris) policy;
- `routing`: those decisions against the worker's shared persistence store.
I/O (registered by the worker as the ("l7", "tcp") listener):
- `listener`: the VIP's TLS contexts (SNI), backend TLS, routing, server pool;
- `connection`: one client connection, the loop below with real sockets;
- `upstream`: server connections and the pool of idle keep-alive ones.
TLS contexts and certificate checks live in `proxyworker.tlsconf`. Environment:
VIEWLB_CERT_KEY (decrypts private keys; the insert-cookie secret derives from
it), VIEWLB_L7_HEAD_TIMEOUT (seconds for the TLS handshake and each request
head, default 10).

How the layer-7 handler uses the sans-io parts (tests/l7/test_exchange.py runs
this loop without sockets, tests/l7/test_worker_*.py through a real worker):

1. accept, wrap with `tlsconf.server_context(...)`; `HeadDeadline.begin(now)`;
2. feed client bytes to `RequestParser.feed`; after each feed
   `deadline.update(parser.in_head, now)`; a sweep answers an expired deadline
   with `serialize.error_response(408)` and closes; stop reading the client
   while `parser.paused`;
3. `RequestHead`: `deadline.head_arrived()`; `L7Persistence.route(head.cookies,
   source_key, pool hosts)` -> pinned host, else the first persistence key
   found in the store, else the scheduler (the route is kept while a
   connection sends the same Cookie fields under the same config); write
   `serialize.request_head_bytes(head, client_ip, drop_cookie=...)` to a
   server connection, then `body_bytes`/`end_bytes` for Body/EndOfMessage;
   `ResponseParser.expect(head.method, bool(head.upgrade), head.tunnel)`;
4. `ResponseHead` from the server: `L7Persistence.learn(route,
   head.set_cookies, ...)` -> entries to
   store/forget and headers to add; write `response_head_bytes(head,
   response_framing(head, request.version), keep_alive=client_keep_alive(...),
   extra=learn.add_headers)`, then the body; interim (1xx) heads go out as they
   come; at EndOfMessage, `parser.next_request()` (or close when not keep-alive);
5. `ProtocolError` from the client: answer `error_response(status, reason)` if
   no response has started, close the client AND the server connection that
   received a partial request (never reuse it); from a server: 502 likewise;
6. 101 to an Upgrade request: `parser.upgrade_accepted()`, other answers
   `parser.upgrade_refused()`; `Passthrough` events (after 101 or a tunnel
   head, both directions) are raw bytes bound by the idle timeout only.
"""
