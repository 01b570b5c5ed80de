"""`smib ota RELAY... --version V`: update boards' firmware in a rollout, in the foreground.

The firmware comes from the library (`smib firmware add`). When no firmware server
answers on FIRMWARE_PORT (no app running), this command serves the firmware itself for
its duration; otherwise it uses the app's server (run it from the app's folder: the file
is put in `firmwares/` there). The rollout is recorded like one started on the Rollouts
page, acts as `cli:<os user>` and is driven by the same runner; when an app's runner
already drives rollouts, this command follows its progress. One line per board as its
outcome is known; exit 0 only when every board is confirmed (or already on the version).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smib_core import protocol
from smib_core.errors import SmibError

if TYPE_CHECKING:
    from pymongo.database import Database

    from smib_core.bus import DeviceBus
    from smib_core.settings import Settings
    from smib_core.store.firmware import FirmwareInfo, FirmwareLibrary
    from smib_core.store.rollouts import BoardState

OK_STATES = ("confirmed", "skipped")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ota", help="update boards' firmware (a rollout in batches)")
    p.add_argument("relays", nargs="+", metavar="RELAY")
    p.add_argument("--version", required=True, metavar="V", help="a version of the library")
    p.add_argument("--product", metavar="P", help="when the version exists for several")
    p.add_argument("--batch-size", type=int, default=10, metavar="N", help="default 10")
    p.add_argument(
        "--min-success",
        type=float,
        default=80.0,
        metavar="PCT",
        help="halt when fewer updated boards are confirmed (default 80)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds a board may take to come back updated (default 300)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smib_core.cli.runtime import connected_bus
    from smib_core.services.rollout_plan import find_firmware
    from smib_core.settings import Settings
    from smib_core.store.db import connect
    from smib_core.store.firmware import FirmwareLibrary

    relays = list(dict.fromkeys(protocol.normalize_relay_id(r) for r in args.relays))
    settings = Settings.from_env()
    db = connect(settings)
    try:
        library = FirmwareLibrary(db)
        firmware = find_firmware(library, args.version, args.product)
        if not _confirmed(args.yes, firmware, relays):
            print("nothing updated")
            return 1
        with (
            _firmware_server(settings, db, library, firmware) as served,
            connected_bus(settings, "smib-ota") as bus,
        ):
            return _roll_out(args, db, bus, firmware, relays, served)
    finally:
        db.client.close()


def _roll_out(
    args: argparse.Namespace,
    db: Database[Any],
    bus: DeviceBus,
    firmware: FirmwareInfo,
    relays: list[str],
    served: tuple[str, Path],
) -> int:
    from smib_core.services.actions import cli_principal
    from smib_core.services.rollout import RolloutRunner
    from smib_core.store.audit import AuditTrail
    from smib_core.store.rollouts import RolloutStore

    ota_url, folder = served
    audit = AuditTrail(db)
    store = RolloutStore(db, audit)
    rollout = store.create(
        firmware,
        relays,
        batch_size=args.batch_size,
        min_success_pct=args.min_success,
        timeout_s=args.timeout,
        principal=cli_principal(),
    )
    print(
        f"rollout {rollout.id}: {firmware.product} {firmware.version} ({firmware.filename}) "
        f"to {len(relays)} board(s), {rollout.batches} batch(es) of {rollout.batch_size}, "
        f"otaURL {protocol.mask_uri(ota_url)}{{relay}}/{{secret}}/",
        flush=True,
    )
    runner = RolloutRunner(db, bus, audit, ota_url=ota_url, folder=folder)
    try:
        finished = runner.follow(rollout.id, on_board=_print_board)
    except KeyboardInterrupt:
        store.pause(rollout.id, cli_principal())
        print(f"rollout {rollout.id} paused: resume it on the Rollouts page", file=sys.stderr)
        raise
    missed = [b for b in store.boards(rollout.id) if b.state not in OK_STATES]
    print(f"rollout {finished.id} {finished.state}: {finished.reason}")
    return 1 if missed else 0


def _confirmed(yes: bool, firmware: FirmwareInfo, relays: list[str]) -> bool:
    if yes or not sys.stdin.isatty():
        return True  # a script's command line is its confirmation
    answer = input(
        f"Reflash {len(relays)} board(s) with {firmware.product} {firmware.version}? [y/N] "
    )
    return answer.strip().lower() in ("y", "yes")


def _print_board(board: BoardState) -> None:
    if board.state == "confirmed":
        detail = f"{board.previous_version or '?'} -> {board.version}"
    else:
        detail = board.reason
    print(f"{board.relay}  {board.state:<11}  {detail}", flush=True)


@contextmanager
def _firmware_server(
    settings: Settings, db: Database[Any], library: FirmwareLibrary, firmware: FirmwareInfo
) -> Iterator[tuple[str, Path]]:
    """(otaURL, served folder): the app's server when one answers, else our own."""
    from smib_core.firmware.materialise import materialise
    from smib_core.services.rollout import firmware_server
    from smib_core.services.rollout_plan import http_status, local_url

    server = firmware_server(settings, db)
    local = local_url(server)
    materialise(library, firmware, server.folder)
    ours = http_status(local) is None  # nothing listens: no app serves
    if ours:
        server.start()
    try:
        if http_status(local + firmware.filename) != 200:
            raise SmibError(
                f"the firmware server on port {server.port} does not serve "
                f"{server.folder.resolve()}: run smib ota from the app's folder, or stop the app"
            )
        yield server.base_url, server.folder
    finally:
        if ours:
            server.stop()
