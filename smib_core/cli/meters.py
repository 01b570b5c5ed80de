"""Commands that talk to one board or a few: meters, config get|set, version, restart.

Every id, component, field and value is validated before anything connects, so bad
input exits non-zero with nothing published. Each action is audited as `cli:<os user>`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from smib_core import protocol
from smib_core.cli.decode import print_reading
from smib_core.cli.runtime import board_actions
from smib_core.errors import BusError, DeviceError, FrameError, InvalidInput, RequestTimeout
from smib_core.services.actions import BoardActions, SendResult
from smib_core.services.board_maintenance import confirm_restart


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("meters", help="read a board's SAS meters (standard 6F request)")
    p.add_argument("relay", metavar="RELAY")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S")
    p.set_defaults(func=meters)

    config = sub.add_parser("config", help="read or write a board's configuration")
    csub = config.add_subparsers(dest="config_command", required=True, metavar="get|set")
    get = csub.add_parser("get", help="print one component as the board reports it")
    get.add_argument("relay", metavar="RELAY")
    get.add_argument("comp", metavar="COMP", help=", ".join(protocol.COMPONENTS))
    get.add_argument("--json", action="store_true")
    get.add_argument("--timeout", type=float, default=5.0, metavar="S")
    get.set_defaults(func=config_get)
    put = csub.add_parser("set", help="validate, then publish one partial cfg write")
    put.add_argument("relay", metavar="RELAY")
    put.add_argument("comp", metavar="COMP")
    put.add_argument("assignments", nargs="+", metavar="FIELD=VALUE")
    put.add_argument("--timeout", type=float, default=5.0, metavar="S")
    put.add_argument("--no-confirm", action="store_true", help="do not read the value back")
    put.set_defaults(func=config_set)

    ver = sub.add_parser("version", help="print a board's firmware and version")
    ver.add_argument("relay", metavar="RELAY")
    ver.add_argument("--json", action="store_true")
    ver.add_argument("--timeout", type=float, default=5.0, metavar="S")
    ver.set_defaults(func=version)

    rst = sub.add_parser("restart", help="restart boards (they drop off and come back)")
    rst.add_argument("relays", nargs="+", metavar="RELAY")
    rst.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rst.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="how long a board may take to answer again (default 60)",
    )
    rst.add_argument(
        "--no-confirm", action="store_true", help="do not wait for the boards to come back"
    )
    rst.set_defaults(func=restart)


def meters(args: argparse.Namespace) -> int:
    relay = protocol.normalize_relay_id(args.relay)
    with board_actions() as actions:
        reply = actions.request(relay, protocol.read_meters(), args.timeout)
    if not isinstance(reply, protocol.MeterReply) or reply.reading is None:
        failure = getattr(reply, "failure", "unexpected reply")
        check = getattr(reply, "failure_check", "")
        error = DeviceError() if check == "device_error" else FrameError(check or "?", failure)
        raise error
    print_reading(reply.reading, args.json)
    return 0


def _read_config(relay: str, comp: str, timeout: float) -> dict[str, Any]:
    with board_actions() as actions:
        reply = actions.request(relay, protocol.config_read(comp), timeout)
    return dict(getattr(reply, "fields", {}))


def _print_fields(fields: dict[str, Any], as_json: bool) -> None:
    shown = protocol.mask_secrets(fields)
    if as_json:
        print(json.dumps(shown))
        return
    for name, value in shown.items():
        print(f"{name:<16} {value}")


def config_get(args: argparse.Namespace) -> int:
    relay = protocol.normalize_relay_id(args.relay)
    comp = protocol.check_component(args.comp)
    _print_fields(_read_config(relay, comp, args.timeout), args.json)
    return 0


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvalidInput(f"{item!r} is not FIELD=VALUE")
        fields[name.strip()] = value
    return fields


def config_set(args: argparse.Namespace) -> int:
    """Validate, publish one partial write (the board answers nothing), then confirm it by
    reading the component back until it reports the new values (the same
    `write_and_confirm` the Cabinet page uses, audited with before/after)."""
    from smib_core.services.board_config import FieldChange, write_and_confirm

    relay = protocol.normalize_relay_id(args.relay)
    command = protocol.config_write(args.comp, parse_assignments(args.assignments))
    written = {k: v for k, v in command.payload.items() if k not in ("typ", "comp")}
    with board_actions() as actions:
        if args.no_confirm:
            sent = actions.send_command([relay], command)
            actions.settle(
                sent.audit_id, "not_confirmed", {"detail": "not read back (--no-confirm)"}
            )
            print(f"sent {args.comp} write to {relay}: {protocol.mask_secrets(written)}")
            return 0
        try:
            current = actions.request(relay, protocol.config_read(args.comp), args.timeout)
            before = dict(getattr(current, "fields", {}))
        except RequestTimeout:
            before = {}  # a board that does not answer still gets the write
        changes = [FieldChange(name, before.get(name), value) for name, value in written.items()]
        result = write_and_confirm(actions, relay, args.comp, changes, args.timeout)
    print(f"sent {args.comp} write to {relay}: {protocol.mask_secrets(written)}")
    print(result.message, file=sys.stdout if result.outcome == "confirmed" else sys.stderr)
    return 0 if result.outcome == "confirmed" else 1


def version(args: argparse.Namespace) -> int:
    relay = protocol.normalize_relay_id(args.relay)
    fields = _read_config(relay, "app", args.timeout)
    shown = {"firmware": fields.get("firmware"), "version": fields.get("version")}
    if args.json:
        print(json.dumps(shown))
    else:
        print(f"{shown['firmware']} {shown['version']}")
    return 0


def restart(args: argparse.Namespace) -> int:
    relays = [protocol.normalize_relay_id(r) for r in args.relays]
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidInput("restarting needs --yes when there is no terminal to confirm")
        answer = input(f"Restart {len(relays)} board(s): {', '.join(relays)}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing restarted")
            return 1
    with board_actions() as actions:
        if args.no_confirm:
            result = actions.send_command(relays, protocol.restart())
            actions.settle(
                result.audit_id, "not_confirmed", {"detail": "not waited for (--no-confirm)"}
            )
            for relay in relays:
                print(f"{relay}: {'restart sent' if relay in result.sent else 'failed'}")
            return 0 if not result.failed else 1
        sent = {relay: _send_restart(actions, relay) for relay in relays}
        with ThreadPoolExecutor(max(1, min(8, len(relays)))) as pool:
            back = {
                relay: pool.submit(confirm_restart, actions, relay, result, at, args.timeout)
                for relay, (result, at) in sent.items()
                if result is not None
            }
    for relay in relays:
        if sent[relay][0] is None:
            print(f"{relay}: failed")
        elif back[relay].result().ok:
            print(f"{relay}: restart sent; back (answers cfg app)")
        else:
            why = back[relay].result().back.reason
            print(f"{relay}: restart sent; not back: {why}", file=sys.stderr)
    return 0 if len(back) == len(relays) and all(f.result().ok for f in back.values()) else 1


def _send_restart(actions: BoardActions, relay: str) -> tuple[SendResult | None, float]:
    """One `rst` (its own audit record, settled once the board is back or not)."""
    at = time.time()
    try:
        return actions.send_command([relay], protocol.restart()), at
    except BusError as exc:
        print(f"{relay}: {exc}", file=sys.stderr)
        return None, at
