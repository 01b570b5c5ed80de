"""Meter history: one snapshot per reading attempt, and hourly/daily rollups of it.

Contract (the collector writes, dashboards and exports read):

- `meter_snapshots`: one document per reading attempt, failed ones included so gaps
  are visible: `{relay, cabinet_id, cabinet, location_id, location, at, denomination,
  ok, failure, failure_check, meters: {code: value}, sizes: {code: size byte}}`.
  `meters` holds only the meters the machine supports; a failed reading has none and
  says why (`failure`, and `failure_check`: one of `FAILURE_CHECKS`).
  Indexes: (relay, at), (cabinet_id, at), (at).
- `rollups_hourly`, `rollups_daily`: one document per (cabinet_id, bucket), `_id` =
  `"{cabinet_id}|{bucket as UTC ISO}"`, holding the columns of an analytics rollup frame
  (`smib_core.analytics.rollups`) plus `cabinet_id`, `location_id`. Rows are written
  with `replace_one(upsert=True)`: a bucket's row is always recomputed whole, so
  writing it twice changes nothing. Indexes: (bucket), (cabinet_id, bucket),
  (location_id, bucket).
- `rollups_location_hourly`: one document per (location_id, hour bucket), `_id` =
  `"{location_id}|{bucket as UTC ISO}"`: `{location_id, bucket, coin_in_money,
  cabinets}`, the coin in ($) of the location's hourly rollup rows of that hour summed,
  and how many rows (cabinets) there were. Small enough for the month-long hour-of-day
  heatmap of a large fleet (the hourly rollups are 24 x cabinets rows a day). Written
  whole with `replace_one(upsert=True)` (an hour left without rows is deleted),
  recomputed from the hourly rollups (the collector,
  `services.meter_rollups.refresh_location_hours`; the seeds, with
  `location_hourly_frame`). Indexes: (bucket), (location_id, bucket).
- `rollups_daily_digest`: one document per gaming day, `_id` = the bucket as UTC ISO:
  `{bucket, cabinets, rows}`, `rows` the day's `rollups_daily` rows of every cabinet
  (the rollup columns plus `cabinet_id`, `location_id`), `cabinets` how many. A month
  of dashboard is 30 documents to read, where the daily rollups of 500 cabinets are
  15,000. Written whole with `replace_one(upsert=True)` (a day left without rows is
  deleted), recomputed from the daily rollups (the collector,
  `services.meter_rollups.refresh_daily_digests`; the seeds). Index: (bucket).
- `meter_last_readings`: per relay, the epoch seconds of its newest reading attempt
  and newest good reading (`$max`), so "when did we last hear it" needs no scan.

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
from typing import Any, Literal

import pandas as pd
from pymongo import ASCENDING, DESCENDING, DeleteOne, ReplaceOne
from pymongo.database import Database

from smib_core.analytics.movement import FLAGS
from smib_core.analytics.rollups import KEY, ROLLUP_COLUMNS
from smib_core.errors import InvalidInput
from smib_core.store.documents import as_utc, batches

SNAPSHOTS = "meter_snapshots"
LAST_READINGS = "meter_last_readings"
ROLLUP_COLLECTIONS: dict[str, str] = {"h": "rollups_hourly", "D": "rollups_daily"}
LOCATION_HOURLY = "rollups_location_hourly"
LOCATION_HOURLY_COLUMNS = ["location_id", "bucket", "coin_in_money", "cabinets"]
DAILY_DIGEST = "rollups_daily_digest"
# Failed attempts are also copied here, so the dashboard's data-quality panel reads the
# few failures of a period instead of scanning every snapshot of it.
FAILURES = "meter_failures"
FAILURE_CHECKS = ("crc", "length", "size", "bcd", "hex", "command", "device_error", "timeout")
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
ID_COLUMNS = ["cabinet_id", "location_id"]
_TEXT_COLUMNS = ("cabinet", "relay", "location", *ID_COLUMNS)
_NUMBER_COLUMNS = tuple(
    c for c in ROLLUP_COLUMNS if c not in (*_TEXT_COLUMNS, "bucket", "start", "end")
)
MAX_BATCH = 500
DEFAULT_CHUNK_ROWS = 5_000
MAX_CHUNK_ROWS = 50_000
MAX_DIGEST_BATCH = 20  # digest documents per bulk write (each holds a day of the fleet)
DIGEST_CHUNK_DAYS = 8

Freq = Literal["h", "D"]


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
) -> dict[str, Any]:
    """A snapshot document, normalised. A reading is ok unless it names a failure (or
    says `ok=False`); a failed reading keeps no meters and always has a `failure`."""
    if not relay:
        raise InvalidInput("a meter snapshot needs a relay")
    good = (failure is None and failure_check is None) if ok is None else bool(ok)
    return {
        "relay": str(relay),
        "cabinet_id": str(cabinet_id),
        "cabinet": str(cabinet),
        "location_id": str(location_id),
        "location": str(location),
        "at": _instant(at),
        "denomination": float(denomination),
        "ok": good,
        "failure": None if good else str(failure or failure_check or "unreadable")[:200],
        "failure_check": None if good else (str(failure_check) if failure_check else None),
        "meters": {str(k).upper(): int(v) for k, v in (meters or {}).items() if v is not None}
        if good
        else {},
        "sizes": {str(k).upper(): int(v) for k, v in (sizes or {}).items()} if good else {},
    }


def _instant(value: datetime) -> datetime:
    """A plain aware UTC datetime (pandas Timestamps too: the driver stores milliseconds)."""
    if isinstance(value, pd.Timestamp):
        value = value.floor("us").to_pydatetime()
    return as_utc(value)


def _time_filter(start: datetime, end: datetime) -> dict[str, Any]:
    if _instant(end) <= _instant(start):
        raise InvalidInput("a time range must end after it starts")
    return {"$gte": _instant(start), "$lt": _instant(end)}


def _in(field: str, values: Iterable[str] | None, query: dict[str, Any]) -> None:
    """Filter on the scalar `field` being one of `values`.

    One value is an equality: nx-27017 answers `$in` with a time range by scanning the
    whole collection (1.8 s against 0.2 s on 50,000 snapshots), and the collector asks
    for one cabinet on every reading.
    """
    if values is None:
        return
    wanted = [str(v) for v in values]
    query[field] = wanted[0] if len(wanted) == 1 else {"$in": wanted}


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


def _plain(value: Any) -> Any:
    """A frame cell as a value BSON can store (numpy scalars, Timestamps, NaN/NaT)."""
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    if isinstance(value, datetime):
        return _instant(value)
    return value.item() if hasattr(value, "item") else value


def rollup_id(cabinet_id: str, bucket: datetime) -> str:
    return f"{cabinet_id}|{as_utc(bucket).isoformat()}"


def location_hourly_frame(hourly: pd.DataFrame) -> pd.DataFrame:
    """Per (location_id, bucket) of hourly rollup rows (with `location_id`): the coin in
    ($) summed and the number of rows (cabinets); LOCATION_HOURLY_COLUMNS."""
    if hourly.empty:
        return location_hourly_types(pd.DataFrame(columns=LOCATION_HOURLY_COLUMNS))
    keyed = hourly.assign(location_id=hourly["location_id"].fillna("").astype("str"))
    frame = keyed.groupby(["location_id", "bucket"], as_index=False, sort=True).agg(
        coin_in_money=("coin_in_money", "sum"), cabinets=("coin_in_money", "size")
    )
    return location_hourly_types(frame)


def location_hourly_types(frame: pd.DataFrame, tz: str = "UTC") -> pd.DataFrame:
    """A location-hourly frame with its dtypes (bucket in `tz`), empty too."""
    frame = frame.reindex(columns=LOCATION_HOURLY_COLUMNS)
    frame["location_id"] = frame["location_id"].fillna("").astype("str")
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True).dt.tz_convert(tz).dt.as_unit("ns")
    frame["coin_in_money"] = pd.to_numeric(frame["coin_in_money"]).fillna(0).astype("float64")
    frame["cabinets"] = pd.to_numeric(frame["cabinets"]).fillna(0).astype("int64")
    return frame


class MeterStore:
    """Meter snapshots and their rollups (see the module docstring)."""

    def __init__(self, db: Database[Any]) -> None:
        self._snapshots = db[SNAPSHOTS]
        self._last = db[LAST_READINGS]
        self._rollups = {freq: db[name] for freq, name in ROLLUP_COLLECTIONS.items()}
        self._location_hourly = db[LOCATION_HOURLY]
        self._location_hourly.create_index([("bucket", ASCENDING)])
        self._location_hourly.create_index([("location_id", ASCENDING), ("bucket", ASCENDING)])
        self._daily_digest = db[DAILY_DIGEST]
        self._daily_digest.create_index([("bucket", ASCENDING)])
        self._failures = db[FAILURES]
        self._failures.create_index([("at", ASCENDING)])
        self._failures.create_index([("relay", ASCENDING), ("at", ASCENDING)])
        self._failures.create_index([("cabinet_id", ASCENDING), ("at", ASCENDING)])
        self._snapshots.create_index([("relay", ASCENDING), ("at", ASCENDING)])
        self._snapshots.create_index([("cabinet_id", ASCENDING), ("at", ASCENDING)])
        self._snapshots.create_index([("at", ASCENDING)])
        for collection in self._rollups.values():
            collection.create_index([("bucket", ASCENDING)])
            collection.create_index([("cabinet_id", ASCENDING), ("bucket", ASCENDING)])
            collection.create_index([("location_id", ASCENDING), ("bucket", ASCENDING)])

    # --- snapshots -------------------------------------------------------------------

    def insert_snapshot(self, relay: str, at: datetime, **fields: Any) -> dict[str, Any]:
        """Store one reading attempt (fields as `snapshot_document`); returns the document."""
        doc = snapshot_document(relay, at, **fields)
        self.insert_snapshots([doc])
        return doc

    def insert_snapshots(self, docs: Iterable[Mapping[str, Any]]) -> int:
        """Store reading attempts (each normalised by `snapshot_document`), in inserts of
        at most MAX_BATCH; returns how many were stored."""
        normalised = (snapshot_document(**{k: v for k, v in d.items() if k != "_id"}) for d in docs)
        return sum(self._insert(batch) for batch in batches(normalised, MAX_BATCH))

    def _insert(self, batch: list[dict[str, Any]]) -> int:
        stored = len(self._snapshots.insert_many(batch, ordered=False).inserted_ids)
        failed = [
            {c: doc.get(c) for c in (*FAILURE_COLUMNS, *ID_COLUMNS)}
            for doc in batch
            if not doc["ok"]
        ]
        if failed:
            self._failures.insert_many(failed, ordered=False)
        newest: dict[str, dict[str, float]] = {}
        for doc in batch:
            seen = newest.setdefault(doc["relay"], {})
            epoch = doc["at"].timestamp()
            for field in ("at", "ok_at") if doc["ok"] else ("at",):
                seen[field] = max(seen.get(field, epoch), epoch)
        for relay, times in newest.items():
            self._last.update_one({"_id": relay}, {"$max": times}, upsert=True)
        return stored

    def _query(
        self,
        start: datetime,
        end: datetime,
        ok: bool | None,
        relays: Iterable[str] | None,
        cabinet_ids: Iterable[str] | None,
        location_ids: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        query: dict[str, Any] = {"at": _time_filter(start, end)}
        _in("relay", relays, query)
        _in("cabinet_id", cabinet_ids, query)
        _in("location_id", location_ids, query)
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
        query = {"cabinet_id": cabinet_id, "at": {"$lt": _instant(before)}, "ok": True}
        docs = self._snapshots.find(query).sort("at", DESCENDING).limit(max(1, count))
        return snapshot_frame(list(docs))

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
        for doc in self._last.find({field: {"$gt": 0}}):
            found[str(doc["_id"])] = datetime.fromtimestamp(float(doc[field]), UTC)
        return found

    # --- rollups ---------------------------------------------------------------------

    def _rollup_collection(self, freq: str) -> Any:
        if freq not in self._rollups:
            raise InvalidInput(f"rollups are hourly ('h') or daily ('D'), not {freq!r}")
        return self._rollups[freq]

    def upsert_rollups(self, freq: Freq, frame: pd.DataFrame) -> int:
        """Write whole rollup rows (a rollup frame with `cabinet_id`, and `location_id`
        if known), replacing the stored row of each (cabinet_id, bucket) (`ReplaceOne`
        upserts, in bulk writes of at most MAX_BATCH); returns how many were written."""
        collection = self._rollup_collection(freq)
        if frame.empty:
            return 0
        if "cabinet_id" not in frame.columns:
            raise InvalidInput("rollup rows need a cabinet_id column")
        columns = [*ROLLUP_COLUMNS, *ID_COLUMNS]
        writes: list[ReplaceOne[Any]] = []
        for record in frame.reindex(columns=columns).to_dict("records"):
            doc = _rollup_row(record)
            doc["_id"] = rollup_id(doc["cabinet_id"], doc["bucket"])
            writes.append(ReplaceOne({"_id": doc["_id"]}, doc, upsert=True))
        for batch in batches(writes, MAX_BATCH):
            collection.bulk_write(batch, ordered=False)
        return len(writes)

    def rollups(
        self,
        freq: Freq,
        start: datetime,
        end: datetime,
        cabinet_ids: Iterable[str] | None = None,
        location_ids: Iterable[str] | None = None,
        *,
        tz: str = "UTC",
    ) -> pd.DataFrame:
        """Rollup rows whose bucket starts in `[start, end)`, as an analytics rollup frame
        (bucket in `tz`) plus cabinet_id and location_id, sorted by cabinet, bucket."""
        query: dict[str, Any] = {"bucket": _time_filter(start, end)}
        _in("cabinet_id", cabinet_ids, query)
        _in("location_id", location_ids, query)
        docs = list(self._rollup_collection(freq).find(query).batch_size(DEFAULT_CHUNK_ROWS))
        return _rollup_frame(docs, tz)

    # --- daily digest ----------------------------------------------------------------

    def upsert_daily_digest(self, daily: pd.DataFrame, days: Iterable[datetime] = ()) -> int:
        """Write the digest of each gaming day of `daily` (daily rollup rows with
        `cabinet_id`, `location_id`: all of that day's rows) whole, replacing the stored
        one; a day of `days` without rows loses its digest. Returns how many days were
        written or removed."""
        columns = [*ROLLUP_COLUMNS, *ID_COLUMNS]
        grouped: dict[str, tuple[datetime, list[dict[str, Any]]]] = {}
        for day in days:
            grouped.setdefault(as_utc(day).isoformat(), (as_utc(day), []))
        for record in daily.reindex(columns=columns).to_dict("records"):
            row = _rollup_row(record)
            bucket = as_utc(row["bucket"])
            grouped.setdefault(bucket.isoformat(), (bucket, []))[1].append(row)
        writes: list[ReplaceOne[Any] | DeleteOne] = []
        for key, (bucket, rows) in grouped.items():
            if rows:
                doc = {"_id": key, "bucket": bucket, "cabinets": len(rows), "rows": rows}
                writes.append(ReplaceOne({"_id": key}, doc, upsert=True))
            else:
                writes.append(DeleteOne({"_id": key}))
        for batch in batches(writes, MAX_DIGEST_BATCH):
            self._daily_digest.bulk_write(batch, ordered=False)
        return len(writes)

    def daily_digest(self, start: datetime, end: datetime, *, tz: str = "UTC") -> pd.DataFrame:
        """The daily rollup rows of the gaming days in `[start, end)` that have a digest,
        in the frame `rollups("D", ...)` returns (one indexed read of a document a day)."""
        query = {"bucket": _time_filter(start, end)}
        # no projection: the embedded database serves whole documents faster
        cursor = self._daily_digest.find(query).batch_size(DIGEST_CHUNK_DAYS)
        return _rollup_frame((row for doc in cursor for row in doc.get("rows") or ()), tz)

    # --- location-hourly coin in -----------------------------------------------------

    def upsert_location_hourly(self, frame: pd.DataFrame) -> int:
        """Write whole location-hour rows (LOCATION_HOURLY_COLUMNS), replacing the stored
        row of each (location_id, bucket); a row of no cabinets removes it (an hour without
        hourly rows has no row). Returns how many were written or removed."""
        writes: list[ReplaceOne[Any] | DeleteOne] = []
        for record in location_hourly_types(frame).to_dict("records"):
            doc = {c: _plain(record[c]) for c in LOCATION_HOURLY_COLUMNS}
            doc["_id"] = rollup_id(doc["location_id"], doc["bucket"])
            if doc["cabinets"] > 0:
                writes.append(ReplaceOne({"_id": doc["_id"]}, doc, upsert=True))
            else:
                writes.append(DeleteOne({"_id": doc["_id"]}))
        for batch in batches(writes, MAX_BATCH):
            self._location_hourly.bulk_write(batch, ordered=False)
        return len(writes)

    def location_hourly(
        self,
        start: datetime,
        end: datetime,
        location_ids: Iterable[str] | None = None,
        *,
        tz: str = "UTC",
    ) -> pd.DataFrame:
        """Location-hour rows whose bucket starts in `[start, end)` (LOCATION_HOURLY_COLUMNS,
        bucket in `tz`), sorted by location_id, bucket."""
        query: dict[str, Any] = {"bucket": _time_filter(start, end)}
        _in("location_id", location_ids, query)
        projection = {c: 1 for c in LOCATION_HOURLY_COLUMNS}
        cursor = self._location_hourly.find(query, projection).batch_size(DEFAULT_CHUNK_ROWS)
        rows = [{c: d.get(c) for c in LOCATION_HOURLY_COLUMNS} for d in cursor]
        frame = location_hourly_types(pd.DataFrame(rows, columns=LOCATION_HOURLY_COLUMNS), tz)
        keys = ["location_id", "bucket"]
        return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def _rollup_row(record: Mapping[Any, Any]) -> dict[str, Any]:
    """A rollup frame record as a stored row (plain values, text ids)."""
    row = {c: _plain(record[c]) for c in (*ROLLUP_COLUMNS, *ID_COLUMNS)}
    row["cabinet_id"] = str(row["cabinet_id"])
    row["location_id"] = str(row["location_id"] or "")
    return row


def _rollup_frame(docs: Iterable[Mapping[str, Any]], tz: str) -> pd.DataFrame:
    """Stored rollup rows as an analytics rollup frame plus ids, sorted by cabinet, bucket."""
    columns = [*ROLLUP_COLUMNS, *ID_COLUMNS]
    frame = pd.DataFrame(list(docs), columns=columns)  # other keys (_id) left out
    if frame.empty:
        frame = pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    return _rollup_types(frame, tz).sort_values(KEY, kind="stable").reset_index(drop=True)


def _rollup_types(frame: pd.DataFrame, tz: str) -> pd.DataFrame:
    """Stored rollup rows with the dtypes of an analytics rollup frame (empty too)."""
    for column in _TEXT_COLUMNS:
        frame[column] = frame[column].fillna("").astype("str")
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True).dt.tz_convert(tz).dt.as_unit("ns")
    for column in ("start", "end"):
        frame[column] = pd.to_datetime(frame[column], utc=True).dt.as_unit("ns")
    for column in _NUMBER_COLUMNS:
        frame[column] = pd.to_numeric(frame[column]).fillna(0).astype("float64")
    for column in (*FLAGS, "intervals"):
        frame[column] = frame[column].astype("int64")
    return frame
