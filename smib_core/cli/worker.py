"""`smib worker`: every background service of the deployment, with no web app.

Presence heartbeats, the meter collector, the event recorder and alert evaluation, the
rollout runner and the firmware HTTP server (`services.worker.Worker`) start at once
and run until SIGTERM or SIGINT (Ctrl-C), which stop them cleanly: leases released, so
another worker takes over at once. Several workers may run against one broker and one
database; leases keep each service single.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from pymongo.errors import PyMongoError

from smib_core.errors import StoreError
from smib_core.settings import Settings

RETRY_S = 2.0  # between attempts to reach the database at start


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="run the background services alone (no web app)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smib_core.services.worker import Worker

    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    settings = Settings.from_env()
    worker: Worker | None = None
    while worker is None:
        try:
            worker = Worker(settings)
        except (PyMongoError, StoreError) as exc:  # a worker may start before its database
            print(f"SMIB worker: no database yet ({exc}); trying again", file=sys.stderr)
            if stopping.wait(RETRY_S):
                return 0
    print(f"SMIB worker: {len(worker.services)} background services", file=sys.stderr, flush=True)
    worker.run_until_stopped(stopping)
    print("SMIB worker: stopped", file=sys.stderr, flush=True)
    return 0
