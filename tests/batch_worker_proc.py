"""A BatchWorker in a process of its own, for tests that kill it with SIGKILL.

`python -m tests.batch_worker_proc '{"broker": ..., "mongo": ..., "db": ..., "prefix": ...,
"timings": {...}}'` connects, starts the worker, prints "started" and runs until killed.
"""

from __future__ import annotations

import json
import sys
import time

from pymongo import MongoClient

from smib_core.bus import DeviceBus
from smib_core.services.batch import BatchTimings, BatchWorker
from smib_core.settings import Settings
from smib_core.store.audit import AuditTrail
from tests.test_bus import make_topics


def main() -> None:
    args = json.loads(sys.argv[1])
    client: MongoClient[dict[str, object]] = MongoClient(args["mongo"], tz_aware=True)
    db = client[args["db"]]
    with DeviceBus(args["broker"], make_topics(args["prefix"]), client_id_prefix="proc") as bus:
        if not bus.wait_connected(10):
            raise SystemExit("no broker")
        timings = BatchTimings(**args["timings"])
        worker = BatchWorker(db, bus, AuditTrail(db), Settings(), timings=timings)
        worker.start()
        print("started", flush=True)
        while True:
            time.sleep(1)


if __name__ == "__main__":
    main()
