"""A collector in a process of its own, for the failover tests (killed with kill -9).

`python -m tests.collector_process MQTT_URI TOPIC_PREFIX MONGO_URI DB OWNER PERIOD_S`
reads on schedule while it holds the lease, until SIGTERM (then stops cleanly).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from smib_core.bus import DeviceBus
from smib_core.services.collector import Collector, CollectorConfig
from smib_core.store.db import client_for
from tests.test_bus import make_topics


def main(argv: list[str]) -> int:
    mqtt_uri, prefix, mongo_uri, db_name, owner, period = argv
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {owner} %(name)s: %(message)s")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    client = client_for(mongo_uri)
    config = CollectorConfig(period_s=float(period), timeout_s=0.5, concurrency=4)
    with DeviceBus(mqtt_uri, make_topics(prefix), client_id_prefix=owner) as bus:
        bus.wait_connected(10)
        collector = Collector(bus, client[db_name], config, owner=owner, alerts=False)
        collector.start()
        print("started", flush=True)
        done.wait()
        collector.stop()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
