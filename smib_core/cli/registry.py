"""`smib location ...` and `smib cabinet ...`: the registry from a shell, audited as
`cli:<os user>`, as the Registry page does it.

    smib location add NAME [--notes TEXT]
    smib location list [--all] [--json]
    smib cabinet add NAME --location L --denomination D [--relay R] [--serial S]
                     [--manufacturer M] [--game G] [--par P]
    smib cabinet list [--location L] [--all] [--json]
    smib cabinet import FILE [--dry-run] [--create-locations]
    smib cabinet export FILE [--format csv|xlsx]

`--json` prints one JSON object a line. An import checks every row first: one bad row
and nothing is written (each problem names the row and the field, exit code 1). An
export holds the active cabinets, so importing it back changes nothing.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smib_core.errors import InvalidInput

if TYPE_CHECKING:
    from smib_core.services.cabinet_import import ImportPlan
    from smib_core.store.registry import Cabinet, Registry


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    loc = sub.add_parser("location", help="add and list locations (floors, rooms, sites)")
    loc_cmds = loc.add_subparsers(dest="location_command", required=True, metavar="ACTION")
    add = loc_cmds.add_parser("add", help="add a location")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--notes", default="", help="where it is, who looks after it")
    add.set_defaults(func=run_location_add)
    ls = loc_cmds.add_parser("list", help="list locations")
    ls.add_argument("--all", action="store_true", help="retired ones too")
    ls.add_argument("--json", action="store_true", help="print JSON lines")
    ls.set_defaults(func=run_location_list)

    cab = sub.add_parser("cabinet", help="add, list, import and export cabinets")
    cab_cmds = cab.add_subparsers(dest="cabinet_command", required=True, metavar="ACTION")
    add = cab_cmds.add_parser("add", help="add a cabinet")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--location", required=True, metavar="L", help="location name or id")
    add.add_argument("--denomination", required=True, metavar="D", help="money per credit")
    add.add_argument("--relay", help="its board's relayId (12 hex characters)")
    for name in ("serial", "manufacturer", "game"):
        add.add_argument(f"--{name}", default="")
    add.add_argument("--par", help="theoretical hold, %% of coin in (0-100)")
    add.set_defaults(func=run_cabinet_add)
    ls = cab_cmds.add_parser("list", help="list cabinets")
    ls.add_argument("--location", metavar="L", help="only this location (name or id)")
    ls.add_argument("--all", action="store_true", help="retired ones too")
    ls.add_argument("--json", action="store_true", help="print JSON lines")
    ls.set_defaults(func=run_cabinet_list)
    imp = cab_cmds.add_parser("import", help="add or update cabinets from a CSV or Excel file")
    imp.add_argument("file", type=Path, metavar="FILE")
    imp.add_argument(
        "--dry-run", action="store_true", help="print what would change, change nothing"
    )
    imp.add_argument(
        "--create-locations",
        action="store_true",
        help="add the locations the file names that do not exist yet",
    )
    imp.set_defaults(func=run_cabinet_import)
    exp = cab_cmds.add_parser("export", help="write the cabinets to a CSV or Excel file")
    exp.add_argument("file", type=Path, metavar="FILE")
    exp.add_argument("--format", choices=("csv", "xlsx"), help="default: from FILE")
    exp.set_defaults(func=run_cabinet_export)


@contextmanager
def open_registry() -> Iterator[Registry]:
    from smib_core.settings import Settings
    from smib_core.store.db import connect
    from smib_core.store.registry import Registry

    db = connect(Settings.from_env())
    try:
        yield Registry(db)
    finally:
        db.client.close()


def _location_id(registry: Registry, text: str) -> str:
    wanted = text.strip().lower()
    for loc in registry.locations():
        if wanted in (loc.id, loc.name.lower()):
            return loc.id
    names = ", ".join(loc.name for loc in registry.locations()) or "none yet"
    raise InvalidInput(f"there is no location {text!r} (locations: {names})")


# --- locations ------------------------------------------------------------------------


def run_location_add(args: argparse.Namespace) -> int:
    from smib_core.services import registry as service
    from smib_core.services.actions import cli_principal

    with open_registry() as registry:
        location = service.add_location(registry, cli_principal(), args.name, args.notes)
    print(f"added location {location.name} ({location.id})")
    return 0


def run_location_list(args: argparse.Namespace) -> int:
    from smib_core.services.registry import locations_table

    with open_registry() as registry:
        table = locations_table(registry, include_retired=args.all)
    for row in table.to_dict("records"):
        if args.json:
            print(json.dumps({k: _plain(v) for k, v in row.items()}))
        else:
            retired = "  retired" if row["retired"] else ""
            print(f"{row['name']:<32} {row['cabinets']:>4} cabinets  {row['id']}{retired}")
    if table.empty and not args.json:
        print("no locations: add one with `smib location add NAME`")
    return 0


# --- cabinets -------------------------------------------------------------------------


def run_cabinet_add(args: argparse.Namespace) -> int:
    from smib_core.services import registry as service
    from smib_core.services.actions import cli_principal

    with open_registry() as registry:
        values = {
            "name": args.name,
            "location_id": _location_id(registry, args.location),
            "denomination": args.denomination,
            "relay": args.relay,
            "serial": args.serial,
            "manufacturer": args.manufacturer,
            "game": args.game,
            "par": args.par,
        }
        cabinet = service.add_cabinet(registry, cli_principal(), values)
    print(f"added cabinet {cabinet.name} ({cabinet.id})")
    return 0


def _cabinet_json(cabinet: Cabinet, location: str) -> dict[str, Any]:
    return {
        "id": cabinet.id,
        "name": cabinet.name,
        "location": location,
        "location_id": cabinet.location_id,
        "relay": cabinet.relay,
        "denomination": cabinet.denomination,
        "serial": cabinet.serial,
        "manufacturer": cabinet.manufacturer,
        "game": cabinet.game,
        "par": cabinet.par,
        "notes": cabinet.notes,
        "retired": cabinet.retired,
    }


def run_cabinet_list(args: argparse.Namespace) -> int:
    with open_registry() as registry:
        where = _location_id(registry, args.location) if args.location else None
        cabinets = registry.cabinets(location_id=where, include_retired=args.all)
        names = {loc.id: loc.name for loc in registry.locations(include_retired=True)}
    for cabinet in cabinets:
        place = names.get(cabinet.location_id, cabinet.location_id)
        if args.json:
            print(json.dumps(_cabinet_json(cabinet, place)))
            continue
        par = f"par {cabinet.par:g}%" if cabinet.par is not None else ""
        print(
            f"{cabinet.name:<24} {place:<20} {cabinet.relay or '(no board)':<12} "
            f"{cabinet.denomination:>8g}  {cabinet.game:<20} {par}".rstrip()
        )
    if not cabinets and not args.json:
        print("no cabinets: add one with `smib cabinet add` or `smib cabinet import FILE`")
    return 0


def run_cabinet_import(args: argparse.Namespace) -> int:
    from smib_core.services.actions import cli_principal
    from smib_core.services.cabinet_files import read_cabinet_file
    from smib_core.services.cabinet_import import import_cabinets

    if not args.file.is_file():
        raise InvalidInput(f"{args.file} is not a file")
    cabinet_file = read_cabinet_file(args.file.read_bytes(), args.file.name)
    with open_registry() as registry:
        plan = import_cabinets(
            registry,
            cli_principal(),
            cabinet_file,
            create_locations=args.create_locations,
            dry_run=args.dry_run,
        )
    _print_plan(plan, args.dry_run)
    return 0


def _print_plan(plan: ImportPlan, dry_run: bool) -> None:
    for location in plan.new_locations:
        print(f"{'would add' if dry_run else 'added'} location  {location}")
    verbs = (
        {"add": "would add", "update": "would update", "unchanged": "unchanged"}
        if dry_run
        else {"add": "added", "update": "updated", "unchanged": "unchanged"}
    )
    for change in plan.changes:
        verb = verbs[change.action]
        details = change.describe()
        print(f"row {change.row:<5} {verb:<12} {change.name}" + (f": {details}" if details else ""))
    prefix = "dry run, nothing changed: would be " if dry_run else ""
    print(f"{prefix}{plan.summary()}")


def run_cabinet_export(args: argparse.Namespace) -> int:
    from smib_core.services.actions import cli_principal
    from smib_core.services.cabinet_files import export_cabinets, file_format

    fmt = args.format or file_format(args.file.name)
    if not args.file.parent.is_dir():
        raise InvalidInput(f"{args.file.parent} is not a folder")
    with open_registry() as registry:
        actor = cli_principal().name
        data, count = export_cabinets(registry, actor, fmt)
    args.file.write_bytes(data)
    print(f"wrote {count} cabinets to {args.file}")
    return 0


def _plain(value: object) -> object:
    return value.item() if hasattr(value, "item") else value
