"""`smib`: the command line operators script against. Keep its commands and output stable.

Each command group lives in its own module with a `register(subparsers)` function; a
command's handler takes the parsed arguments and returns the exit code. A `SmibError`
becomes one clear line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from smib_core.errors import SmibError

# Modules under smib_core.cli that add commands, in the order `smib --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "decode",
    "meters",
    "sim",
    "serve",
    "worker",
    "user",
    "registry",
    "firmware",
    "embedded",
    "bench",
    "ota",
    "collect",
    "export",
    "rollups",
    "token",
    "verify",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smib", description="SMIB Console command line.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"smib_core.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except SmibError as exc:
        print(f"smib: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
