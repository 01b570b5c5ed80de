"""Live fleet status from the bus: plain data in, DataFrames out (no streamlit, no paho).

The bus is read through a small Protocol so these functions can be tested with a fake.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import pandas as pd

from smib_core.protocol import COMS_MODES


class LiveBus(Protocol):
    def relays_seen(self) -> dict[str, float]: ...

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]: ...


def ago(seconds: float | None) -> str:
    """'12 s ago', '4 min ago', '3 h ago', '2 d ago'; 'never' for None."""
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 86_400:
        return f"{seconds // 3600:.0f} h ago"
    return f"{seconds // 86_400:.0f} d ago"


def is_online(last_seen: float | None, now: float, offline_after_s: float) -> bool:
    return last_seen is not None and now - last_seen <= offline_after_s


BOARD_COLUMNS = ["relay", "status", "last_seen", "seen", "firmware", "version", "comms"]


def boards_seen(bus: LiveBus, offline_after_s: float, now: float | None = None) -> pd.DataFrame:
    """One row per board heard on the bus, most recently heard first."""
    now = time.time() if now is None else now
    rows = []
    for relay, last in bus.relays_seen().items():
        config = bus.latest_config(relay)
        app = dict(config.get("app", ({}, 0.0))[0])
        coms = dict(config.get("coms", ({}, 0.0))[0])
        mode = coms.get("comsMode")
        rows.append(
            {
                "relay": relay,
                "status": "online" if is_online(last, now, offline_after_s) else "offline",
                "last_seen": pd.Timestamp(last, unit="s", tz="UTC"),
                "seen": ago(now - last),
                "firmware": app.get("firmware", ""),
                "version": app.get("version", ""),
                "comms": COMS_MODES.get(mode, "") if isinstance(mode, int) else "",
            }
        )
    frame = pd.DataFrame(rows, columns=BOARD_COLUMNS)
    return frame.sort_values("last_seen", ascending=False, ignore_index=True)
