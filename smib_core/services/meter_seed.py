"""A meter history made by the simulator's meter model, for demos, tests and benchmarks.

`machine_history` plays one cabinet's machine (`sim.meters.Machine.from_seed`) forward
in 5-minute steps and returns the readings as a snapshot frame (the analytics format,
plus `cabinet_id`, `location_id`), the meters wrapped to the machine's BCD width as
the board would read them. `rollups_of` computes the hourly and gaming-day rollups of
such a frame with the analytics functions, keyed by `cabinet_id` like the collector's
(`services.meter_rollups`), and `snapshot_documents` turns it into `meter_snapshots`
documents. `seed_history` does all three into a `MeterStore`, and stores the
location-hourly coin in of the seeded hours (`store.rollups.location_hourly_frame`) and
the daily digests of the seeded gaming days.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from smib_core.analytics import meter_movement, rollup
from smib_core.sas import STANDARD_METER_CODES
from smib_core.sim.meters import Machine, history
from smib_core.store.meters import MeterStore, snapshot_document
from smib_core.store.rollups import location_hourly_frame

CODES = tuple(sorted(STANDARD_METER_CODES))


@dataclass(frozen=True, slots=True)
class SeedCabinet:
    cabinet_id: str
    cabinet: str
    location_id: str
    location: str
    relay: str
    seed: int
    # None: the simulated machine's own, so money matches its bets (register that one)
    denomination: float | None = None


def simulated_denomination(seed: int) -> float:
    """The accounting denomination ($ per credit) of the machine `seed` simulates."""
    return Machine.from_seed(seed, history_days=0).profile.denom_cents / 100


def machine_history(
    cabinet: SeedCabinet, start: datetime, steps: int, step_s: float = 300.0
) -> pd.DataFrame:
    """`steps` readings of the cabinet every `step_s` seconds from `start` (UTC)."""
    machine = Machine.from_seed(cabinet.seed)
    pick = itemgetter(*CODES)
    values = [pick(meters) for _, meters in history(machine, start.timestamp(), steps, step_s)]
    counts = np.array(values, dtype=np.int64).reshape(-1, len(CODES))
    return _snapshot_frame(cabinet, machine, counts, start, step_s)


def history_leading_to(
    cabinet: SeedCabinet, machine: Machine, end: datetime, steps: int, step_s: float = 300.0
) -> pd.DataFrame:
    """`steps` readings every `step_s` seconds, the last one at `end` showing `machine`'s
    meters as they are now: the past of a simulated board that goes on from `end`.

    Another machine with the same profile (seeded by `cabinet.seed`) plays the period
    from zero; its play is laid under the present meters (wrapped to the BCD width as
    the board reads them), so every meter keeps its invariants and the board's first
    live reading continues the history without a jump.
    """
    start = end - timedelta(seconds=step_s * (steps - 1))
    player = Machine(machine.profile, random.Random(cabinet.seed))
    pick = itemgetter(*CODES)
    played = np.array(
        [pick(m) for _, m in history(player, start.timestamp(), steps, step_s)], dtype=np.int64
    ).reshape(-1, len(CODES))
    now = np.array(pick(machine.values()), dtype=np.int64)
    counts = now + played - played[-1]
    credits = CODES.index("000C")  # not cumulative: the player's own credit meter
    counts[:, credits] = played[:, credits]
    counts[-1, credits] = now[credits]
    return _snapshot_frame(cabinet, machine, counts, start, step_s)


def _snapshot_frame(
    cabinet: SeedCabinet,
    machine: Machine,
    counts: npt.NDArray[np.int64],
    start: datetime,
    step_s: float,
) -> pd.DataFrame:
    profile = machine.profile
    steps = len(counts)
    wrapped = counts % 10 ** (2 * profile.meter_size)
    frame = pd.DataFrame(wrapped, columns=list(CODES))
    first = pd.Timestamp(start).tz_convert("UTC") if start.tzinfo else pd.Timestamp(start, tz="UTC")
    frame.insert(
        0, "at", first.as_unit("ns") + pd.to_timedelta(np.arange(steps) * step_s, unit="s")
    )
    denomination = cabinet.denomination or profile.denom_cents / 100
    ids: dict[str, Any] = {
        "relay": cabinet.relay,
        "cabinet": cabinet.cabinet,
        "location": cabinet.location,
        "denomination": float(denomination),
        "cabinet_id": cabinet.cabinet_id,
        "location_id": cabinet.location_id,
    }
    sizes = {f"{code}_size": profile.meter_size for code in CODES}
    front = frame[["at"]].assign(**ids)
    return pd.concat([front, frame[list(CODES)].assign(**sizes)], axis=1)


def rollups_of(
    snapshots: pd.DataFrame, *, gaming_day_start_hour: int = 0, tz: str = "UTC"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(hourly, daily) rollups of a snapshot frame, with cabinet and location ids."""
    names = snapshots.drop_duplicates("cabinet_id", keep="last").set_index("cabinet_id")
    movement = meter_movement(snapshots.assign(cabinet=snapshots["cabinet_id"]))
    hourly = rollup(movement, "h", gaming_day_start_hour=gaming_day_start_hour, tz=tz)
    daily = rollup(hourly, "D", gaming_day_start_hour=gaming_day_start_hour, tz=tz)

    def named(frame: pd.DataFrame) -> pd.DataFrame:
        ids = frame["cabinet"]
        return frame.assign(
            cabinet=ids.map(names["cabinet"]),
            cabinet_id=ids,
            location_id=ids.map(names["location_id"]),
        )

    return named(hourly), named(daily)


