"""`smib serve [--sim N]`: the web app, a worker and optionally a simulated fleet.

The embedded broker and database are started (or found already running for the data
folder) first, so every child finds the same servers. Then, right away: the simulator
(`--sim`), a worker (`smib worker`: every background service, see `services.worker`)
and the web app. The worker and the simulator are started again if they die; when the
web app ends, serve ends. However serve ends (SIGTERM, Ctrl-C, even SIGKILL) its
children end with it (`cli.children`), and a new serve first ends what a dead one left.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from smib_core.settings import Settings

if TYPE_CHECKING:
    from smib_core.cli.children import ServeRecord

APP = Path(__file__).resolve().parents[2] / "app.py"
RESTART_AFTER_S = 5.0  # a worker or simulator that died is started again after this


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve the web app and a worker (embedded broker/database)")
    p.add_argument("--sim", type=int, default=0, metavar="N", help="also run N simulated boards")
    p.add_argument("--seed", type=int, default=1, help="seed of the simulated fleet")
    p.add_argument(
        "--history-days",
        type=int,
        default=30,
        metavar="D",
        help="with --sim: seed the demo cabinets with D days of meter history on a fresh "
        "embedded database (default 30; 0: none)",
    )
    p.add_argument("--port", type=int, default=8501, help="web port (default 8501)")
    p.add_argument("--address", default="127.0.0.1", help="web bind address")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smib_core.cli.children import ServeRecord, end_leftovers, spawn, stop
    from smib_core.embedded import broker_uri, mongo_uri
    from smib_core.services.demo_history import seed_demo

    _stop_on_sigterm()
    settings = Settings.from_env()
    for ended in end_leftovers(settings.data_dir):
        print(f"ended process {ended.pid} left by a previous smib serve: {' '.join(ended.cmdline)}")
    print(f"broker:   {broker_uri(settings).split('@')[-1]}")
    print(f"database: {mongo_uri(settings).split('@')[-1]}")
    smib = [sys.executable, "-m", "smib_core"]
    helpers: dict[str, list[str]] = {}
    if args.sim > 0:
        print(f"registered {_register_demo(settings, args.sim, args.seed)} demo cabinets")
        print(seed_demo(settings, args.sim, args.seed, args.history_days).message())
        helpers["simulator"] = [*smib, "sim", "--relays", str(args.sim), "--seed", str(args.seed)]
    helpers["worker"] = [*smib, "worker"]
    web = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(args.port),
        "--server.address",
        args.address,
    ]
    record = ServeRecord(settings.data_dir)
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in helpers.items():
            running[name] = spawn(command, record)
        if args.sim > 0:
            print(f"simulated fleet: {args.sim} boards (seed {args.seed})")
        print("worker: every background service runs from now on")
        print(f"SMIB Console: http://{args.address}:{args.port}", flush=True)
        app = running["web app"] = spawn(web, record, env=dict(os.environ))
        return _supervise(app, helpers, running, record)
    finally:
        stop(list(running.values()))
        record.delete()


def _supervise(
    app: subprocess.Popen[bytes],
    helpers: dict[str, list[str]],
    running: dict[str, subprocess.Popen[bytes]],
    record: ServeRecord,
) -> int:
    """Wait for the web app to end; start a helper again when it dies meanwhile."""
    from smib_core.cli.children import spawn

    died_at: dict[str, float] = {}
    while (code := app.poll()) is None:
        for name, command in helpers.items():
            child = running[name]
            if child.poll() is None:
                continue
            if name not in died_at:
                died_at[name] = time.monotonic()
                record.remove(child.pid)
                print(f"{name} ended (exit code {child.returncode}); starting it again", flush=True)
            elif time.monotonic() - died_at[name] >= RESTART_AFTER_S:
                del died_at[name]
                running[name] = spawn(command, record)
        time.sleep(0.2)
    return code


def _stop_on_sigterm() -> None:
    """`kill <pid>` and Ctrl-C end serve alike: its children are stopped in order
    (Python's default for SIGTERM would exit at once; they would then only get the
    kernel's SIGTERM of `children.die_with_parent`)."""

    def leave(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    # Ctrl-C too, even when started with SIGINT ignored (a shell's `cmd &` does that,
    # and Python then installs no KeyboardInterrupt of its own).
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _register_demo(settings: Settings, relays: int, seed: int) -> int:
    """Register the simulated boards as cabinets, leaving two unassigned to adopt."""
    from smib_core.services.demo import register_demo_fleet
    from smib_core.sim.board import make_boards
    from smib_core.store.db import connect
    from smib_core.store.registry import Registry

    boards = make_boards(relays, seed)
    ids = [board.relay for board in boards]
    own = {board.relay: board.machine.profile.denom_cents / 100 for board in boards}
    db = connect(settings)
    try:
        registry = Registry(db)
        return register_demo_fleet(registry, ids[: max(0, relays - 2)], "demo", denominations=own)
    finally:
        db.client.close()
