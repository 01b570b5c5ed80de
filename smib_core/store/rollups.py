"""Meter rollups: the hourly and daily movement of every cabinet, and the two smaller
collections the dashboard reads for a whole fleet.

Contract (the collector and the seeds write, dashboards and exports read):

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
  `{bucket, cabinets, frame}`, `frame` the day's `rollups_daily` rows of every cabinet
  (the rollup columns plus `cabinet_id`, `location_id`) as one Arrow IPC stream (binary;
  the database serves it as one value, not thousands), `cabinets` how many rows. A month
  of dashboard is 30 documents to read, where the daily rollups of 500 cabinets are
  15,000. Written whole (deleted and inserted: the embedded database cannot replace a
  document holding binary; a day left without rows is deleted), recomputed from the
  daily rollups (the collector, `services.meter_rollups.refresh_daily_digests`; the
  seeds). Index: (bucket).

Reads come back in the analytics rollup frame (`smib_core.analytics.rollups`, plus
`cabinet_id, location_id`), by indexed fields and a bucket range `[start, end)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import pandas as pd
import pyarrow as pa
from pymongo import ASCENDING, DeleteOne, InsertOne, ReplaceOne
from pymongo.database import Database

from smib_core.analytics.movement import FLAGS
from smib_core.analytics.rollups import KEY, ROLLUP_COLUMNS
from smib_core.errors import InvalidInput
from smib_core.store.documents import as_utc, batches, bson_value, match_any, period_filter

ROLLUP_COLLECTIONS: dict[str, str] = {"h": "rollups_hourly", "D": "rollups_daily"}
LOCATION_HOURLY = "rollups_location_hourly"
LOCATION_HOURLY_COLUMNS = ["location_id", "bucket", "coin_in_money", "cabinets"]
DAILY_DIGEST = "rollups_daily_digest"
ID_COLUMNS = ["cabinet_id", "location_id"]
_TEXT_COLUMNS = ("cabinet", "relay", "location", *ID_COLUMNS)
_NUMBER_COLUMNS = tuple(
    c for c in ROLLUP_COLUMNS if c not in (*_TEXT_COLUMNS, "bucket", "start", "end")
)
MAX_BATCH = 500
DEFAULT_CHUNK_ROWS = 5_000
MAX_CABINET_QUERIES = 10  # cabinets read one query each (see `rollups`)
MAX_DIGEST_BATCH = 20  # digest documents per bulk write (each holds a day of the fleet)
DIGEST_CHUNK_DAYS = 8

Freq = Literal["h", "D"]


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


class RollupStore:
    """Rollup rows, daily digests and location-hour rows (see the module docstring)."""

    def __init__(self, db: Database[Any]) -> None:
        self._rollups = {freq: db[name] for freq, name in ROLLUP_COLLECTIONS.items()}
        for collection in self._rollups.values():
            collection.create_index([("bucket", ASCENDING)])
            collection.create_index([("cabinet_id", ASCENDING), ("bucket", ASCENDING)])
            collection.create_index([("location_id", ASCENDING), ("bucket", ASCENDING)])
        self._location_hourly = db[LOCATION_HOURLY]
        self._location_hourly.create_index([("bucket", ASCENDING)])
        self._location_hourly.create_index([("location_id", ASCENDING), ("bucket", ASCENDING)])
        self._daily_digest = db[DAILY_DIGEST]
        self._daily_digest.create_index([("bucket", ASCENDING)])

    # --- rollup rows ---------------------------------------------------------------------

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
        (bucket in `tz`) plus cabinet_id and location_id, sorted by cabinet, bucket.

        Up to MAX_CABINET_QUERIES cabinets are read with one query each: nx-27017 answers
        `$in` with a time range by scanning the whole collection (11 s for a month among
        360,000 hourly rows, whatever the number of cabinets, against 0.8 s a cabinet by
        equality); MongoDB answers both from the (cabinet_id, bucket) index."""
        collection = self._rollup_collection(freq)
        chosen = None if cabinet_ids is None else sorted({str(c) for c in cabinet_ids})
        each = [[c] for c in chosen] if chosen and len(chosen) <= MAX_CABINET_QUERIES else [chosen]
        docs: list[Mapping[str, Any]] = []
        for cabinets in each:
            query: dict[str, Any] = {"bucket": period_filter(start, end)}
            match_any("cabinet_id", cabinets, query)
            match_any("location_id", location_ids, query)
            docs.extend(collection.find(query).batch_size(DEFAULT_CHUNK_ROWS))
        return _rollup_frame(docs, tz)

    def delete_range(self, start: datetime, end: datetime) -> int:
        """Remove every hourly and daily row, location-hour row and digest whose bucket
        starts in `[start, end)` (before a rebuild); returns how many were removed."""
        query = {"bucket": period_filter(start, end)}
        collections = [*self._rollups.values(), self._location_hourly, self._daily_digest]
        return sum(c.delete_many(query).deleted_count for c in collections)

    def delete_days(self, buckets: Iterable[datetime]) -> int:
        """Remove the daily rows and digests of these gaming-day buckets (days of another
        clock, after the time zone or start hour changed); returns how many."""
        removed = 0
        for day in {as_utc(b) for b in buckets}:  # a range each: nx-27017 refuses `$in` here
            query = {"bucket": period_filter(day, day + timedelta(seconds=1))}
            for collection in (self._rollups["D"], self._daily_digest):
                removed += collection.delete_many(query).deleted_count
        return removed

    # --- daily digest ----------------------------------------------------------------

    def upsert_daily_digest(self, daily: pd.DataFrame, days: Iterable[datetime] = ()) -> int:
        """Write the digest of each gaming day of `daily` (daily rollup rows with
        `cabinet_id`, `location_id`: all of that day's rows) whole, replacing the stored
        one; a day of `days` without rows loses its digest. Returns how many days were
        written or removed."""
        typed = _rollup_types(daily.reindex(columns=[*ROLLUP_COLUMNS, *ID_COLUMNS]), "UTC")
        grouped: dict[str, tuple[datetime, pd.DataFrame | None]] = {}
        for day in days:
            grouped[as_utc(day).isoformat()] = (as_utc(day), None)
        for bucket, rows in typed.groupby("bucket", sort=True):
            moment = as_utc(cast(pd.Timestamp, bucket).to_pydatetime())
            grouped[moment.isoformat()] = (moment, rows)
        # Deleted then inserted, not replaced: nx-27017 cannot replace a document that holds
        # binary (it sends updates through JSON). A read in between finds no digest for
        # the day and takes it from the daily rollups: the same rows.
        writes: list[DeleteOne | InsertOne[Any]] = []
        for key, (moment, day_rows) in grouped.items():
            writes.append(DeleteOne({"_id": key}))
            if day_rows is not None:
                blob = _digest_bytes(day_rows)
                doc = {"_id": key, "bucket": moment, "cabinets": len(day_rows), "frame": blob}
                writes.append(InsertOne(doc))
        for batch in batches(writes, 2 * MAX_DIGEST_BATCH):
            self._daily_digest.bulk_write(batch, ordered=True)
        return len(grouped)

    def daily_digest(self, start: datetime, end: datetime, *, tz: str = "UTC") -> pd.DataFrame:
        """The daily rollup rows of the gaming days in `[start, end)` that have a digest,
        in the frame `rollups("D", ...)` returns (one indexed read of a document a day).
        A digest without `frame` (an older layout) counts as none: the dashboard reads
        that day from the daily rollups instead."""
        query = {"bucket": period_filter(start, end)}
        cursor = self._daily_digest.find(query).batch_size(DIGEST_CHUNK_DAYS)
        tables = [pa.ipc.open_stream(doc["frame"]).read_all() for doc in cursor if "frame" in doc]
        if not tables:
            return _rollup_frame((), tz)
        frame = pa.concat_tables(tables).to_pandas()
        return _rollup_types(frame, tz).sort_values(KEY, kind="stable").reset_index(drop=True)

    # --- location-hourly coin in -----------------------------------------------------

    def upsert_location_hourly(self, frame: pd.DataFrame) -> int:
        """Write whole location-hour rows (LOCATION_HOURLY_COLUMNS), replacing the stored
        row of each (location_id, bucket); a row of no cabinets removes it (an hour without
        hourly rows has no row). Returns how many were written or removed."""
        writes: list[ReplaceOne[Any] | DeleteOne] = []
        for record in location_hourly_types(frame).to_dict("records"):
            doc = {c: bson_value(record[c]) for c in LOCATION_HOURLY_COLUMNS}
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
        query: dict[str, Any] = {"bucket": period_filter(start, end)}
        match_any("location_id", location_ids, query)
        projection = {c: 1 for c in LOCATION_HOURLY_COLUMNS}
        cursor = self._location_hourly.find(query, projection).batch_size(DEFAULT_CHUNK_ROWS)
        rows = [{c: d.get(c) for c in LOCATION_HOURLY_COLUMNS} for d in cursor]
        frame = location_hourly_types(pd.DataFrame(rows, columns=LOCATION_HOURLY_COLUMNS), tz)
        keys = ["location_id", "bucket"]
        return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def _digest_schema() -> pa.Schema:
    """The Arrow types of a digest's rows: the rollup frame's, UTC times."""
    fields: list[tuple[str, pa.DataType]] = []
    for column in (*ROLLUP_COLUMNS, *ID_COLUMNS):
        if column in _TEXT_COLUMNS:
            fields.append((column, pa.string()))
        elif column in ("bucket", "start", "end"):
            fields.append((column, pa.timestamp("ns", tz="UTC")))
        elif column in (*FLAGS, "intervals"):
            fields.append((column, pa.int64()))
        else:
            fields.append((column, pa.float64()))
    return pa.schema(fields)


_DIGEST_SCHEMA = _digest_schema()


def _digest_bytes(rows: pd.DataFrame) -> bytes:
    """A day's typed rollup rows as one Arrow IPC stream: the database serves a digest
    as one binary value instead of a value per row and column (about 12,500 a day for
    500 cabinets), which is what made reading them slow on the embedded database."""
    table = pa.Table.from_pandas(rows, schema=_DIGEST_SCHEMA, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, _DIGEST_SCHEMA) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _rollup_row(record: Mapping[Any, Any]) -> dict[str, Any]:
    """A rollup frame record as a stored row (plain values, text ids)."""
    row = {c: bson_value(record[c]) for c in (*ROLLUP_COLUMNS, *ID_COLUMNS)}
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
