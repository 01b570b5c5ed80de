"""`smib firmware add|list|archive`: the firmware library from the command line.

Acts as `cli:<os user>` (an administrator) and is audited like the page.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smib_core.auth import Principal
from smib_core.errors import InvalidInput

if TYPE_CHECKING:
    from pymongo.database import Database

    from smib_core.store.firmware import FirmwareInfo


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("firmware", help="the firmware library (.bin images for OTA)")
    cmds = p.add_subparsers(dest="firmware_command", required=True, metavar="ACTION")

    add = cmds.add_parser("add", help="upload a .bin file to the library")
    add.add_argument("file", metavar="FILE", type=Path)
    add.add_argument("--product", required=True, metavar="P", help="e.g. cloudy")
    add.add_argument("--version", required=True, metavar="V", help="e.g. v0.0.2")
    add.add_argument("--notes", default="", metavar="N", help="what changed")
    add.set_defaults(func=run_add)

    lst = cmds.add_parser("list", help="list the library")
    lst.add_argument("--json", action="store_true", help="print a JSON array")
    lst.add_argument("--all", action="store_true", help="include archived firmware")
    lst.set_defaults(func=run_list)

    arc = cmds.add_parser("archive", help="hide a firmware from the list and new rollouts")
    arc.add_argument("product", metavar="PRODUCT")
    arc.add_argument("version", metavar="VERSION")
    arc.set_defaults(func=run_archive)


def _db() -> Database[Any]:
    from smib_core.settings import Settings
    from smib_core.store.db import connect

    return connect(Settings.from_env())


def _principal() -> Principal:
    from smib_core.services.actions import cli_principal

    return cli_principal()


def run_add(args: argparse.Namespace) -> int:
    from smib_core.services.firmware import add_firmware

    if not args.file.is_file():
        raise InvalidInput(f"{args.file} is not a file")
    info = add_firmware(
        _db(),
        _principal(),
        args.file,
        product=args.product,
        version=args.version,
        notes=args.notes,
    )
    print(
        f"added {info.product} {info.version}: {info.filename}, {info.size:,} bytes, "
        f"sha256 {info.sha256}"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    from smib_core.store.firmware import FirmwareLibrary

    infos = FirmwareLibrary(_db()).list(include_archived=args.all)
    if args.json:
        print(json.dumps([_as_json(i) for i in infos]))
        return 0
    if not infos:
        print("the firmware library is empty" if args.all else "no firmware (try --all)")
        return 0
    for i in infos:
        flag = "  (archived)" if i.archived else ""
        print(
            f"{i.product:<16} {i.version:<14} {i.size:>10,}  {i.sha256[:12]}  "
            f"{i.uploaded_at:%Y-%m-%d %H:%M}Z  {i.uploaded_by}  {i.filename}{flag}"
        )
    return 0


def _as_json(i: FirmwareInfo) -> dict[str, Any]:
    return {
        "id": i.id,
        "product": i.product,
        "version": i.version,
        "filename": i.filename,
        "size": i.size,
        "sha256": i.sha256,
        "notes": i.notes,
        "uploaded_at": i.uploaded_at.isoformat(),
        "uploaded_by": i.uploaded_by,
        "archived": i.archived,
    }


def run_archive(args: argparse.Namespace) -> int:
    from smib_core.services.firmware import archive_firmware
    from smib_core.store.firmware import FirmwareLibrary

    db = _db()
    info = FirmwareLibrary(db).get(args.product, args.version)
    if info is None:
        raise InvalidInput(f"no firmware {args.product} version {args.version} in the library")
    archive_firmware(db, _principal(), info.id)
    print(f"archived {info.product} {info.version}")
    return 0
