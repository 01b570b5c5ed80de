"""The collector's rollup refreshes in bulk: what each cabinet's rollups need, in memory.

`meter_rollups.refresh_rollups` recomputes a cabinet's hour from the database: three
queries and a pandas pass per reading, which on the embedded database came to about
0.12-0.27 s a reading (4-8 readings a second, where 5,000 boards on a 5-minute period
bring 17). The collector keeps instead, per cabinet, what the next refresh needs:

- `tail`: its last `BASELINE_READINGS` good readings (the next interval's baseline);
- `hour`: the rollup row of the hour of its latest reading (cabinet = its id);
- `done`: that gaming day's earlier hours summed (a daily row, or none).

Good readings the keeper stored are `add`ed; `flush` folds every cabinet's new
readings in at once: one snapshot frame, one `meter_movement`, one hourly and one daily
`rollup` over all of them, and one bulk upsert of the touched hourly and daily rows.
Sums are associative, so an hour's row rolled up with the movement that followed is the
row of all that hour's intervals (`analytics.rollups.rollup`: "last" fields from the
newest, money summed before credits are derived from a mixed denomination).

A cabinet is loaded from the database once (its readings from the hour of its first new
one on, the three before as baseline, and that day's earlier hourly rows) unless it is
`fresh`: nothing of it stored before (`classify`: its relay has no last reading and no
slot of it was recorded), which is every board of a new fleet. At most
`LOADS_PER_FLUSH` cabinets are loaded a flush; the others wait for the next one.

A reading at or before a cabinet's latest (a late one drained from a backlog, a slot a
split brain stored) is refreshed the old way (`refresh_rollups`, exact) and the cabinet
loaded again. `forget` drops cabinets whose rows someone else rewrote (the reconciliation)
or, with no argument, everything (the collector lease lost). A failed write leaves the
book as it was and the readings queued for the next flush: rows are replaced, never
added to, so a flush done again is still right.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pandas as pd

from smib_core.analytics import meter_movement, period_bounds
from smib_core.analytics.rollups import ROLLUP_COLUMNS, rollup
from smib_core.services.meter_rollups import (
    BASELINE_READINGS,
    reading_hour,
    refresh_rollups,
)
from smib_core.store.meters import SNAPSHOT_COLUMNS, MeterStore, snapshot_frame

log = logging.getLogger(__name__)

LOADS_PER_FLUSH = 25  # cabinets read from the database per flush, at most
DAYS_REMEMBERED = 10_000  # hours whose gaming day is remembered
_FAR = timedelta(days=1)  # readings are read up to now + this (a fast clock's too)
_ONE_NS = pd.Timedelta(1, unit="ns")

Doc = dict[str, Any]


@dataclass(slots=True)
class _Entry:
    tail: list[Doc] = field(default_factory=list)
    hour: Doc | None = None
    done: Doc | None = None


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What a flush wrote: the (location id, hour) pairs of the hourly rows written and
    their gaming days, and the movement of the intervals the added readings close
    (cabinet = its id: what the RAM clear alerts are raised from)."""

    places: set[tuple[str, datetime]] = field(default_factory=set)
    days: set[datetime] = field(default_factory=set)
    closing: pd.DataFrame = field(default_factory=pd.DataFrame)


def _slim(doc: Mapping[str, Any]) -> Doc:
    """What a snapshot frame needs of a reading document."""
    slim = {c: doc.get(c, "") for c in SNAPSHOT_COLUMNS}
    slim["meters"] = dict(doc.get("meters") or {})
    slim["sizes"] = dict(doc.get("sizes") or {})
    return slim


