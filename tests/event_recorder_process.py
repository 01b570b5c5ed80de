"""An event recorder in a process of its own, for the takeover test (killed with kill -9).

`python -m tests.event_recorder_process MQTT_URI TOPIC_PREFIX MONGO_URI DB [SKEW_S]`
records events while it holds the lease, until SIGTERM (then stops cleanly); with
SKEW_S, the process's clock runs that far off the true one.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from smib_core.bus import DeviceBus
from smib_core.services.events import start_event_recording
from smib_core.settings import Settings
from smib_core.sim.faults import SkewedClock
from smib_core.store.db import client_for
from tests.test_bus import make_topics


def main(argv: list[str]) -> int:
    mqtt_uri, prefix, mongo_uri, db_name = argv[:4]
    clock = SkewedClock(float(argv[4]) if len(argv) > 4 else 0.0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s: %(message)s")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    client = client_for(mongo_uri)
    with DeviceBus(mqtt_uri, make_topics(prefix), client_id_prefix="recorder") as bus:
        bus.wait_connected(10)
        recorder = start_event_recording(bus, client[db_name], Settings(), clock=clock)
        print("started", flush=True)
        done.wait()
        recorder.stop()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
