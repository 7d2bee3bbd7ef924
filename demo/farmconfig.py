"""Turn a farm description (demo.farm's JSON) into a viewlb configuration snapshot.

    python -m demo.farmconfig [--farm var/demo/farm.json] [--vip 127.0.0.1] [--https-port 8443] > snapshot.json

Layer 4 with source-IP persistence in one persistence group, the method
HORIZON.md recommends: the HTTPS VIP (phase 1 and the tunnel) and one VIP per
bypass port (RDP, USB, MMR, PCoIP, Blast UDP), all following each other. The
HTTPS pool is checked with `GET /favicon.ico` (503 = drain), bypass TCP
pools with a TCP connect. The output follows proxyworker.config's schema and
is validated with it; the console or a test publishes it.
"""
from __future__ import annotations

import argparse
import json
import sys

from demo.farm import DEFAULT_OUT
from proxyworker.config import ConfigError, Snapshot

GROUP = "horizon"
PERSISTENCE = {"method": "source_ip", "timeout": 5400}  # Horizon 8: 3 x 30-minute heartbeats


def snapshot_dict(servers: list[dict], vip: str = "127.0.0.1", https_port: int = 8443, version: int = 0) -> dict:
    pools, services = [], []

    def add(name, port_of, health_check):
        members = [{"id": f"{name}/{s['name']}", "name": s["name"], "address": s["address"], "port": port_of(s)}
                   for s in servers]
        pools.append({"name": name, "servers": members, "health_check": health_check})

    add("horizon-https", lambda s: s["https_port"], {"type": "https", "path": "/favicon.ico"})
    services.append(_service("horizon-https", vip, https_port, "tcp"))
    for i, port in enumerate(servers[0]["tcp_ports"]):
        add(f"horizon-tcp-{port}", lambda s, i=i: s["tcp_ports"][i], {"type": "tcp"})
        services.append(_service(f"horizon-tcp-{port}", vip, port, "tcp"))
    for i, port in enumerate(servers[0]["udp_ports"]):
        add(f"horizon-udp-{port}", lambda s, i=i: s["udp_ports"][i], None)
        services.append(_service(f"horizon-udp-{port}", vip, port, "udp"))
    return {"version": version, "pools": pools, "virtual_services": services}


def _service(name, vip, port, protocol):
    return {"name": name, "address": vip, "port": port, "pool": name, "protocol": protocol,
            "persistence": PERSISTENCE, "persistence_group": GROUP}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.farmconfig", description=__doc__.split("\n\n")[0])
    p.add_argument("--farm", default=DEFAULT_OUT)
    p.add_argument("--vip", default="127.0.0.1", help="the balancer's listen address")
    p.add_argument("--https-port", type=int, default=8443, help="the HTTPS VIP's port")
    args = p.parse_args(argv)
    try:
        with open(args.farm) as f:
            servers = json.load(f)["servers"]
        snapshot = Snapshot.from_dict(snapshot_dict(servers, args.vip, args.https_port))
    except ConfigError as exc:
        print(f"farmconfig: the farm does not make a valid configuration: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"farmconfig: cannot read the farm description {args.farm}: {exc!r}", file=sys.stderr)
        return 2
    print(snapshot.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
