"""`smib embedded status|stop`: the embedded broker and database of the data folder."""

from __future__ import annotations

import argparse
import json

from smib_core import embedded
from smib_core.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("embedded", help="show or stop the embedded broker and database")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    st = actions.add_parser("status", help="show what runs for the data folder (SMIB_DATA_DIR)")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=run_status)
    actions.add_parser("stop", help="stop the data folder's embedded servers").set_defaults(
        func=run_stop
    )


def run_status(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    report = embedded.status(settings.data_dir)
    if args.json:
        print(json.dumps({"data_dir": str(settings.data_dir.resolve()), **report}))
        return 0
    overridden = {
        "broker": settings.mqtt_uri is not None,
        "database": settings.mongo_uri is not None,
    }
    env_name = {"broker": "MQTT_URI", "database": "MONGO_URI"}
    print(f"data folder {settings.data_dir.resolve()}")
    for name, entry in report.items():
        line = f"{name:<9} {'running' if entry['running'] else 'stopped'}"
        if entry["running"]:
            line += f"  {entry['uri']}  pid {entry['pid']}  since {entry['started_at']}"
        if overridden[name]:
            line += f"  (not used: {env_name[name]} is set)"
        print(line)
    return 0


def run_stop(args: argparse.Namespace) -> int:
    stopped = embedded.stop(Settings.from_env().data_dir)
    for line in stopped:
        print(f"stopped {line}")
    if not stopped:
        print("nothing was running")
    return 0
