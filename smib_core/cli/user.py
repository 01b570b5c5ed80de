"""`smib user ...`: built-in accounts from the command line, audited as `cli:<os user>`.

smib user add NAME --role ROLE      password asked twice, or one line from stdin
smib user set-password NAME         same
smib user list [--json]
smib user set-role NAME ROLE
smib user disable NAME / smib user enable NAME
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from smib_core.auth import Role
from smib_core.errors import InvalidInput, StoreError
from smib_core.store.accounts import Account, AccountStore
from smib_core.store.audit import os_actor

ROLES = [r.value for r in Role]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("user", help="manage built-in accounts (add, list, set-role, ...)")
    cmds = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")

    add = cmds.add_parser("add", help="add an account; the password is asked or read from stdin")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=ROLES)
    add.set_defaults(func=run_add)

    pwd = cmds.add_parser("set-password", help="set an account's password (asked or stdin)")
    pwd.add_argument("name", metavar="NAME")
    pwd.set_defaults(func=run_set_password)

    ls = cmds.add_parser("list", help="list accounts")
    ls.add_argument("--json", action="store_true", help="print JSON lines")
    ls.set_defaults(func=run_list)

    role = cmds.add_parser("set-role", help="change an account's role")
    role.add_argument("name", metavar="NAME")
    role.add_argument("role", metavar="ROLE", choices=ROLES)
    role.set_defaults(func=run_set_role)

    for action, helptext in (
        ("disable", "refuse an account's sign-ins"),
        ("enable", "allow a disabled account again"),
    ):
        cmd = cmds.add_parser(action, help=helptext)
        cmd.add_argument("name", metavar="NAME")
        cmd.set_defaults(func=run_disable if action == "disable" else run_enable)


@contextmanager
def open_accounts() -> Iterator[AccountStore]:
    """The account store on the configured database; driver errors become StoreError."""
    from pymongo.errors import PyMongoError

    from smib_core.settings import Settings
    from smib_core.store.db import connect

    db = connect(Settings.from_env())
    try:
        yield AccountStore(db)
    except PyMongoError as exc:
        raise StoreError(f"the database failed: {type(exc).__name__}") from exc
    finally:
        db.client.close()


def read_password(confirm: bool = True) -> str:
    """Asked (twice) on a terminal; otherwise one line from stdin, without its newline."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Repeat the password: ") != password:
            raise InvalidInput("the two passwords differ")
        return password
    line = sys.stdin.readline()
    if not line:
        raise InvalidInput("no password on stdin")
    return line.rstrip("\r\n")


def run_add(args: argparse.Namespace) -> int:
    password = read_password()
    with open_accounts() as accounts:
        account = accounts.create(args.name, args.role, password, actor=os_actor())
    print(f"added {account.name} ({account.role.value})")
    return 0


def run_set_password(args: argparse.Namespace) -> int:
    password = read_password()
    return _change(
        args.name, "password set", lambda a: a.set_password(args.name, password, os_actor())
    )


def run_set_role(args: argparse.Namespace) -> int:
    return _change(
        args.name,
        f"role set to {args.role}",
        lambda a: a.set_role(args.name, args.role, os_actor()),
    )


def run_disable(args: argparse.Namespace) -> int:
    return _change(args.name, "disabled", lambda a: a.disable(args.name, os_actor()))


def run_enable(args: argparse.Namespace) -> int:
    return _change(args.name, "enabled", lambda a: a.enable(args.name, os_actor()))


def _change(name: str, done: str, change: Callable[[AccountStore], None]) -> int:
    with open_accounts() as accounts:
        change(accounts)
    print(f"{name.strip().lower()}: {done}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with open_accounts() as accounts:
        rows = accounts.list()
    for account in rows:
        print(json.dumps(_as_json(account)) if args.json else _as_line(account))
    if not rows and not args.json:
        print("no accounts: add one with `smib user add NAME --role admin`")
    return 0


def _as_json(account: Account) -> dict[str, object]:
    last = account.last_sign_in_at
    return {
        "name": account.name,
        "role": account.role.value,
        "disabled": account.disabled,
        "created_at": account.created_at.isoformat(),
        "created_by": account.created_by,
        "last_sign_in_at": last.isoformat() if last else None,
    }


def _as_line(account: Account) -> str:
    status = "disabled" if account.disabled else "active"
    last = account.last_sign_in_at
    seen = last.strftime("%Y-%m-%d %H:%M UTC") if last else "never signed in"
    return f"{account.name:<32} {account.role.value:<10} {status:<8} {seen}"
