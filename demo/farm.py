"""A whole simulated Horizon farm: N simulators as child processes.

    python -m demo.farm --servers 3 --base-address 127.0.0.2 [--out var/demo/farm.json]

By default server i listens on its own loopback address (127.0.0.2, .3, .4)
with the same ports everywhere, as real UAGs do; that matters because the
balancer's persistence remembers the server *host*, so a client's bypass
connections can follow its phase-1 server (port following). With
--port-step N the servers share one address and server i adds i*N to every
port instead (then port following across pools is not possible).

One process per server, so one can be killed, stopped (`python -m demo.ctl
uag2 stop`) or quiesced while the others keep serving: that is how failover
and drain are shown. The farm prints what listens where and writes it as
JSON (--out) for demo.farmconfig and the demo scripts; the file is removed
when the farm stops. SIGINT/SIGTERM stop every server.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import sys
from pathlib import Path

from demo.horizon_sim import DEFAULT_CERT_DIR, port_list

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = os.path.join(os.environ.get("VIEWLB_DEMO_DIR", "var/demo"), "farm.json")
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


def layout(args) -> list[dict]:
    """Name, address and ports of each server."""
    if args.servers > 1 and args.address_step == 0 and args.port_step == 0:
        raise ValueError("servers would collide: give --address-step or --port-step")
    base = ipaddress.ip_address(args.base_address)
    servers = []
    for i in range(args.servers):
        shift = i * args.port_step
        ports = [args.https_port + shift] + [p + shift for p in args.tcp_ports + args.udp_ports]
        if any(not 0 < p < 65536 for p in ports):
            raise ValueError(f"server {i + 1}: a port is out of range with --port-step {args.port_step}")
        address = base + i * args.address_step
        if not address.is_loopback:
            raise ValueError(f"{address} is not a loopback address; the simulators are for this machine only")
        servers.append({
            "name": f"{args.name_prefix}{i + 1}",
            "address": str(address),
            "https_port": args.https_port + shift,
            "tcp_ports": [p + shift for p in args.tcp_ports],
            "udp_ports": [p + shift for p in args.udp_ports],
        })
    return servers


def sim_command(server: dict, args) -> list[str]:
    return [
        sys.executable, "-m", "demo.horizon_sim",
        "--name", server["name"], "--address", server["address"],
        "--https-port", str(server["https_port"]),
        "--tcp-ports", ",".join(map(str, server["tcp_ports"])),
        "--udp-ports", ",".join(map(str, server["udp_ports"])),
        "--cert-dir", os.path.abspath(args.cert_dir),
        "--heartbeat", str(args.heartbeat),
    ]


class Farm:
    def __init__(self, args):
        self.args = args
        self.children: dict[str, asyncio.subprocess.Process] = {}
        self.description: list[dict] = []
        self._readers: set[asyncio.Task] = set()

    async def start(self):
        servers = layout(self.args)
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        for server in servers:
            self.children[server["name"]] = await asyncio.create_subprocess_exec(
                *sim_command(server, self.args), stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT
            )
        async with asyncio.timeout(READY_TIMEOUT):
            self.description = list(await asyncio.gather(*(self._ready(n, p) for n, p in self.children.items())))

    async def _ready(self, name: str, proc) -> dict:
        line = await proc.stdout.readline()
        try:
            ready = json.loads(line)
        except ValueError:
            raise RuntimeError(f"{name} did not start (exit code {await proc.wait()}); see its error above") from None
        task = asyncio.create_task(self._drain(proc), name=f"stdout-{name}")
        self._readers.add(task)
        return {k: v for k, v in ready.items() if k != "event"}

    async def _drain(self, proc):
        while await proc.stdout.readline():
            pass

    async def wait_any_exit(self):
        waits = {asyncio.create_task(p.wait(), name=f"wait-{n}"): n for n, p in self.children.items()}
        while waits:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                print(f"farm: {waits.pop(task)} exited with code {task.result()}", file=sys.stderr, flush=True)

    async def stop(self):
        for proc in self.children.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in self.children.values():
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self._readers:
            task.cancel()


def format_table(servers: list[dict]) -> str:
    lines = []
    for s in servers:
        tcp = ",".join(map(str, s["tcp_ports"])) or "-"
        udp = ",".join(map(str, s["udp_ports"])) or "-"
        lines.append(f"{s['name']:<6} {s['address']:<11} https {s['https_port']:<5} tcp {tcp:<24} udp {udp:<10} "
                     f"control 127.0.0.1:{s['control_port']} pid {s['pid']}")
    return "\n".join(lines)


def write_description(path: str, servers: list[dict]):
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"farm_pid": os.getpid(), "servers": servers}, indent=2) + "\n")
    os.replace(tmp, target)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.farm", description="Start a simulated Horizon farm.")
    p.add_argument("--servers", type=int, default=3)
    p.add_argument("--name-prefix", default="uag")
    p.add_argument("--base-address", default="127.0.0.2")
    p.add_argument("--address-step", type=int, default=1, help="server i listens on base-address + i*step")
    p.add_argument("--port-step", type=int, default=0, help="server i adds i*step to every port")
    p.add_argument("--https-port", type=int, default=9443)
    p.add_argument("--tcp-ports", type=port_list, default=port_list("3389,32111,9427,4172"),
                   help="bypass TCP ports (RDP, USB, MMR, PCoIP)")
    p.add_argument("--udp-ports", type=port_list, default=port_list("4172,8443"), help="bypass UDP ports (PCoIP, Blast)")
    p.add_argument("--heartbeat", type=float, default=30.0, help="seconds between tunnel heartbeats")
    p.add_argument("--cert-dir", default=DEFAULT_CERT_DIR)
    p.add_argument("--out", default=DEFAULT_OUT, help="where to write the farm's JSON description")
    return p


async def run(args) -> int:
    farm = Farm(args)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await farm.start()
    except (RuntimeError, TimeoutError) as exc:
        print(f"farm: {exc or 'servers did not report ready in time'}", file=sys.stderr)
        await farm.stop()
        return 2
    write_description(args.out, farm.description)
    print(format_table(farm.description), flush=True)
    print(f"farm: description in {args.out}", flush=True)
    exits = asyncio.create_task(farm.wait_any_exit(), name="child-exits")
    stop = asyncio.create_task(stopping.wait(), name="stop")
    await asyncio.wait([exits, stop], return_when=asyncio.FIRST_COMPLETED)
    exits.cancel()
    stop.cancel()
    await farm.stop()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.out)
    return 0 if stopping.is_set() else 1


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        layout(args)
    except ValueError as exc:
        parser.error(str(exc))
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