def _epoch_ms(at: Any) -> int:
    moment = pd.Timestamp(at)
    if moment.tzinfo is None:
        moment = moment.tz_localize(UTC)
    return int(moment.value // 1_000_000)


class RollupBook:
    """See the module docstring. `add` is thread-safe; `flush` runs on one thread."""

    def __init__(self, store: MeterStore, *, gaming_day_start_hour: int = 0, tz: str = "UTC"):
        self._store = store
        self._day_start = gaming_day_start_hour
        self._tz = tz
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._fresh: set[str] = set()  # cabinet ids with nothing stored before
        self._classified: set[str] = set()
        self._new: dict[str, list[Doc]] = {}  # cabinet id -> good readings added
        self._days: dict[pd.Timestamp, pd.Timestamp] = {}  # hour -> its gaming day

    # --- what is known ----------------------------------------------------------------

    def classify(self, targets: Iterable[tuple[str, str]]) -> None:
        """Mark the (relay, cabinet id) pairs not seen before as fresh when nothing of
        them is stored (two finds: last readings, last slots). Before they are read."""
        unseen = [(r, c) for r, c in targets if c not in self._classified]
        if not unseen:
            return
        relays, cabinets = self._store.relays_read(), self._store.cabinets_slotted()
        with self._lock:
            for relay, cabinet_id in unseen:
                self._classified.add(cabinet_id)
                if relay not in relays and cabinet_id not in cabinets:
                    self._fresh.add(cabinet_id)

    def is_fresh(self, cabinet_id: str) -> bool:
        """Nothing of the cabinet was stored before this process classified it."""
        with self._lock:
            return cabinet_id in self._fresh and cabinet_id not in self._entries

    def forget(self, cabinet_ids: Iterable[str] | None = None) -> None:
        """Drop what is known of some cabinets (every one, with None): they are read
        from the database again at their next reading. Their queued readings stay."""
        with self._lock:
            if cabinet_ids is None:
                self._entries.clear()
                self._fresh.clear()
                self._classified.clear()
                return
            for cabinet_id in cabinet_ids:
                self._entries.pop(cabinet_id, None)
                self._fresh.discard(cabinet_id)

    def cabinets(self) -> int:
        with self._lock:
            return len(self._entries)

    def waiting(self) -> int:
        with self._lock:
            return sum(len(docs) for docs in self._new.values())

    # --- adding, flushing --------------------------------------------------------------

    def add(self, docs: Iterable[Mapping[str, Any]]) -> None:
        """Good readings just stored (each with its `cabinet_id`)."""
        with self._lock:
            for doc in docs:
                self._new.setdefault(str(doc["cabinet_id"]), []).append(_slim(doc))

    def flush(self) -> Refreshed | None:
        """Fold the added readings into their cabinets' rollups (see the module
        docstring); None when nothing waited. Raises PyMongoError when the database
        did not take the rows (the readings stay queued)."""
        with self._lock:
            batch, self._new = self._new, {}
        if not batch:
            return None
        try:
            return self._flush(batch)
        except BaseException:
            self._requeue(batch)
            raise

    def _requeue(self, batch: Mapping[str, list[Doc]]) -> None:
        with self._lock:
            for cabinet_id, docs in batch.items():
                self._new[cabinet_id] = docs + self._new.get(cabinet_id, [])

    def _flush(self, batch: dict[str, list[Doc]]) -> Refreshed:
        added = {(c, _epoch_ms(d["at"])) for c, docs in batch.items() for d in docs}
        refreshed = Refreshed()
        entries, floors, later = self._entries_for(batch, refreshed)
        if later:
            self._requeue(later)
        for cabinet_id in later:
            batch.pop(cabinet_id)
        if not entries:
            return refreshed
        result, state = self._compute(batch, entries, floors)
        self._write(result)
        with self._lock:
            for cabinet_id, entry in state.items():
                self._entries[cabinet_id] = entry
                self._fresh.discard(cabinet_id)
        movement = result.movement
        ends = movement["end"].astype("int64") // 1_000_000
        closing = [(c, e) in added for c, e in zip(movement["cabinet"], ends, strict=True)]
        hours = result.hours
        refreshed.places.update(
            (str(loc), pd.Timestamp(b).to_pydatetime())
            for loc, b in zip(hours.get("location_id", []), hours.get("bucket", []), strict=True)
        )
        refreshed.days.update(
            self._day_of(pd.Timestamp(b)).to_pydatetime() for b in hours.get("bucket", [])
        )
        return replace(refreshed, closing=movement[closing].reset_index(drop=True))

    def _entries_for(
        self, batch: dict[str, list[Doc]], refreshed: Refreshed
    ) -> tuple[dict[str, _Entry], dict[str, pd.Timestamp], dict[str, list[Doc]]]:
        """Each cabinet's entry (loaded when unknown), the hour below which a loaded
        cabinet's movement is not its own, and the cabinets left for a later flush."""
        entries: dict[str, _Entry] = {}
        floors: dict[str, pd.Timestamp] = {}
        later: dict[str, list[Doc]] = {}
        loads = 0
        for cabinet_id, docs in batch.items():
            docs.sort(key=lambda d: _epoch_ms(d["at"]))
            with self._lock:
                entry = self._entries.get(cabinet_id)
                fresh = cabinet_id in self._fresh
            if entry is not None and entry.tail:
                newest = _epoch_ms(entry.tail[-1]["at"])
                behind = [d for d in docs if _epoch_ms(d["at"]) <= newest]
                if behind:  # older than what is folded in: the exact way, then reload
                    self._refresh_behind(cabinet_id, behind, refreshed)
                    with self._lock:
                        self._entries.pop(cabinet_id, None)
                    entry = None
                    fresh = False
            if entry is None and fresh:
                entry = _Entry()
            if entry is None:
                if loads >= LOADS_PER_FLUSH:
                    later[cabinet_id] = docs
                    continue
                loads += 1
                entry, floors[cabinet_id], docs[:] = self._load(cabinet_id, docs)
            entries[cabinet_id] = entry
        return entries, floors, later

    def _refresh_behind(self, cabinet_id: str, docs: list[Doc], refreshed: Refreshed) -> None:
        hours = {reading_hour(d["at"], self._tz): d for d in docs}
        for hour, doc in hours.items():
            refresh_rollups(
                self._store,
                cabinet_id,
                doc["at"],
                gaming_day_start_hour=self._day_start,
                tz=self._tz,
            )
            refreshed.places.add((str(doc.get("location_id") or ""), hour.to_pydatetime()))
            refreshed.days.add(self._day_of(hour).to_pydatetime())

    def _load(self, cabinet_id: str, docs: list[Doc]) -> tuple[_Entry, pd.Timestamp, list[Doc]]:
        """A cabinet's entry as of just before the hour of its first new reading, the
        hour, and its stored readings from that hour on (the new ones among them)."""
        first = pd.Timestamp(docs[0]["at"]).to_pydatetime()
        hour = reading_hour(first, self._tz)
        start = hour.tz_convert(UTC).to_pydatetime()
        store = self._store
        baseline = store.previous_snapshot_docs(cabinet_id, start, BASELINE_READINGS)
        since = store.snapshot_docs(cabinet_id, start, datetime.now(UTC) + _FAR)
        day_start = self._day_of(hour)
        done = None
        if day_start < hour:  # the day's earlier hours
            earlier = store.rollups(
                "h", day_start.to_pydatetime(), start, cabinet_ids=[cabinet_id], tz=self._tz
            )
            if not earlier.empty:
                hours = earlier.assign(cabinet=cabinet_id)[list(ROLLUP_COLUMNS)]
                done = _records(self._rollup(hours, "D"))[0]
        seen = {_epoch_ms(d["at"]) for d in since}
        added = [d for d in docs if _epoch_ms(d["at"]) not in seen]  # not readable yet
        readings = sorted([*map(_slim, since), *added], key=lambda d: _epoch_ms(d["at"]))
        return _Entry(tail=[_slim(d) for d in baseline], done=done), hour, readings

    # --- the computation ---------------------------------------------------------------

    def _compute(
        self,
        batch: Mapping[str, list[Doc]],
        entries: Mapping[str, _Entry],
        floors: Mapping[str, pd.Timestamp],
    ) -> tuple[_Result, dict[str, _Entry]]:
        docs: list[Doc] = []
        after: dict[str, int] = {}  # cabinet -> movement ending after this (epoch ms)
        for cabinet_id, entry in entries.items():
            docs += [d | {"cabinet": cabinet_id} for d in (*entry.tail, *batch[cabinet_id])]
            if entry.tail:
                after[cabinet_id] = _epoch_ms(entry.tail[-1]["at"])
        snapshots = snapshot_frame(docs)
        movement = meter_movement(snapshots)
        end_ms = movement["end"].astype("int64") // 1_000_000
        cut = movement["cabinet"].map(after).fillna(-1).astype("int64")
        keep = end_ms > cut
        if floors:
            floor_of = {c: f.tz_convert(UTC).value for c, f in floors.items()}
            floor_ns = movement["cabinet"].map(floor_of).fillna(-1).astype("int64")
            keep &= movement["end"].astype("int64") > floor_ns
        movement = movement[keep].reset_index(drop=True)
        new_hours = self._rollup(movement, "h")
        prior = [e.hour for e in entries.values() if e.hour is not None]
        hours = self._rollup(_frame([*prior, *_records(new_hours)]), "h")
        touched = set(zip(new_hours["cabinet"], new_hours["bucket"], strict=True))
        hours_written = hours[
            [(c, b) in touched for c, b in zip(hours["cabinet"], hours["bucket"], strict=True)]
        ]
        done = [e.done for e in entries.values() if e.done is not None]
        days = self._rollup(_frame([*done, *_records(hours)]), "D")
        touched_days = {(c, self._day_of(b)) for c, b in touched}
        days_written = days[
            [(c, b) in touched_days for c, b in zip(days["cabinet"], days["bucket"], strict=True)]
        ]
        names = {c: batch[c][-1] for c in entries}
        state = self._next_state(entries, batch, hours, done)
        result = _Result(movement, _named(hours_written, names), _named(days_written, names))
        return result, state

    def _rollup(self, frame: pd.DataFrame, freq: Literal["h", "D"]) -> pd.DataFrame:
        return rollup(frame, freq, gaming_day_start_hour=self._day_start, tz=self._tz)

    def _day_of(self, bucket: pd.Timestamp) -> pd.Timestamp:
        """The start of the gaming day holding the hour `bucket` (remembered per hour)."""
        day = self._days.get(bucket)
        if day is None:
            hour = self._day_start
            day = period_bounds("day", bucket, gaming_day_start_hour=hour, tz=self._tz)[0]
            if len(self._days) > DAYS_REMEMBERED:
                self._days.clear()
            self._days[bucket] = day
        return day

    def _next_state(
        self,
        entries: Mapping[str, _Entry],
        batch: Mapping[str, list[Doc]],
        hours: pd.DataFrame,
        done: list[Doc],
    ) -> dict[str, _Entry]:
        """Each cabinet's entry after the flush: the last readings, the row of its
        latest hour, that day's earlier hours summed."""
        latest: dict[str, Doc] = {}
        earlier: dict[str, list[Doc]] = {}
        for row in _records(hours.sort_values(["cabinet", "bucket"])):
            cabinet_id = str(row["cabinet"])
            if cabinet_id in latest:
                earlier.setdefault(cabinet_id, []).append(latest[cabinet_id])
            latest[cabinet_id] = row
        done_of = {str(d["cabinet"]): d for d in done}
        state: dict[str, _Entry] = {}
        for cabinet_id, entry in entries.items():
            readings = [*entry.tail, *batch[cabinet_id]]
            hour = latest.get(cabinet_id, entry.hour)
            summed = entry.done
            if hour is not None:
                day = self._day_of(pd.Timestamp(hour["bucket"]))
                parts = [done_of[cabinet_id]] if cabinet_id in done_of else []
                parts += earlier.get(cabinet_id, [])
                same_day = [p for p in parts if self._day_of(pd.Timestamp(p["bucket"])) == day]
                summed = None
                if same_day:
                    summed = _records(self._rollup(_frame(same_day), "D"))[0]
            state[cabinet_id] = _Entry(readings[-BASELINE_READINGS:], hour, summed)
        return state

    def _write(self, result: _Result) -> None:
        self._store.upsert_rollups("h", result.hours)
        self._store.upsert_rollups("D", result.days)


@dataclass(frozen=True, slots=True)
class _Result:
    movement: pd.DataFrame
    hours: pd.DataFrame
    days: pd.DataFrame


def _records(frame: pd.DataFrame) -> list[Doc]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def _frame(records: list[Doc]) -> pd.DataFrame:
    """Rollup records (hourly or daily, cabinet = id) as a frame `rollup` can sum."""
    frame = pd.DataFrame.from_records(records, columns=list(ROLLUP_COLUMNS))
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    for column in ("start", "end"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _named(rows: pd.DataFrame, latest: Mapping[str, Doc]) -> pd.DataFrame:
    """Rows keyed by cabinet id with the names of each cabinet's latest reading."""
    if rows.empty:
        return rows
    ids = rows["cabinet"].astype(str)
    return rows.assign(
        cabinet_id=ids,
        cabinet=ids.map(lambda c: str(latest[c].get("cabinet") or c)),
        location_id=ids.map(lambda c: str(latest[c].get("location_id") or "")),
    )
