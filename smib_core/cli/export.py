"""`smib export`: meter history to a CSV, Excel or Parquet file, as the export page does.

    smib export --from 2024-05-01 --to 2024-05-31 [--location L ...]
                [--granularity raw|hour|day] [--format csv|xlsx|parquet] -o FILE

A date names a gaming day (`SMIB_GAMING_DAY_START_HOUR`) and both are included; an ISO
time (`2024-05-01T06:00`, in SMIB_TIMEZONE unless it says otherwise) is an exact instant and `--to`
is then excluded. `--location` takes a location's name or id. The format defaults to
the file's extension. The file is written chunk by chunk under a temporary name and
renamed when complete; progress goes to stderr. Audited as `cli:<os user>`.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from smib_core.errors import InvalidInput

if TYPE_CHECKING:
    from smib_core.store.registry import Registry


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="export meter history to CSV, Excel or Parquet")
    p.add_argument("--from", dest="first", required=True, metavar="DATE", help="first day")
    p.add_argument("--to", dest="last", required=True, metavar="DATE", help="last day")
    p.add_argument("--location", action="append", metavar="L", help="name or id (repeatable)")
    p.add_argument("--granularity", choices=("raw", "hour", "day"), default="day")
    p.add_argument("--format", choices=("csv", "xlsx", "parquet"), help="default: from FILE")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="FILE")
    p.add_argument("--chunk-rows", type=int, default=5_000, metavar="N", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _moment(text: str, tz: str = "UTC") -> date | pd.Timestamp:
    """A date (a gaming day) or an exact instant (naive: local time in `tz`)."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        try:
            return date.fromisoformat(text.strip())
        except ValueError:
            raise InvalidInput(f"{text!r} is not a date") from None
    try:
        stamp = pd.Timestamp(datetime.fromisoformat(text))
    except ValueError:
        raise InvalidInput(f"{text!r} is not an ISO date (2024-05-31) or time") from None
    if stamp.tzinfo is None:  # a wall time that repeats is its first (summer time) one
        stamp = stamp.tz_localize(tz, ambiguous=True, nonexistent="shift_forward")
    return stamp.tz_convert("UTC")


def _period(
    first: str, last: str, start_hour: int, tz: str = "UTC"
) -> tuple[pd.Timestamp, pd.Timestamp]:
    from smib_core.services.meter_report import report_period

    start, end = _moment(first, tz), _moment(last, tz)
    if not isinstance(start, pd.Timestamp) and not isinstance(end, pd.Timestamp):
        days = report_period(
            "custom", first_day=start, last_day=end, gaming_day_start_hour=start_hour, tz=tz
        )
        return days.start, days.end
    if not isinstance(start, pd.Timestamp) or not isinstance(end, pd.Timestamp):
        raise InvalidInput("give --from and --to both as dates or both as times")
    if end <= start:
        raise InvalidInput("--to must come after --from")
    return start, end


def _locations(registry: Registry, wanted: list[str]) -> list[str]:
    known = registry.locations(include_retired=True)
    chosen = []
    for text in wanted:
        found = [loc for loc in known if text.strip().lower() in (loc.id, loc.name.lower())]
        if not found:
            names = ", ".join(loc.name for loc in known) or "none registered"
            raise InvalidInput(f"no location named {text!r} (locations: {names})")
        chosen.append(found[0].id)
    return chosen


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    suffix = args.output.suffix.lower().lstrip(".")
    if suffix not in ("csv", "xlsx", "parquet"):
        raise InvalidInput("choose --format csv, xlsx or parquet (or name FILE .csv/.xlsx/...)")
    return suffix


def _progress_printer() -> Callable[[int, int], None]:
    """Rows so far on stderr, at most twice a second."""
    last = [0.0]

    def show(rows: int, estimated: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5:
            last[0] = now
            share = min(99, round(100 * rows / max(1, estimated)))
            print(f"\rexported {rows:,} rows (~{share}%)", end="", file=sys.stderr, flush=True)

    return show


def run(args: argparse.Namespace) -> int:
    from smib_core.services.actions import cli_principal
    from smib_core.services.export import ExportRequest
    from smib_core.services.export_jobs import ExportContext, run_export
    from smib_core.services.meter_report import Scope
    from smib_core.settings import Settings
    from smib_core.store.audit import AuditTrail
    from smib_core.store.db import connect
    from smib_core.store.meters import MeterStore
    from smib_core.store.registry import Registry

    settings = Settings.from_env()
    fmt = _format(args)
    start, end = _period(args.first, args.last, settings.gaming_day_start_hour, settings.timezone)
    if not args.output.parent.is_dir():
        raise InvalidInput(f"{args.output.parent} is not a folder")
    db = connect(settings)
    registry = Registry(db)
    scope = Scope.of(_locations(registry, args.location or []))
    request = ExportRequest(
        start,
        end,
        args.granularity,  # type: ignore[arg-type]
        fmt,  # type: ignore[arg-type]
        scope,
        tz=settings.timezone,
        gaming_day_start_hour=settings.gaming_day_start_hour,
    )
    frame = registry.frame(include_retired=True)
    names = {loc.id: loc.name for loc in registry.locations(include_retired=True)}
    context = ExportContext(
        MeterStore(db),
        AuditTrail(db),
        cli_principal(),
        cabinets=len(scope.roster(frame[~frame["retired"]])),
        names=names,
        settings=settings,
        chunk_rows=args.chunk_rows,
    )
    partial = args.output.with_name(args.output.name + ".partial")
    began = time.monotonic()
    rows = run_export(context, request, partial, progress=_progress_printer())
    partial.replace(args.output)
    seconds = time.monotonic() - began
    print(f"\rexported {rows:,} rows          ", file=sys.stderr)
    size = args.output.stat().st_size
    print(f"wrote {rows:,} rows ({size:,} bytes) to {args.output} in {seconds:.1f} s")
    return 0
