"""Meter history: one snapshot per reading attempt (and, through `RollupStore`, the
hourly/daily rollups of it: `smib_core.store.rollups`).

Contract (the collector writes, dashboards and exports read):

- `meter_snapshots`: one document per reading attempt, failed ones included so gaps
  are visible: `{relay, cabinet_id, cabinet, location_id, location, at, denomination,
  ok, failure, failure_check, meters: {code: value}, sizes: {code: size byte}}`.
  `meters` holds only the meters the machine supports; a failed reading has none and
  says why (`failure`, and `failure_check`: one of `FAILURE_CHECKS`).
  Indexes: (relay, at), (cabinet_id, at), (at).
- `meter_failures`: a copy of each failed attempt (`relay, cabinet, location, at,
  failure, failure_check, cabinet_id, location_id`), so the dashboard's data-quality
  panel reads a period's few failures instead of scanning its snapshots.
- `meter_last_readings`: per relay, the epoch seconds of its newest reading attempt
  and newest good reading (`$max`), so "when did we last hear it" needs no scan.
- Scheduled snapshots (the periodic collector's, `smib_core.slots`) also carry `slot`
  and `period_s`, and their `_id` is `slot_id(cabinet_id, period_s, slot)`: storing a
  slot twice stores it once (a good reading may still replace a `missed` record of its
  slot). A `missed` snapshot covering a long gap carries `slot_from`/`slot_to`.
  `meter_last_slots` keeps, per cabinet and period, the newest slot recorded (`$max`),
  so finding the slots nobody recorded needs no scan.

Reads come back as DataFrames in the analytics formats: `snapshots` in the snapshot
frame (`relay, cabinet, location, at, denomination`, one column per meter code,
`<code>_size`; plus `cabinet_id, location_id`), `rollups` in the rollup frame (plus
`cabinet_id, location_id`). `cabinet` and `location` are names, for people; use the
ids to follow one machine across a rename. Every read is by indexed fields and a
time range `[start, end)`; large reads go through `iter_snapshot_chunks`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from smib_core.errors import InvalidInput
from smib_core.slots import slot_id
from smib_core.store.documents import (
    READ_ALL_BATCH,
    batches,
    insert_new,
    instant,
    match_any,
    period_filter,
)
from smib_core.store.rollups import DEFAULT_CHUNK_ROWS, ID_COLUMNS, MAX_BATCH, RollupStore

SNAPSHOTS = "meter_snapshots"
LAST_READINGS = "meter_last_readings"
LAST_SLOTS = "meter_last_slots"
# Failed attempts are also copied here, so the dashboard's data-quality panel reads the
# few failures of a period instead of scanning every snapshot of it.
FAILURES = "meter_failures"
# "missed": a scheduled slot nobody could read (collector down, takeover, database away).
FAILURE_CHECKS = (
    "crc",
    "length",
    "size",
    "bcd",
    "hex",
    "command",
    "device_error",
    "timeout",
    "missed",
    # a reply the money rules (`analytics.verdicts`) did not book, kept with its meters
    "stale",
    "suspect",
    "clock_behind",
    "unjudged",
    "too_large",  # a meter of more than 18 digits (collector.MAX_METER)
)
REFUSED = ["stale", "suspect", "clock_behind", "unjudged"]  # replies not booked, meters kept
LATE_REPLACEABLE = "timeout"  # a slot's no-reply record a late reply of that slot replaces
MISSED = "missed"
SNAPSHOT_COLUMNS = [
    "relay",
    "cabinet",
    "location",
    "at",
    "denomination",
    "cabinet_id",
    "location_id",
]
FAILURE_COLUMNS = ["relay", "cabinet", "location", "at", "failure", "failure_check"]
MAX_CHUNK_ROWS = 50_000


def snapshot_document(
    relay: str,
    at: datetime,
    *,
    cabinet_id: str = "",
    cabinet: str = "",
    location_id: str = "",
    location: str = "",
    denomination: float = 0.0,
    meters: Mapping[str, int | None] | None = None,
    sizes: Mapping[str, int] | None = None,
    ok: bool | None = None,
    failure: str | None = None,
    failure_check: str | None = None,
    slot: int | None = None,
    period_s: float | None = None,
    slot_from: int | None = None,
    slot_to: int | None = None,
    demo: bool = False,
    late: bool = False,
    heard: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """A snapshot document, normalised. A reading is ok unless it names a failure (or
    says `ok=False`); a failed reading keeps no meters and always has a `failure`.
    With a `slot` (and `period_s`), a scheduled snapshot: its `_id` names the slot.
    Simulated demo history carries `demo: true` (`services.demo_history`); a reading
    from a reply that came after its request's timeout `late: true`."""
    if not relay:
        raise InvalidInput("a meter snapshot needs a relay")
    good = (failure is None and failure_check is None) if ok is None else bool(ok)
    doc: dict[str, Any] = ({"demo": True} if demo else {}) | {
        "relay": str(relay),
        "cabinet_id": str(cabinet_id),
        "cabinet": str(cabinet),
        "location_id": str(location_id),
        "location": str(location),
        "at": instant(at),
        "denomination": float(denomination),
        "ok": good,
        "failure": None if good else str(failure or failure_check or "unreadable")[:200],
        "failure_check": None if good else (str(failure_check) if failure_check else None),
        "meters": {str(k).upper(): int(v) for k, v in (meters or {}).items() if v is not None}
        if good
        else {},
        "sizes": {str(k).upper(): int(v) for k, v in (sizes or {}).items()} if good else {},
    }
    if late and good:
        doc["late"] = True
    if heard and not good:  # a reply the money rules refused: its meters, for the next holder
        doc["heard"] = {str(k).upper(): int(v) for k, v in heard.items() if v is not None}
    if slot is not None:
        doc |= _slot_fields(doc["cabinet_id"], slot, period_s, slot_from, slot_to)
    return doc


