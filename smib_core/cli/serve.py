"""`smib serve [--sim N]`: the app with its embedded defaults and, optionally, a simulated fleet.

The embedded broker and database are started (or found already running for the data
folder) before the app and the simulator start, so both find the same servers.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from smib_core.settings import Settings

APP = Path(__file__).resolve().parents[2] / "app.py"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve the web app (embedded broker/database by default)")
    p.add_argument("--sim", type=int, default=0, metavar="N", help="also run N simulated boards")
    p.add_argument("--seed", type=int, default=1, help="seed of the simulated fleet")
    p.add_argument("--port", type=int, default=8501, help="web port (default 8501)")
    p.add_argument("--address", default="127.0.0.1", help="web bind address")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smib_core.embedded import broker_uri, mongo_uri

    _stop_on_sigterm()
    settings = Settings.from_env()
    print(f"broker:   {broker_uri(settings).split('@')[-1]}")
    print(f"database: {mongo_uri(settings).split('@')[-1]}")
    children: list[subprocess.Popen[bytes]] = []
    smib = [sys.executable, "-m", "smib_core"]
    try:
        if args.sim > 0:
            print(f"registered {_register_demo(settings, args.sim, args.seed)} demo cabinets")
            sim = [*smib, "sim", "--relays", str(args.sim), "--seed", str(args.seed)]
            children.append(subprocess.Popen(sim))
            print(f"simulated fleet: {args.sim} boards (seed {args.seed})")
        web = [
            sys.executable,
            "-m",
            "smib_core.ui.launch",
            "run",
            str(APP),
            "--server.port",
            str(args.port),
            "--server.address",
            args.address,
        ]
        print(f"SMIB Console: http://{args.address}:{args.port}")
        app = subprocess.Popen(web, env=dict(os.environ))
        children.append(app)
        return app.wait()
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()


def _stop_on_sigterm() -> None:
    """`kill <pid>` ends serve as Ctrl-C does: the simulator and the web app stop with it
    (Python's default for SIGTERM would exit at once and leave them running)."""

    def leave(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


def _register_demo(settings: Settings, relays: int, seed: int) -> int:
    """Register the simulated boards as cabinets, leaving two unassigned to adopt."""
    from smib_core.services.demo import register_demo_fleet
    from smib_core.sim.board import make_boards
    from smib_core.store.db import connect
    from smib_core.store.registry import Registry

    ids = [board.relay for board in make_boards(relays, seed)]
    db = connect(settings)
    try:
        return register_demo_fleet(Registry(db), ids[: max(0, relays - 2)], actor="demo")
    finally:
        db.client.close()