def snapshot_documents(snapshots: pd.DataFrame, *, demo: bool = False) -> Iterator[dict[str, Any]]:
    """`meter_snapshots` documents of a snapshot frame (all good readings)."""
    codes = [c for c in CODES if c in snapshots.columns]
    for row in snapshots.to_dict("records"):
        yield snapshot_document(
            row["relay"],
            row["at"].to_pydatetime(),
            cabinet_id=row["cabinet_id"],
            cabinet=row["cabinet"],
            location_id=row["location_id"],
            location=row["location"],
            denomination=row["denomination"],
            meters={c: int(row[c]) for c in codes},
            sizes={c: int(row[f"{c}_size"]) for c in codes},
            demo=demo,
        )


@dataclass(frozen=True, slots=True)
class SeedCounts:
    snapshots: int
    hourly: int
    daily: int
    location_hourly: int = 0
    daily_digest: int = 0


def seed_history(
    store: MeterStore,
    cabinets: Sequence[SeedCabinet],
    start: datetime,
    steps: int,
    step_s: float = 300.0,
    *,
    gaming_day_start_hour: int = 0,
    tz: str = "UTC",
) -> SeedCounts:
    """Store each cabinet's simulated readings and their rollups (whole buckets only:
    a history should start and end on a gaming-day boundary to be complete)."""
    counts = SeedCounts(0, 0, 0)
    seeded_hours, seeded_days = [], []
    for cabinet in cabinets:
        frame = machine_history(cabinet, start.astimezone(UTC), steps, step_s)
        hourly, daily = rollups_of(frame, gaming_day_start_hour=gaming_day_start_hour, tz=tz)
        counts = SeedCounts(
            counts.snapshots + store.insert_snapshots(snapshot_documents(frame)),
            counts.hourly + store.upsert_rollups("h", hourly),
            counts.daily + store.upsert_rollups("D", daily),
        )
        seeded_hours.append(hourly[["location_id", "bucket"]])
        seeded_days.append(daily["bucket"])
    if not seeded_hours:
        return counts
    return replace(
        counts,
        location_hourly=_seed_location_hours(store, seeded_hours),
        daily_digest=_seed_daily_digests(store, seeded_days, tz),
    )


def _seed_daily_digests(store: MeterStore, seeded: list[pd.Series], tz: str) -> int:
    """Store the digests of the seeded gaming days, from every stored daily row of them
    (cabinets seeded before share the days)."""
    days = pd.concat(seeded, ignore_index=True).drop_duplicates()
    if days.empty:
        return 0
    first, last = days.min(), days.max() + pd.Timedelta(days=2)
    stored = store.rollups("D", first.to_pydatetime(), last.to_pydatetime(), tz=tz)
    return store.upsert_daily_digest(stored[stored["bucket"].isin(set(days))])


def _seed_location_hours(store: MeterStore, seeded: list[pd.DataFrame]) -> int:
    """Store the location-hour rows of the seeded (location, hour) pairs, from every
    stored hourly row of them (cabinets seeded before share the locations' hours)."""
    pairs = pd.concat(seeded, ignore_index=True).drop_duplicates()
    if pairs.empty:
        return 0
    first, last = pairs["bucket"].min(), pairs["bucket"].max() + pd.Timedelta(hours=1)
    stored = store.rollups("h", first.to_pydatetime(), last.to_pydatetime())
    keys = pairs.assign(bucket=pd.to_datetime(pairs["bucket"], utc=True).dt.as_unit("ns"))
    places = location_hourly_frame(stored).merge(keys, on=["location_id", "bucket"])
    return store.upsert_location_hourly(places)
