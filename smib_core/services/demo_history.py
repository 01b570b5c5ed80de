"""A live demo on the first run: the demo cabinets get a simulated past.

`smib serve --sim N` (and `./dev run`) registers the simulated boards as demo cabinets
(`services.demo`); `seed_demo` then gives them `--history-days` days of meter history,
some events and a few alerts, so the dashboard, the heatmap and the exports show a
casino at once instead of "no readings yet" for the first ten minutes.

The history leads up to each simulated board's present meters
(`meter_seed.history_leading_to`), so the collector's first live readings go on from
it without a jump. Readings are simulated every 5 minutes and the rollups computed
from all of them, as the collector would (hourly and gaming-day rows, location-hours,
daily digests); the readings themselves are stored every 5 minutes for the last
`RECENT_HOURS` and before that only the last of each hour (what the collector needs to
recompute an hour: the reading that closes it and the one before). The embedded
database inserts a few thousand documents a second: 18 cabinets x 30 days of 5-minute
readings alone would take a minute; this way the whole demo took 11-46 s (the longer
on a loaded 2-core machine: about a third simulating, a third readings, a third rollups).

Never in a database that may hold real data (`why_not`): only the embedded database
of the data folder (no MONGO_URI), holding no cabinet but demo ones and no meter
reading at all. Seeded once: a `demo_seed` document records it (written first, so an
interrupted seeding is not taken for a finished one). Cabinets, locations, readings,
events and alerts carry `demo: true`; the rollups belong to the demo cabinets.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from pymongo.database import Database

from smib_core.analytics import period_bounds
from smib_core.protocol import EventMessage
from smib_core.services.meter_seed import (
    SeedCabinet,
    history_leading_to,
    rollups_of,
    snapshot_documents,
)
from smib_core.settings import Settings
from smib_core.sim.meters import Machine
from smib_core.store.alerts import AlertStore
from smib_core.store.documents import batches, utc_now
from smib_core.store.events import CabinetContext, EventRecord, EventStore
from smib_core.store.meters import SNAPSHOTS, MeterStore
from smib_core.store.registry import Cabinet, Registry
from smib_core.store.rollups import location_hourly_frame

STEP_S = 300.0
# Readings a few seconds past each 5 minutes, as the collector's spread reads are (not
# on the hour: the embedded database compares times to the second).
OFFSET_S = 7
RECENT_HOURS = 24
SEED_COLLECTION = "demo_seed"
SEED_ID = "history"
DEFAULT_DAYS = 30
# (code, daily rate per cabinet): bills, door openings (closed a few minutes later),
# hand pays, a power cut now and then
_EVENTS = (("4F", 6.0), ("11", 0.4), ("51", 0.15), ("17", 0.05))
_CLOSING = {"11": "12", "17": "18"}


@dataclass(frozen=True, slots=True)
class DemoSeed:
    """What seeding did: `reason` says why nothing was seeded (empty when it was)."""

    reason: str = ""
    cabinets: int = 0
    days: int = 0
    snapshots: int = 0
    rollups: int = 0
    events: int = 0
    alerts: int = 0
    seconds: float = 0.0

    def message(self) -> str:
        if self.reason:
            return f"demo history not seeded: {self.reason}"
        return (
            f"demo history seeded: {self.cabinets} cabinets x {self.days} days "
            f"({self.snapshots:,} readings, {self.rollups:,} rollup rows, {self.events:,} "
            f"events, {self.alerts} alerts) in {self.seconds:.1f} s"
        )


def why_not(settings: Settings, db: Database[Any], registry: Registry) -> str:
    """Why demo history must not go into this database ('' when it may)."""
    if settings.mongo_uri:
        return "MONGO_URI is set (demo data goes only into the embedded database)"
    seeded = db[SEED_COLLECTION].find_one({"_id": SEED_ID})
    if seeded is not None:
        when = seeded.get("started_at")
        if seeded.get("finished_at") is None:
            return (
                f"an earlier seeding (started {when:%Y-%m-%d %H:%M} UTC) was interrupted; "
                f"remove the data folder ({settings.data_dir}) to start the demo afresh"
            )
        return f"it was seeded already ({when:%Y-%m-%d %H:%M} UTC)"
    if registry.holds_real_cabinets():
        return "the database holds cabinets that are not demo ones"
    if db[SNAPSHOTS].find_one({}, {"_id": 1}) is not None:
        return "the database holds meter readings already"
    return ""


def seed_demo(settings: Settings, relays: int, seed: int, days: int = DEFAULT_DAYS) -> DemoSeed:
    """`smib serve --sim`: seed the demo cabinets of the simulated fleet (`relays` boards
    of `seed`) with `days` days of history, when `why_not` allows it."""
    from smib_core.sim.board import make_boards
    from smib_core.store.db import connect

    if days <= 0:
        return DemoSeed(reason="--history-days is 0")
    db = connect(settings)
    try:
        registry = Registry(db)
        machines = {board.relay: board.machine for board in make_boards(relays, seed)}
        return seed_if_allowed(settings, db, registry, machines, days)
    finally:
        db.client.close()


def seed_if_allowed(
    settings: Settings,
    db: Database[Any],
    registry: Registry,
    machines: Mapping[str, Machine],
    days: int,
    *,
    now: datetime | None = None,
) -> DemoSeed:
    """Seed the demo cabinets whose relay has a simulated machine, unless `why_not`."""
    if reason := why_not(settings, db, registry):
        return DemoSeed(reason=reason)
    cabinets = [c for c in registry.demo_cabinets() if c.relay in machines]
    if not cabinets:
        return DemoSeed(reason="no demo cabinet has a simulated board")
    return seed_history(
        db,
        registry,
        cabinets,
        machines,
        days,
        now=now or utc_now(),
        gaming_day_start_hour=settings.gaming_day_start_hour,
        tz=settings.timezone,
    )


def seed_history(
    db: Database[Any],
    registry: Registry,
    cabinets: Sequence[Cabinet],
    machines: Mapping[str, Machine],
    days: int,
    *,
    now: datetime,
    gaming_day_start_hour: int = 0,
    tz: str = "UTC",
) -> DemoSeed:
    """Store the cabinets' simulated past (readings, rollups, events, alerts) up to `now`."""
    began = time.perf_counter()
    db[SEED_COLLECTION].insert_one({"_id": SEED_ID, "started_at": utc_now(), "days": days})
    offset = pd.Timedelta(seconds=OFFSET_S)
    end = (pd.Timestamp(now).tz_convert("UTC") - offset).floor("5min") + offset
    first_day = period_bounds(
        "day", end - pd.Timedelta(days=days), gaming_day_start_hour=gaming_day_start_hour, tz=tz
    )[0].tz_convert("UTC")
    steps = int((end - first_day - offset).total_seconds() // STEP_S) + 1
    places = {loc.id: loc.name for loc in registry.locations(include_retired=True)}
    store = MeterStore(db)
    snapshots = rollups = 0
    hours: list[pd.DataFrame] = []
    daily_rows: list[pd.DataFrame] = []
    for cabinet in cabinets:
        relay = str(cabinet.relay)
        seeded = SeedCabinet(
            cabinet.id,
            cabinet.name,
            cabinet.location_id,
            places.get(cabinet.location_id, ""),
            relay,
            seed=int(relay, 16),
            denomination=cabinet.denomination,
        )
        frame = history_leading_to(seeded, machines[relay], end.to_pydatetime(), steps, STEP_S)
        hourly, daily = rollups_of(frame, gaming_day_start_hour=gaming_day_start_hour, tz=tz)
        recent = frame["at"] >= end - pd.Timedelta(hours=RECENT_HOURS)
        kept = frame[recent | (frame["at"].dt.minute == 55)]  # the last of each hour
        snapshots += store.insert_snapshots(snapshot_documents(kept, demo=True))
        rollups += store.upsert_rollups("h", hourly) + store.upsert_rollups("D", daily)
        hours.append(hourly)
        daily_rows.append(daily)
    every_hour = pd.concat(hours, ignore_index=True)
    rollups += store.upsert_location_hourly(location_hourly_frame(every_hour))
    rollups += store.upsert_daily_digest(pd.concat(daily_rows, ignore_index=True))
    contexts = {c.relay: _context(c, places) for c in cabinets}
    events = _seed_events(db, contexts, first_day.to_pydatetime(), end.to_pydatetime())
    alerts = _seed_alerts(db, registry, contexts, end.to_pydatetime())
    marker = db[SEED_COLLECTION].find_one({"_id": SEED_ID}) or {"_id": SEED_ID}
    done = {"finished_at": utc_now(), "cabinets": [c.id for c in cabinets]}
    db[SEED_COLLECTION].replace_one({"_id": SEED_ID}, {**marker, **done})  # not $set: dates
    return DemoSeed(
        cabinets=len(cabinets),
        days=days,
        snapshots=snapshots,
        rollups=rollups,
        events=events,
        alerts=alerts,
        seconds=time.perf_counter() - began,
    )


def _context(cabinet: Cabinet, places: Mapping[str, str]) -> CabinetContext:
    location = places.get(cabinet.location_id, "")
    return CabinetContext(cabinet.id, cabinet.name, cabinet.location_id, location)


def _seed_events(
    db: Database[Any], contexts: Mapping[str | None, CabinetContext], start: datetime, end: datetime
) -> int:
    """Events spread over the period at each kind's daily rate, as the recorder stores
    them (a door opened is closed a few minutes later)."""
    EventStore(db)  # its indexes
    rng = random.Random(7)
    span = (end - start).total_seconds()
    days = span / 86_400
    docs = []
    for relay, context in contexts.items():
        if relay is None:
            continue
        for code, rate in _EVENTS:
            for _ in range(_poisson(rng, rate * days)):
                at = start + timedelta(seconds=rng.uniform(0, span - 600))
                docs.append(_event(relay, code, at, context))
                if code in _CLOSING:
                    later = at + timedelta(seconds=rng.uniform(30, 540))
                    docs.append(_event(relay, _CLOSING[code], later, context))
    for batch in batches(docs, 500):
        db["events"].insert_many(batch, ordered=False)
    return len(docs)


def _poisson(rng: random.Random, mean: float) -> int:
    return max(0, round(rng.gauss(mean, mean**0.5))) if mean > 0 else 0


def _event(relay: str, code: str, at: datetime, context: CabinetContext) -> dict[str, Any]:
    message = EventMessage(relay, "event", "demo", code=code)
    return EventRecord(message, at, context).document() | {"demo": True}


def _seed_alerts(
    db: Database[Any],
    registry: Registry,
    contexts: Mapping[str | None, CabinetContext],
    now: datetime,
) -> int:
    """A few alerts: a door opened and closed, a RAM clear nobody acknowledged yet, a
    board that was offline for a while two days ago."""
    relays = sorted(r for r in contexts if r)
    if not relays:
        return 0
    alerts = AlertStore(db, registry.audit)
    plan = [
        ("slot_door_open", relays[0], "slot door opened", 40, 37, "door closed"),
        ("ram_clear", relays[min(1, len(relays) - 1)], "RAM clear on the machine", 180, None, ""),
        ("board_offline", relays[-1], "not heard for 4 minutes", 2 * 1440, 2 * 1440 - 25, "back"),
    ]
    for kind, relay, detail, minutes_ago, resolved_ago, resolution in plan:
        at = now - timedelta(minutes=minutes_ago)
        alert, _ = alerts.raise_alert(kind, relay, detail, contexts[relay], at=at)
        db["alerts"].update_one({"_id": alert.id}, {"$set": {"demo": True}})
        if resolved_ago is not None:
            alerts.resolve(kind, relay, resolution, at=now - timedelta(minutes=resolved_ago))
    return len(plan)
