"""Rollout use cases for the page and the CLI: choose firmware and targets, start a rollout,
and turn its progress into tables. Plain data and DataFrames; no streamlit.

Targets are chosen as for batch work (`services.batch_targets`: a location, boards one by
one), or by the version each board last reported on the bus.
The firmware server is checked from outside (`http_status`), as a board would reach it.
"""

from __future__ import annotations

import http.client
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import pandas as pd
from pymongo.database import Database

from smib_core.auth import Principal
from smib_core.errors import InvalidInput
from smib_core.firmware.server import PREFIX, FirmwareServer
from smib_core.services.local_time import local_text
from smib_core.services.rollout import LEASE_NAME, confirmed_share, same_version
from smib_core.store.firmware import FirmwareInfo, FirmwareLibrary
from smib_core.store.leases import Lease, LeaseHolder
from smib_core.store.rollouts import IN_FLIGHT, BoardState, Rollout, RolloutStore

BOARD_COLUMNS = [
    "relay",
    "batch",
    "state",
    "reason",
    "from_version",
    "version",
    "command_at",
    "downloaded_at",
    "finished_at",
    "updated_at",
]
BATCH_COLUMNS = [
    "batch",
    "boards",
    "confirmed",
    "skipped",
    "not_confirmed",
    "updating",
    "queued",
    "not_started",
    "done",
    "status",
]
ROLLOUT_COLUMNS = [
    "id",
    "state",
    "firmware",
    "boards",
    "confirmed",
    "not_confirmed",
    "progress",
    "started_by",
    "created_at",
    "reason",
]
NOT_CONFIRMED = ("failed", "timed_out")
_FINAL_TIME = ("confirmed", "skipped", "failed", "timed_out", "not_started")


def find_firmware(
    library: FirmwareLibrary, version: str, product: str | None = None
) -> FirmwareInfo:
    """The library's (not archived) firmware of `version`, of `product` when several match."""
    matches = [
        info
        for info in library.list()
        if info.version == version.strip() and (not product or info.product == product.strip())
    ]
    if not matches:
        of = f" of {product}" if product else ""
        raise InvalidInput(f"no firmware version {version}{of} in the library (smib firmware list)")
    if len(matches) > 1:
        products = ", ".join(sorted(i.product for i in matches))
        raise InvalidInput(f"version {version} exists for {products}: choose one with --product")
    return matches[0]


def start_rollout(
    db: Database[Any],
    principal: Principal | None,
    firmware_id: str,
    relays: Sequence[str],
    *,
    batch_size: int,
    min_success_pct: float,
    timeout_s: float,
) -> Rollout:
    """Record a rollout for the runner to drive (the store checks the role and audits)."""
    firmware = FirmwareLibrary(db).by_id(firmware_id)
    if firmware is None:
        raise InvalidInput("that firmware is no longer in the library")
    return RolloutStore(db).create(
        firmware,
        relays,
        batch_size=batch_size,
        min_success_pct=min_success_pct,
        timeout_s=timeout_s,
        principal=principal,
    )


def runner_holder(db: Database[Any]) -> LeaseHolder | None:
    """Which process drives rollouts now (None: no runner is alive)."""
    return Lease(db, LEASE_NAME, "viewer", 1.0).holder()


def local_url(server: FirmwareServer) -> str:
    """Where this host reaches the firmware server (boards may be given another name)."""
    host = "127.0.0.1" if server.bind in ("", "0.0.0.0", "::") else server.bind
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{server.port}{PREFIX}"


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The status an HTTP server answers a HEAD of `url` with (200: a file it serves);
    None when nothing answers."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("HEAD", parts.path or "/")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


# --- targets (chosen with services.batch_targets) ----------------------------------


class VersionSource(Protocol):
    """What this reads of `smib_core.bus.DeviceBus`."""

    def firmware(self, relay: str) -> tuple[str, str] | None: ...


def reported_versions(bus: VersionSource, relays: Iterable[str]) -> dict[str, str]:
    """relay -> the version its latest `app` reply gave ("" when never heard)."""
    return {relay: (bus.firmware(relay) or ("", ""))[1] for relay in relays}


def relays_on(versions: Mapping[str, str], wanted: Iterable[str]) -> list[str]:
    chosen = set(wanted)
    return sorted(relay for relay, version in versions.items() if version in chosen)


def already_on(versions: Mapping[str, str], version: str) -> list[str]:
    """The boards that last reported the target version (the rollout will skip them)."""
    return [relay for relay, known in versions.items() if same_version(known, version)]


# --- progress ------------------------------------------------------------------------


