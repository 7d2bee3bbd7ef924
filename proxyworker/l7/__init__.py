"""Layer-7 building blocks for the proxy worker, sans-io.

- `http1`: strict HTTP/1.1 request and response parsers (events out, bytes in);
- `chunked`: the strict chunked-body decoder both parsers share;
- `serialize`: writes requests and responses with normalised framing;
- `cookies`: layer-7 persistence decisions (JSESSIONID learn, insert, fallback);
- `deadline`: the slow-request-head (slowloris) policy.

Nothing here touches a socket or a clock: the worker's listener feeds bytes and
the current time in, and writes what comes out. TLS contexts live in
`proxyworker.tlsconf`.
"""
