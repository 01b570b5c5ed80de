"""`smib token ...`: API tokens from the command line, audited as `cli:<os user>`.

smib token create LABEL --account NAME [--expires DAYS]   prints the token alone (once)
smib token list [--account NAME] [--json]
smib token revoke ID
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from smib_core.errors import StoreError
from smib_core.store.audit import os_actor
from smib_core.store.documents import utc_now
from smib_core.store.tokens import TokenInfo, TokenStore


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("token", help="manage API tokens (create, list, revoke)")
    cmds = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")

    create = cmds.add_parser("create", help="create a token; prints it alone, shown only once")
    create.add_argument("label", metavar="LABEL", help="what the token is for")
    create.add_argument("--account", required=True, help="the account whose role it acts with")
    create.add_argument("--expires", type=float, metavar="DAYS", help="expire after DAYS days")
    create.set_defaults(func=run_create)

    ls = cmds.add_parser("list", help="list tokens (never the tokens themselves)")
    ls.add_argument("--account", help="only this account's tokens")
    ls.add_argument("--json", action="store_true", help="print JSON lines")
    ls.set_defaults(func=run_list)

    revoke = cmds.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("token_id", metavar="ID")
    revoke.set_defaults(func=run_revoke)


@contextmanager
def open_tokens() -> Iterator[TokenStore]:
    from pymongo.errors import PyMongoError

    from smib_core.settings import Settings
    from smib_core.store.db import connect

    db = connect(Settings.from_env())
    try:
        yield TokenStore(db)
    except PyMongoError as exc:
        raise StoreError(f"the database failed: {type(exc).__name__}") from exc
    finally:
        db.client.close()


def run_create(args: argparse.Namespace) -> int:
    with open_tokens() as tokens:
        token, _ = tokens.create(args.label, args.account, os_actor(), args.expires)
    print(token)
    return 0


def _row(info: TokenInfo) -> dict[str, str | None]:
    def at(value: datetime | None) -> str | None:
        return value.isoformat(timespec="seconds") if value is not None else None

    return {
        "id": info.id,
        "label": info.label,
        "account": info.account,
        "state": info.state(utc_now()),
        "created_at": at(info.created_at),
        "expires_at": at(info.expires_at),
        "last_used_at": at(info.last_used_at),
    }


def run_list(args: argparse.Namespace) -> int:
    with open_tokens() as tokens:
        rows = [_row(info) for info in tokens.list(args.account)]
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            print(
                f"{row['id']}  {row['state']:<8} {row['account']:<16} {row['label']}"
                f"  expires {row['expires_at'] or 'never'}"
            )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    with open_tokens() as tokens:
        info = tokens.revoke(args.token_id, os_actor())
    print(f"revoked {info.id} ({info.label}, {info.account})")
    return 0
