"""`smib bench ingest|meters|fleet`: figures, each beside a baseline from the same run."""

from __future__ import annotations

import argparse
import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmarks, each beside a baseline from the same run")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="WHAT")
    ingest = bsub.add_parser("ingest", help="bus ingest rate, request latency, RSS under flood")
    ingest.add_argument("--broker", help="broker URI (default: a private Mosquitto)")
    ingest.add_argument("--count", type=int, default=100_000, help="messages in the burst")
    ingest.add_argument("--boards", type=int, default=1000, help="simulated boards online")
    ingest.add_argument("--requests", type=int, default=1000, help="latency samples")
    ingest.add_argument("--flood", type=int, default=500_000, help="messages in the flood")
    ingest.add_argument("--json", action="store_true")
    ingest.set_defaults(func=run_ingest)
    meters = bsub.add_parser("meters", help="dashboard build time, export rows/s, export RSS")
    meters.add_argument("--cabinets", type=int, default=500, help="simulated cabinets")
    meters.add_argument("--days", type=int, default=90, help="days of history (daily rollups)")
    meters.add_argument("--window", type=int, default=30, help="dashboard period in days")
    meters.add_argument("--raw-days", type=int, default=2, help="days of raw snapshots stored")
    meters.add_argument("--formats", default="csv,xlsx,parquet", help="export formats")
    meters.add_argument("--data-dir", type=Path, help="embedded database folder (default: temp)")
    meters.add_argument("--json", action="store_true")
    meters.set_defaults(func=run_meters)
    fleet = bsub.add_parser(
        "fleet", help="a worker collecting a simulated fleet: slots read, CPU, RSS, fleet table"
    )
    fleet.add_argument("--boards", type=int, default=5000, help="simulated boards (cabinets)")
    fleet.add_argument("--period", type=float, default=300.0, metavar="S", help="collect period")
    fleet.add_argument("--periods", type=int, default=2, metavar="N", help="periods measured")
    fleet.add_argument("--processes", type=int, default=5, metavar="P", help="`smib sim` processes")
    fleet.add_argument(
        "--events-per-minute", type=float, default=1.0, metavar="R", help="events per board"
    )
    fleet.add_argument(
        "--baseline", type=float, default=30.0, metavar="S", help="idle worker measured this long"
    )
    fleet.add_argument("--json", action="store_true")
    fleet.set_defaults(func=run_fleet)


def run_ingest(args: argparse.Namespace) -> int:
    from smib_core.bench import ingest
    from smib_core.bench.broker import private_broker

    given = args.broker or os.environ.get("MQTT_URI")
    with nullcontext((given, "given")) if given else private_broker() as (uri, name):
        timeout = max(60.0, args.count / 1000)
        raw = ingest.raw_baseline(uri, args.count, 1000, timeout)
        bus = ingest.bus_ingest(uri, args.count, 1000, timeout)
        bus_ms, raw_ms = ingest.request_latency(uri, args.boards, args.requests)
        flood = ingest.flood_rss(uri, args.flood, 10_000)
    after_warmup = [mib for received, mib in flood if received >= args.flood * 0.3]
    report: dict[str, Any] = {
        "broker": name,
        "ingest": {
            "messages": args.count,
            "raw_paho_json_per_s": round(raw.per_second),
            "raw_received": raw.received,
            "bus_per_s": round(bus.per_second),
            "bus_received": bus.received,
            "bus_share_of_raw_pct": round(100 * bus.per_second / raw.per_second, 1)
            if raw.per_second
            else None,
        },
        "latency": {
            "boards_online": args.boards,
            "requests": args.requests,
            "bus_request_p50_ms": round(ingest.percentile(bus_ms, 50), 2),
            "bus_request_p99_ms": round(ingest.percentile(bus_ms, 99), 2),
            "raw_round_trip_p50_ms": round(ingest.percentile(raw_ms, 50), 2),
            "raw_round_trip_p99_ms": round(ingest.percentile(raw_ms, 99), 2),
        },
        "flood": {
            "messages": args.flood,
            "unknown_relays": 10_000,
            "rss_mib": [(n, round(mib, 1)) for n, mib in flood],
            "rss_growth_after_30pct_mib": round(max(after_warmup) - min(after_warmup), 1)
            if after_warmup
            else None,
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0


def run_meters(args: argparse.Namespace) -> int:
    from smib_core.bench import meters

    plan = meters.Plan(args.cabinets, args.days, args.window, args.raw_days)
    report = meters.run(plan, args.formats.split(","), args.data_dir)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        meters.print_report(report)
    return 0


def run_fleet(args: argparse.Namespace) -> int:
    import sys

    from smib_core.bench import fleet

    plan = fleet.FleetPlan(
        boards=args.boards,
        period_s=args.period,
        periods=args.periods,
        processes=args.processes,
        events_per_minute=args.events_per_minute,
        baseline_s=args.baseline,
    )
    report = fleet.run(plan, progress=lambda text: print(text, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        fleet.print_report(report)
    return 0


def _print(report: dict[str, Any]) -> None:
    ing, lat, flood = report["ingest"], report["latency"], report["flood"]
    print(f"broker: {report['broker']}")
    print(
        f"ingest of {ing['messages']:,} messages: bus {ing['bus_per_s']:,}/s "
        f"({ing['bus_received']:,} received) vs raw paho+json {ing['raw_paho_json_per_s']:,}/s "
        f"({ing['raw_received']:,}): {ing['bus_share_of_raw_pct']}% of raw"
    )
    print(
        f"request->reply with {lat['boards_online']} boards: p50 {lat['bus_request_p50_ms']} ms, "
        f"p99 {lat['bus_request_p99_ms']} ms (raw MQTT round trip p50 "
        f"{lat['raw_round_trip_p50_ms']} ms, p99 {lat['raw_round_trip_p99_ms']} ms)"
    )
    points = ", ".join(f"{n:,}: {mib} MiB" for n, mib in flood["rss_mib"])
    print(
        f"RSS through a flood of {flood['messages']:,} from {flood['unknown_relays']:,} relays: "
        f"{points}; growth after 30%: {flood['rss_growth_after_30pct_mib']} MiB"
    )
