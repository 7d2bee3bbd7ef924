"""`python -m proxyworker [--id ID] [--state-dir DIR]`: one proxy worker process.

Environment: REDIS_URL, VIEWLB_REDIS_PREFIX, VIEWLB_WORKER_ID, VIEWLB_STATE_DIR,
VIEWLB_DRAIN_SECONDS, LOG_LEVEL. Runs on uvloop when it is installed.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import sys

from .worker import Settings, Worker


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxyworker", description="viewlb proxy worker (data plane)")
    parser.add_argument("--id", help="worker id (default: $VIEWLB_WORKER_ID or hostname-pid)")
    parser.add_argument("--state-dir", help="where the last applied config is kept (default: var/worker-<id>)")
    args = parser.parse_args(argv)
    settings = Settings.from_env(worker_id=args.id, state_dir=args.state_dir)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s worker={settings.worker_id} %(name)s: %(message)s",
    )
    _raise_file_limit()
    try:
        import uvloop
    except ImportError:  # plain asyncio still works, only slower
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(Worker(settings).run())


def _raise_file_limit() -> None:
    """Each proxied connection holds two descriptors: take all the kernel allows us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            logging.warning("could not raise the open-file limit from %d: %s", soft, exc)


if __name__ == "__main__":
    sys.exit(main())
