"""A bounded Horizon client generator.

    python -m demo.clients --target 127.0.0.1:8443 --bypass-ports 3389,32111 \\
        --users 20 --shared-users 5 --duration 600 --rate 2

Users with their own address connect from 127.0.0.10, .11 ... (loopback, so
no setup is needed); the shared group all connect from one address
(--shared-address, default 127.0.0.200), like clients behind a NAT firewall.
New visits start at --rate per second while fewer than --concurrency are
active; each user has at most one visit at a time and at most
--visits-per-user (0 = no limit). A visit is phase 1 (several /broker/xml
requests over two HTTPS connections carrying JSESSIONID), phase 2 (the
tunnel on the same name, or the bypass ports), a stay of --stay seconds and
a logout (demo.visit). Each finished visit prints one line saying which
server it landed on and whether persistence held; the totals print at the
end, on SIGINT or SIGTERM. The run ends after --duration seconds (visits in
progress finish their stay) or when every user has made all its visits.
Exit status 0 when every visit succeeded.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import random
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from functools import partial

from demo.horizon_sim import port_list
from demo.visit import Target, User, Visit, visit

FIRST_HOST = 10
LAST_HOST = 250
GRACE = 30.0  # after --duration, visits in progress get their stay plus this long


@dataclass
class Plan:
    users: list[User]
    modes: tuple[str, ...]
    stay: tuple[float, float]
    duration: float
    rate: float
    concurrency: int
    visits_per_user: int
    seed: int | None = None


def make_users(count: int, shared: int, network: str = "127.0.0.0", shared_address: str = "127.0.0.200") -> list[User]:
    """`count` users on addresses .10, .11 ... (skipping the shared one) and `shared` users on one address."""
    base = ipaddress.ip_address(network)
    shared_ip = ipaddress.ip_address(shared_address)
    own = [base + host for host in range(FIRST_HOST, LAST_HOST + 1) if base + host != shared_ip]
    if count > len(own):
        raise ValueError(f"at most {len(own)} users with their own address, not {count}")
    users = [User(f"user{i + 1:03d}", str(own[i])) for i in range(count)]
    users += [User(f"nat{i + 1:03d}", str(shared_ip), shared=True) for i in range(shared)]
    return users


class Generator:
    """Starts visits at a bounded rate and concurrency, and keeps the results."""

    def __init__(self, plan: Plan, target: Target, out=sys.stdout):
        self.plan, self.target, self.out = plan, target, out
        self.rng = random.Random(plan.seed)
        self.visits: list[Visit] = []
        self.active: set[asyncio.Task] = set()
        self.busy: set[str] = set()  # users with a visit in progress
        self.made = Counter()  # user name -> visits started
        self.stopping = asyncio.Event()

    def stop(self):
        self.stopping.set()

    async def run(self) -> list[Visit]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.plan.duration
        while not self.stopping.is_set() and loop.time() < deadline:
            ready = [u for u in self.plan.users if self._may_visit(u)]
            if not ready and not self.active:
                break  # every user has made all its visits
            if ready and len(self.active) < self.plan.concurrency:
                self._start(min(ready, key=lambda u: self.made[u.name]))  # fewest visits first
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1.0 / self.plan.rate)
        await self._finish(loop.time() + self.plan.stay[1] + GRACE)
        return self.visits

    def _may_visit(self, user: User) -> bool:
        limit = self.plan.visits_per_user
        return user.name not in self.busy and (limit == 0 or self.made[user.name] < limit)

    def _start(self, user: User):
        self.made[user.name] += 1
        self.busy.add(user.name)
        mode = self.rng.choice(self.plan.modes)
        stay = self.rng.uniform(*self.plan.stay)
        task = asyncio.create_task(visit(user, self.target, mode, stay), name=f"visit-{user.name}")
        self.active.add(task)
        task.add_done_callback(partial(self._done, user))

    def _done(self, user: User, task: asyncio.Task):
        self.active.discard(task)
        self.busy.discard(user.name)
        if task.cancelled():
            return
        if task.exception() is not None:  # a bug, not a network failure: show it, keep the others going
            result = Visit(user, "?", 0.0, error=f"internal error: {task.exception()!r}")
        else:
            result = task.result()
        self.visits.append(result)
        print(result.line(), file=self.out, flush=True)

    async def _finish(self, limit: float):
        """Let visits in progress finish their stay; cut them on a signal or at `limit`."""
        loop = asyncio.get_running_loop()
        stop_waiter = asyncio.create_task(self.stopping.wait(), name="stop-waiter")
        try:
            while self.active and not self.stopping.is_set() and loop.time() < limit:
                await asyncio.wait([*self.active, stop_waiter], timeout=limit - loop.time(),
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_waiter.cancel()
        for task in list(self.active):
            task.cancel()
        if self.active:
            await asyncio.wait(list(self.active))


def totals(visits: list[Visit], users: list[User]) -> dict:
    by_user = {u.name: {"visits": 0, "ok": 0, "failed": 0, "held": 0, "servers": []} for u in users}
    for v in visits:
        entry = by_user[v.user.name]
        entry["visits"] += 1
        entry["ok"] += v.ok
        entry["failed"] += not v.ok and not v.interrupted
        entry["held"] += v.persistence_held
        if v.server and v.server not in entry["servers"]:
            entry["servers"].append(v.server)
    visited = [name for name, e in by_user.items() if e["visits"]]
    return {
        "visits": len(visits),
        "ok": sum(v.ok for v in visits),
        "failed": sum(not v.ok and not v.interrupted for v in visits),
        "interrupted": sum(v.interrupted for v in visits),
        "persistence_held": sum(v.persistence_held for v in visits),
        "servers": dict(sorted(Counter(v.server for v in visits if v.server).items())),
        "users": len(users),
        # A visit cut short by the end of the run is not a failure of the user's.
        "users_succeeded": sum(1 for name in visited if by_user[name]["ok"] and not by_user[name]["failed"]),
        "users_visited": len(visited),
        "per_user": by_user,
    }


def format_totals(t: dict) -> str:
    servers = " ".join(f"{name}={n}" for name, n in t["servers"].items()) or "none"
    return (f"visits {t['visits']}: ok {t['ok']}, failed {t['failed']}, interrupted {t['interrupted']}, persistence held {t['persistence_held']}/{t['visits']}\n"
            f"servers: {servers}\n"
            f"users: {t['users_succeeded']}/{t['users']} succeeded ({t['users_visited']} made a visit)\n"
            + "\n".join(f"  {name}: {e['visits']} visits, {e['ok']} ok, persistence held {e['held']}, "
                        f"servers {','.join(e['servers']) or '-'}"
                        for name, e in t["per_user"].items() if e["visits"]))


# --- command line ---------------------------------------------------------------


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def stay_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        low_f, high_f = float(low), float(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not SECONDS or MIN-MAX") from None
    if not 0 <= low_f <= high_f:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= MIN <= MAX")
    return low_f, high_f


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.clients", description="Bounded Horizon client generator.")
    p.add_argument("--target", type=host_port, required=True, help="HOST:PORT of the phase-1 HTTPS VIP (or a server)")
    p.add_argument("--server-name", help="TLS server name (SNI) and Host header; default the target host")
    p.add_argument("--bypass-host", help="where the bypass ports are; default the target host")
    p.add_argument("--bypass-ports", type=port_list, default=[], help="TCP bypass ports, e.g. 3389,32111,9427")
    p.add_argument("--udp-ports", type=port_list, default=[], help="UDP bypass ports, e.g. 4172,8443")
    p.add_argument("--no-port-following", dest="port_following", action="store_false",
                   help="do not require bypass connections to reach the phase-1 server")
    p.add_argument("--mode", choices=["tunnel", "bypass", "mixed"], default="mixed")
    p.add_argument("--users", type=int, default=20, help="users with their own source address")
    p.add_argument("--shared-users", type=int, default=5, help="users behind one shared source address")
    p.add_argument("--shared-address", default="127.0.0.200")
    p.add_argument("--network", default="127.0.0.0", help="users' addresses are NETWORK + 10, 11 ...")
    p.add_argument("--duration", type=positive(float), default=600.0, help="seconds to start new visits")
    p.add_argument("--rate", type=positive(float), default=2.0, help="new visits per second")
    p.add_argument("--concurrency", type=positive(int), default=50, help="visits in progress at most")
    p.add_argument("--visits-per-user", type=int, default=0, help="0 = as many as the duration allows")
    p.add_argument("--stay", type=stay_range, default=(5.0, 30.0), help="seconds a user stays: S or MIN-MAX")
    p.add_argument("--ping", type=positive(float), default=1.0, help="seconds between keep-alive lines while staying")
    p.add_argument("--timeout", type=positive(float), default=10.0, help="seconds any one step may take")
    p.add_argument("--seed", type=int)
    p.add_argument("--report", help="write the visits and totals to this JSON file")
    return p


def plan_from_args(args) -> tuple[Plan, Target]:
    if args.users < 0 or args.shared_users < 0 or args.users + args.shared_users == 0:
        raise ValueError("need at least one user (--users / --shared-users)")
    if args.mode != "tunnel" and not (args.bypass_ports or args.udp_ports):
        raise ValueError(f"--mode {args.mode} needs --bypass-ports or --udp-ports")
    users = make_users(args.users, args.shared_users, args.network, args.shared_address)
    modes = ("tunnel", "bypass") if args.mode == "mixed" else (args.mode,)
    plan = Plan(users, modes, args.stay, args.duration, args.rate, args.concurrency, args.visits_per_user, args.seed)
    host, port = args.target
    target = Target(host, port, args.bypass_host or host, tuple(args.bypass_ports), tuple(args.udp_ports),
                    args.server_name, args.port_following, args.timeout, args.ping)
    return plan, target


async def run(plan: Plan, target: Target) -> list[Visit]:
    gen = Generator(plan, target)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, gen.stop)
    return await gen.run()


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        plan, target = plan_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"{len(plan.users)} users -> {target.host}:{target.port}, modes {'/'.join(plan.modes)}, "
          f"{plan.rate}/s for {plan.duration}s", flush=True)
    visits = asyncio.run(run(plan, target))
    result = totals(visits, plan.users)
    print(format_totals(result), flush=True)
    if args.report:
        with open(args.report, "w") as f:
            json.dump({"totals": result, "visits": [v.summary() for v in visits]}, f, indent=2)
    return 0 if result["failed"] == 0 and result["visits"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
