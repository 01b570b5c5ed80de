"""`smib collect`: the meter collector as its own process, or one reading of the boards.

`smib collect` runs until Ctrl-C (or SIGTERM), reading the registered SAS boards every
period while it holds the deployment's collector lease, and stores the boards' events
too (for deployments that keep the collector apart from the web app).
`smib collect --once [--relay R ...]` reads the boards (or only the named ones) now,
whatever the lease, prints one line per board and exits 0 only when every read was
good. Both store every attempt, failed ones included, as meter snapshots.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import TYPE_CHECKING, Any

from smib_core import protocol
from smib_core.cli.runtime import connected

if TYPE_CHECKING:
    from pymongo.database import Database

    from smib_core.bus import DeviceBus
    from smib_core.services.collector import Collector
    from smib_core.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("collect", help="read every registered board's meters on a period")
    period_help = "seconds between two reads of a board (SMIB_COLLECT_PERIOD_S, 300)"
    p.add_argument("--period", type=float, metavar="S", help=period_help)
    p.add_argument("--concurrency", type=int, metavar="N", help="boards read at a time (8)")
    p.add_argument("--timeout", type=float, metavar="S", help="wait per board (default 5 s)")
    p.add_argument("--once", action="store_true", help="read once now, then exit")
    relay_help = "with --once: only this board (repeatable)"
    p.add_argument("--relay", action="append", metavar="R", help=relay_help)
    p.set_defaults(func=collect)


def collect(args: argparse.Namespace) -> int:
    from smib_core.errors import InvalidInput
    from smib_core.services.collector import Collector, CollectorConfig

    relays = [protocol.normalize_relay_id(r) for r in args.relay or []]
    if relays and not args.once:
        raise InvalidInput("--relay goes with --once (the collector reads every board)")
    with connected("smib-collect") as (settings, db, bus):
        config = CollectorConfig.from_settings(
            settings, period_s=args.period, concurrency=args.concurrency, timeout_s=args.timeout
        )
        collector = Collector(bus, db, config)
        if args.once:
            return _once(collector, relays)
        return _run(collector, bus, db, settings)


def _once(collector: Collector, relays: list[str]) -> int:
    collector.check_clock()  # stamps in the database's time
    readings = collector.run_once(relays or None)
    read = {r.relay for r in readings}
    skipped = [r for r in relays if r not in read]
    for reading in readings:
        if reading.ok:
            outcome = f"ok      {reading.meters} meters"
        else:
            outcome = f"failed  {reading.failure_check}: {reading.failure}"
        print(f"{reading.relay}  {reading.cabinet[:24]:<24}  {outcome}")
    for relay in skipped:
        print(f"{relay}  {'-':<24}  skipped not a registered SAS board's relay")
    if not readings and not skipped:
        print("no registered SAS boards to read (register cabinets first)")
    good = sum(r.ok for r in readings)
    print(f"{good} of {len(readings) + len(skipped)} boards read")
    return 0 if good == len(readings) and not skipped else 1


def _run(collector: Collector, bus: DeviceBus, db: Database[Any], settings: Settings) -> int:
    stopping = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    recorder = _start_event_recorder(bus, db, settings)
    collector.start()
    config = collector.config
    pace = f"{config.concurrency} at a time, {config.timeout_s:g} s per board"
    print(f"collecting every {config.period_s:g} s ({pace}); Ctrl-C stops")
    print(f"lease owner: {collector.lease.owner}")
    try:
        while not stopping.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        collector.stop()
        if recorder is not None:
            recorder.stop()
    stats = collector.stats()
    print(f"stopped: {stats.reads} reads, {stats.ok} good, {stats.failed} failed")
    return 0


def _start_event_recorder(bus: DeviceBus, db: Database[Any], settings: Settings) -> Any:
    """The event recorder (machine events and their alerts), when this build has one."""
    try:
        from smib_core.services.events import start_event_recording
    except ImportError:
        return None
    return start_event_recording(bus, db, settings)