def _slot_fields(
    cabinet_id: str, slot: int, period_s: float | None, slot_from: int | None, slot_to: int | None
) -> dict[str, Any]:
    if not cabinet_id or period_s is None or period_s <= 0:
        raise InvalidInput("a scheduled snapshot needs its cabinet id and its period")
    fields: dict[str, Any] = {
        "_id": slot_id(cabinet_id, period_s, int(slot)),
        "slot": int(slot),
        "period_s": float(period_s),
    }
    if slot_to is not None and int(slot_to) != int(slot):
        if int(slot_to) < int(slot) or (slot_from is not None and int(slot_from) != int(slot)):
            raise InvalidInput("a range of slots runs from its slot to a later one")
        fields |= {"slot_from": int(slot), "slot_to": int(slot_to)}
    return fields


def _slot_key(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"cabinet_id": doc["cabinet_id"], "period_s": float(doc["period_s"])}


def _bounded_chunk(chunk_rows: int) -> int:
    if chunk_rows < 1:
        raise InvalidInput("a chunk holds at least one row")
    return min(int(chunk_rows), MAX_CHUNK_ROWS)


def snapshot_frame(docs: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Snapshot documents as an analytics snapshot frame, sorted by time."""
    rows = []
    for doc in docs:
        row = {c: doc.get(c, "") for c in SNAPSHOT_COLUMNS}
        row.update(doc.get("meters") or {})
        row.update({f"{code}_size": size for code, size in (doc.get("sizes") or {}).items()})
        rows.append(row)
    if not rows:
        return _empty(SNAPSHOT_COLUMNS, {"denomination": "float64"})
    frame = pd.DataFrame(rows)
    frame["at"] = pd.to_datetime(frame["at"], utc=True).dt.as_unit("ns")
    frame["denomination"] = pd.to_numeric(frame["denomination"]).astype("float64")
    extra = sorted(c for c in frame.columns if c not in SNAPSHOT_COLUMNS)
    codes = [c for c in extra if not c.endswith("_size")]
    sizes = [c for c in extra if c.endswith("_size")]
    frame = frame[SNAPSHOT_COLUMNS + codes + sizes]
    return frame.sort_values("at", kind="stable").reset_index(drop=True)


def _empty(columns: Sequence[str], dtypes: Mapping[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "str")) for c in columns})
    if "at" in frame.columns:
        frame["at"] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame


class MeterStore(RollupStore):
    """Meter snapshots (see the module docstring) and, inherited, their rollups."""

    def __init__(self, db: Database[Any]) -> None:
        super().__init__(db)
        self._snapshots = db[SNAPSHOTS]
        self._last = db[LAST_READINGS]
        self._last_slots = db[LAST_SLOTS]
        self._failures = db[FAILURES]
        self._failures.create_index([("at", ASCENDING)])
        self._failures.create_index([("relay", ASCENDING), ("at", ASCENDING)])
        self._failures.create_index([("cabinet_id", ASCENDING), ("at", ASCENDING)])
        self._snapshots.create_index([("relay", ASCENDING), ("at", ASCENDING)])
        self._snapshots.create_index([("cabinet_id", ASCENDING), ("at", ASCENDING)])
        self._snapshots.create_index([("at", ASCENDING)])

    # --- snapshots -------------------------------------------------------------------

    def insert_snapshot(self, relay: str, at: datetime, **fields: Any) -> dict[str, Any]:
        """Store one reading attempt (fields as `snapshot_document`); returns the document."""
        doc = snapshot_document(relay, at, **fields)
        self.insert_snapshots([doc])
        return doc

    def insert_snapshots(self, docs: Iterable[Mapping[str, Any]]) -> int:
        """Store reading attempts (each normalised by `snapshot_document`), in inserts of
        at most MAX_BATCH; returns how many were stored (a slot already stored is not)."""
        return len(self.store_snapshots(docs))

    def store_snapshots(self, docs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Like `insert_snapshots`, returning the documents stored now (not those whose
        slot was already stored). Safe to repeat after a failure part-way."""
        normalised = (snapshot_document(**{k: v for k, v in d.items() if k != "_id"}) for d in docs)
        stored: list[dict[str, Any]] = []
        for batch in batches(normalised, MAX_BATCH):
            stored += self._insert(batch)
        return stored

    def _insert(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        stored = [batch[i] for i in insert_new(self._snapshots, batch)]
        already = {id(doc) for doc in stored}
        stored += [d for d in batch if id(d) not in already and self._replaces_missed(d)]
        # Every failed one is copied (again, when a slot was stored before: a copy the
        # earlier writer could not make is made now; one it made stays single).
        insert_new(
            self._failures,
            [
                {c: doc.get(c) for c in ("_id", *FAILURE_COLUMNS, *ID_COLUMNS) if c in doc}
                for doc in batch
                if not doc["ok"]
            ],
        )
        newest: dict[str, dict[str, float]] = {}
        last_slots: dict[str, dict[str, Any]] = {}
        for doc in batch:
            if doc["failure_check"] != MISSED:
                seen = newest.setdefault(doc["relay"], {})
                epoch = doc["at"].timestamp()
                for field in ("at", "ok_at") if doc["ok"] else ("at",):
                    seen[field] = max(seen.get(field, epoch), epoch)
            if "slot" in doc:
                key = f"{doc['cabinet_id']}:{int(doc['period_s'])}"
                slot = int(doc.get("slot_to", doc["slot"]))
                mark = last_slots.setdefault(key, {**_slot_key(doc), "slot": slot})
                mark["slot"] = max(mark["slot"], slot)
        for relay, times in newest.items():
            self._last.update_one({"_id": relay}, {"$max": times}, upsert=True)
        for key, mark in last_slots.items():
            slot = mark.pop("slot")
            self._last_slots.update_one(
                {"_id": key}, {"$max": {"slot": slot}, "$set": mark}, upsert=True
            )
        return stored

    def _replaces_missed(self, doc: dict[str, Any]) -> bool:
        """A good reading whose slot was recorded `missed` (by another holder, in a
        split brain) or `timeout` (its reply came late) takes that record's place; True
        if it did."""
        if not doc["ok"] or "slot" not in doc or "slot_to" in doc:
            return False
        replaceable = {"$in": [MISSED, LATE_REPLACEABLE]}
        replaced = self._snapshots.replace_one(
            {"_id": doc["_id"], "failure_check": replaceable}, doc
        )
        if not replaced.matched_count:
            return False
        self._failures.delete_one({"_id": doc["_id"]})
        return True

    def last_slots(self, period_s: float) -> dict[str, int]:
        """cabinet_id -> the newest slot recorded for it with period `period_s` (one find)."""
        found: dict[str, int] = {}
        for doc in self._last_slots.find({"period_s": float(period_s)}):
            found[str(doc["cabinet_id"])] = int(doc["slot"])
        return found

    def relays_read(self) -> set[str]:
        """The relays with a good reading stored (one find)."""
        docs = self._last.find({"ok_at": {"$gt": 0}}, {"_id": 1})
        return {str(d["_id"]) for d in docs.batch_size(READ_ALL_BATCH)}

    def cabinets_slotted(self) -> set[str]:
        """The cabinets with a scheduled slot recorded, whatever the period (one find)."""
        docs = self._last_slots.find({}, {"cabinet_id": 1}).batch_size(READ_ALL_BATCH)
        return {str(d["cabinet_id"]) for d in docs}

    def scheduled_snapshots(
        self, start: datetime, end: datetime, period_s: float | None = None
    ) -> list[dict[str, Any]]:
        """The scheduled snapshots taken (or due, for `missed` ones) in `[start, end)`,
        without their meters: what `smib_core.slots.audit_slots` checks."""
        query: dict[str, Any] = {"at": period_filter(start, end), "slot": {"$exists": True}}
        if period_s is not None:
            query["period_s"] = float(period_s)
        fields = ("cabinet_id", "relay", "at", "ok", "failure", "failure_check", "slot", "period_s")
        projection = {c: 1 for c in (*fields, "slot_from", "slot_to")}
        return list(self._snapshots.find(query, projection))

    def _query(
        self,
        start: datetime,
        end: datetime,
        ok: bool | None,
        relays: Iterable[str] | None,
        cabinet_ids: Iterable[str] | None,
        location_ids: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        query: dict[str, Any] = {"at": period_filter(start, end)}
        match_any("relay", relays, query)
        match_any("cabinet_id", cabinet_ids, query)
        match_any("location_id", location_ids, query)
        if ok is not None:
            query["ok"] = ok
        return query

    def snapshots(
        self,
        start: datetime,
        end: datetime,
        relays: Iterable[str] | None = None,
        cabinet_ids: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Good readings taken in `[start, end)` as a snapshot frame (time order)."""
        query = self._query(start, end, True, relays, cabinet_ids)
        return snapshot_frame(self._snapshots.find(query).batch_size(DEFAULT_CHUNK_ROWS))

    def failed_readings(
        self,
        start: datetime,
        end: datetime,
        relays: Iterable[str] | None = None,
        cabinet_ids: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Failed reading attempts in `[start, end)`: relay, cabinet, location, at,
        failure, failure_check (time order)."""
        query = self._query(start, end, None, relays, cabinet_ids)
        projection = {c: 1 for c in FAILURE_COLUMNS}
        rows = [
            {c: d.get(c) for c in FAILURE_COLUMNS} for d in self._failures.find(query, projection)
        ]
        if not rows:
            return _empty(FAILURE_COLUMNS, {})
        frame = pd.DataFrame(rows, columns=FAILURE_COLUMNS)
        frame["at"] = pd.to_datetime(frame["at"], utc=True).dt.as_unit("ns")
        return frame.sort_values("at", kind="stable").reset_index(drop=True)

    def previous_snapshots(self, cabinet_id: str, before: datetime, count: int = 1) -> pd.DataFrame:
        """The cabinet's last `count` good readings strictly before `before` (time order):
        the baseline movement into a time range is measured from."""
        return snapshot_frame(self.previous_snapshot_docs(cabinet_id, before, count))

    def previous_snapshot_docs(
        self, cabinet_id: str, before: datetime, count: int = 1
    ) -> list[dict[str, Any]]:
        """`previous_snapshots` as documents (newest last)."""
        query = {"cabinet_id": cabinet_id, "at": {"$lt": instant(before)}, "ok": True}
        docs = self._snapshots.find(query).sort("at", DESCENDING).limit(max(1, count))
        return list(docs)[::-1]

    def refused_replies(self, cabinet_id: str, count: int) -> list[dict[str, Any]]:
        """The cabinet's last `count` replies the money rules refused (stale, suspect,
        clock behind) with the meters they carried (`at`, `heard`; oldest first)."""
        query = {"cabinet_id": cabinet_id, "ok": False, "failure_check": {"$in": REFUSED}}
        fields = {"at": 1, "heard": 1}
        docs = self._snapshots.find(query, fields).sort("at", DESCENDING).limit(max(1, count))
        return [d for d in list(docs)[::-1] if d.get("heard")]

    def snapshot_docs(
        self, cabinet_id: str, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """The cabinet's good readings taken in `[start, end)` as documents (time order)."""
        query = self._query(start, end, True, None, [cabinet_id])
        return list(self._snapshots.find(query).sort("at", ASCENDING))

    def iter_snapshot_chunks(
        self,
        start: datetime,
        end: datetime,
        filters: Mapping[str, Iterable[str] | None] | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        *,
        include_failed: bool = False,
    ) -> Iterator[pd.DataFrame]:
        """Readings of `[start, end)` in time order, as snapshot frames of at most
        `chunk_rows` rows (bounded memory, for exports). `filters` may name `relays`,
        `cabinet_ids`, `location_ids`. With `include_failed`, failed attempts come too
        and the frames carry `ok, failure, failure_check`."""
        size = _bounded_chunk(chunk_rows)
        chosen = dict(filters or {})
        unknown = set(chosen) - {"relays", "cabinet_ids", "location_ids"}
        if unknown:
            raise InvalidInput(f"unknown snapshot filters: {', '.join(sorted(unknown))}")
        query = self._query(
            start,
            end,
            None if include_failed else True,
            chosen.get("relays"),
            chosen.get("cabinet_ids"),
            chosen.get("location_ids"),
        )
        cursor = self._snapshots.find(query).sort("at", ASCENDING).batch_size(size)
        for batch in batches(cursor, size):
            yield self._chunk(batch, include_failed)

    @staticmethod
    def _chunk(docs: list[Mapping[str, Any]], include_failed: bool) -> pd.DataFrame:
        frame = snapshot_frame(docs)
        if include_failed:
            for column in ("ok", "failure", "failure_check"):
                frame[column] = [d.get(column) for d in sorted(docs, key=lambda d: d["at"])]
        return frame

    def last_reading_times(self, ok_only: bool = True) -> dict[str, datetime]:
        """relay -> when its newest good reading (any attempt with `ok_only=False`) was taken."""
        field = "ok_at" if ok_only else "at"
        found: dict[str, datetime] = {}
        for doc in self._last.find({field: {"$gt": 0}}).batch_size(READ_ALL_BATCH):
            found[str(doc["_id"])] = datetime.fromtimestamp(float(doc[field]), UTC)
        return found