def board_counts(boards: Iterable[BoardState]) -> dict[str, int]:
    """confirmed, skipped, not_confirmed, updating, queued, not_started, total."""
    states = Counter(b.state for b in boards)
    return {
        "confirmed": states["confirmed"],
        "skipped": states["skipped"],
        "not_confirmed": sum(states[s] for s in NOT_CONFIRMED),
        "updating": sum(states[s] for s in IN_FLIGHT),
        "queued": states["queued"],
        "not_started": states["not_started"],
        "total": sum(states.values()),
    }


def done_fraction(counts: dict[str, int]) -> float:
    finished = counts["confirmed"] + counts["skipped"] + counts["not_confirmed"]
    finished += counts["not_started"]
    return 0.0 if not counts["total"] else finished / counts["total"]


def batch_progress(boards: Sequence[BoardState]) -> pd.DataFrame:
    """One row per batch: its counts, the fraction done and where it stands."""
    rows = []
    for batch in sorted({b.batch for b in boards}):
        counts = board_counts(b for b in boards if b.batch == batch)
        done = done_fraction(counts)
        status = (
            "done" if done >= 1 else "updating" if done > 0 or counts["updating"] else "waiting"
        )
        rows.append(
            {
                "batch": batch + 1,
                "boards": counts["total"],
                **{k: counts[k] for k in BATCH_COLUMNS[2:8]},
                "done": done,
                "status": status,
            }
        )
    return pd.DataFrame(rows, columns=BATCH_COLUMNS)


def batch_lines(boards: Sequence[BoardState]) -> list[tuple[float, str]]:
    """(fraction done, one line of text) per batch, for progress bars."""
    lines = []
    for row in batch_progress(boards).to_dict("records"):
        parts = [f"Batch {row['batch']}", f"{row['confirmed']} of {row['boards']} confirmed"]
        for key, label in (
            ("not_confirmed", "not confirmed"),
            ("skipped", "skipped"),
            ("updating", "updating"),
        ):
            if row[key]:
                parts.append(f"{row[key]} {label}")
        lines.append((float(row["done"]), " · ".join([*parts, str(row["status"])])))
    return lines


def boards_table(boards: Sequence[BoardState]) -> pd.DataFrame:
    rows = [
        {
            "relay": b.relay,
            "batch": b.batch + 1,
            "state": b.state,
            "reason": b.reason,
            "from_version": b.previous_version,
            "version": b.version,
            "command_at": b.command_at,
            "downloaded_at": b.download_at,
            "finished_at": b.times.get(b.state) if b.state in _FINAL_TIME else None,
            "updated_at": b.updated_at,
        }
        for b in boards
    ]
    frame = pd.DataFrame(rows, columns=BOARD_COLUMNS)
    for column in ("command_at", "downloaded_at", "finished_at", "updated_at"):
        frame[column] = pd.to_datetime(frame[column].astype(float), unit="s", utc=True)
    return frame


def rollouts_table(rollouts: Sequence[Rollout], store: RolloutStore) -> pd.DataFrame:
    """One row per rollout with its counts (one query per rollout: keep the list short)."""
    rows = []
    for r in rollouts:
        counts = board_counts(store.boards(r.id))
        rows.append(
            {
                "id": r.id,
                "state": r.state,
                "firmware": f"{r.product} {r.version}",
                "boards": counts["total"],
                "confirmed": counts["confirmed"],
                "not_confirmed": counts["not_confirmed"],
                "progress": done_fraction(counts),
                "started_by": r.actor,
                "created_at": r.created_at,
                "reason": r.reason,
            }
        )
    frame = pd.DataFrame(rows, columns=ROLLOUT_COLUMNS)
    frame["created_at"] = pd.to_datetime(frame["created_at"].astype(float), unit="s", utc=True)
    return frame


def batch_count(boards: int, batch_size: int) -> str:
    """'1 batch', '3 batches'."""
    count = -(-boards // max(1, batch_size))
    return f"{count} batch" if count == 1 else f"{count} batches"


def summary_text(
    rollout: Rollout, boards: Sequence[BoardState], now: float | None = None, tz: str = "UTC"
) -> str:
    """Who, when (local time in the zone `tz`), how long, and the success share against
    the threshold, in one line."""
    start = rollout.started_at or rollout.created_at
    end = rollout.finished_at or (time.time() if now is None else now)
    seconds = max(0, int(end - start))
    took = f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
    when = local_text(rollout.created_at, tz, "%Y-%m-%d %H:%M")
    share = confirmed_share(boards)
    so_far = "no board updated yet" if share is None else f"{share:.0f}% confirmed"
    return (
        f"Started by {rollout.actor} on {when} · {'took' if rollout.finished else 'running for'} "
        f"{took} · batches of {rollout.batch_size} · {so_far}, goes on while at least "
        f"{rollout.min_success_pct:g}% of the updated boards are confirmed"
    )
