"""viewlb's data plane: a standalone asyncio proxy worker (`python -m proxyworker`).

It imports no Django app; it knows the system through the Redis contract
(shared/DESIGN.md) and the snapshot schema in `config.py`.

Sans-io core (no sockets, time passed in):
- `scheduler`   round robin, weighted round robin, least connections, first available
- `persistence` client keys under a netmask, the local table, the shared Redis store
- `state`       server states from health + admin, local hold-down after a failed connect
- `dispatch`    a client's server: persistence first, then the scheduler
I/O:
- `server`      listeners, TCP forwarding, UDP flows (the only module with sockets)
- `sync`        config versions and server states from Redis
- `reporting`   heartbeat, live sessions hash, batched Channels messages (`messages`)
- `worker`      config diffs, bookkeeping, sweeps, graceful stop
"""
