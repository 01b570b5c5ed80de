"""`smib verify meters`: check the hourly rollups of some gaming days against the readings.

    smib verify meters --from 2024-03-01 --to 2024-03-31 [--cabinet ID ...] [--repair]

Both dates are gaming days (in `SMIB_TIMEZONE`), included. Prints every cabinet-hour
whose stored rollup disagrees with what its stored readings give (the column, stored and
expected); with `--repair` the disagreeing cabinets' hourly and daily rows of those days
are rewritten from the readings, and the location hours and digests recomputed. Exits 1
when a disagreement was found and not repaired.
"""

from __future__ import annotations

import argparse

from smib_core.cli.rollups import _day


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="check stored figures against the readings")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    meters = what.add_parser("meters", help="hourly rollups against the meter readings")
    meters.add_argument("--from", dest="first", required=True, type=_day, metavar="DATE")
    meters.add_argument("--to", dest="last", required=True, type=_day, metavar="DATE")
    meters.add_argument("--cabinet", action="append", metavar="ID", help="only this cabinet")
    meters.add_argument("--repair", action="store_true", help="rewrite what disagrees")
    meters.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smib_core.services.meter_report import report_period
    from smib_core.services.meter_rollups import verify_rollups
    from smib_core.settings import Settings
    from smib_core.store.db import connect
    from smib_core.store.meters import MeterStore
    from smib_core.store.registry import Registry

    settings = Settings.from_env()
    hour, zone = settings.gaming_day_start_hour, settings.timezone
    days = report_period(
        "custom", first_day=args.first, last_day=args.last, gaming_day_start_hour=hour, tz=zone
    )
    db = connect(settings)
    cabinets = args.cabinet or [c.id for c in Registry(db).cabinets(include_retired=True)]
    found = verify_rollups(
        MeterStore(db),
        days.start.to_pydatetime(),
        days.end.to_pydatetime(),
        cabinets,
        repair=args.repair,
        gaming_day_start_hour=hour,
        tz=zone,
    )
    for d in found:
        print(
            f"{d.cabinet_id}\t{d.bucket.isoformat()}\t{d.column}\tstored {d.stored}\t"
            f"expected {d.expected}"
        )
    hours = len({(d.cabinet_id, d.bucket) for d in found})
    verb = "repaired" if args.repair else "disagree"
    print(
        f"{args.first}..{args.last} ({zone}): {hours} cabinet-hours {verb}, "
        f"{len(cabinets)} cabinets checked"
    )
    return 1 if found and not args.repair else 0
