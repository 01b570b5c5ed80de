"""`smib rollups rebuild`: recompute the meter rollups of some gaming days from the readings.

    smib rollups rebuild --from 2024-03-01 --to 2024-03-31 [--cabinet ID ...]

Both dates are gaming days (in `SMIB_TIMEZONE`, from `SMIB_GAMING_DAY_START_HOUR`),
included. Every hourly and daily rollup, location hour and daily digest of those days is
removed and recomputed from the stored readings of every cabinet in the registry
(retired ones too) or of the named ones: run it after changing the time zone or the
gaming-day start hour, or to apply the current meter rules to older history. Safe to
run again; while it runs the dashboard may miss the days being rebuilt.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rollups", help="recompute meter rollups from the readings")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    rebuild = actions.add_parser("rebuild", help="recompute the rollups of some gaming days")
    rebuild.add_argument("--from", dest="first", required=True, type=_day, metavar="DATE")
    rebuild.add_argument("--to", dest="last", required=True, type=_day, metavar="DATE")
    rebuild.add_argument("--cabinet", action="append", metavar="ID", help="only this cabinet")
    rebuild.set_defaults(func=run)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (2024-03-31)") from None


def run(args: argparse.Namespace) -> int:
    from smib_core.services.meter_report import report_period
    from smib_core.services.meter_rollups import rebuild_rollups
    from smib_core.settings import Settings
    from smib_core.store.db import connect
    from smib_core.store.meters import MeterStore
    from smib_core.store.registry import Registry

    settings = Settings.from_env()
    hour, zone = settings.gaming_day_start_hour, settings.timezone
    days = report_period(
        "custom",
        first_day=args.first,
        last_day=args.last,
        gaming_day_start_hour=hour,
        tz=zone,
    )
    db = connect(settings)
    cabinets = args.cabinet or [c.id for c in Registry(db).cabinets(include_retired=True)]
    counts = rebuild_rollups(
        MeterStore(db),
        days.start.to_pydatetime(),
        days.end.to_pydatetime(),
        cabinets,
        gaming_day_start_hour=hour,
        tz=zone,
        progress=lambda line: print(line, file=sys.stderr),
    )
    print(
        f"rebuilt {args.first}..{args.last} ({zone}): {counts.hourly} hourly and "
        f"{counts.daily} daily rows, {counts.location_hourly} location hours, "
        f"{counts.daily_digest} digests ({counts.removed} old rows removed)"
    )
    return 0
