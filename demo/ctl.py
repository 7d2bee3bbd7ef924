"""Drive the simulated servers of a running farm: show failover and drain.

    python -m demo.ctl [--farm var/demo/farm.json] uag2 stop     # the server dies
    python -m demo.ctl uag2 start                                # and comes back
    python -m demo.ctl uag1 quiesce                              # favicon 503: drain
    python -m demo.ctl all stats

Talks to each simulator's control port (see demo.horizon_sim).
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from demo.farm import DEFAULT_OUT

ACTIONS = {"stats": "GET", "quiesce": "POST", "resume": "POST", "stop": "POST", "start": "POST"}


def load_farm(path: str) -> list[dict]:
    try:
        with open(path) as f:
            return json.load(f)["servers"]
    except FileNotFoundError:
        raise SystemExit(f"no farm description at {path}: is `python -m demo.farm` running?") from None


def control(server: dict, action: str, timeout: float = 5.0) -> dict:
    url = f"http://127.0.0.1:{server['control_port']}/{action}"
    request = urllib.request.Request(url, method=ACTIONS[action], data=b"" if ACTIONS[action] == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        return json.load(exc)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.ctl", description=__doc__.split("\n\n")[0])
    p.add_argument("--farm", default=DEFAULT_OUT)
    p.add_argument("server", help="a server name from the farm, or 'all'")
    p.add_argument("action", choices=sorted(ACTIONS))
    args = p.parse_args(argv)
    servers = load_farm(args.farm)
    chosen = servers if args.server == "all" else [s for s in servers if s["name"] == args.server]
    if not chosen:
        p.error(f"no server {args.server!r}; the farm has {', '.join(s['name'] for s in servers)}")
    status = 0
    for server in chosen:
        try:
            print(json.dumps(control(server, args.action)))
        except (OSError, ValueError) as exc:
            print(f"{server['name']}: control port did not answer: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
