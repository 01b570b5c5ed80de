"""`smib decode [--json] HEX`: decode a 6F/AF reply."""

from __future__ import annotations

import argparse
import json

from smib_core import sas


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("decode", help="decode a SAS 6F/AF meter reply given as hex")
    p.add_argument("hex", metavar="HEX")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def print_reading(reading: sas.MeterReading, as_json: bool) -> None:
    """The one way meters are printed, by `decode` and `meters` alike."""
    if as_json:
        print(json.dumps(reading.to_json()))
        return
    print(f"address {reading.address}  command {reading.command}  game {reading.game}")
    for meter in reading.meters:
        value = "not supported" if meter.value is None else f"{meter.value:,}"
        print(f"  {meter.code}  {meter.spec.name:<42} {value:>20} {meter.spec.unit.value}")


def run(args: argparse.Namespace) -> int:
    print_reading(sas.decode_meter_reply(args.hex), args.json)
    return 0
