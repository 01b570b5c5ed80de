"""`smib bench meters`: the dashboard and the exports on a realistic meter history.

Setup (timed and reported too): a fresh embedded database in its own data folder, and
a fleet of simulated cabinets (`services.meter_seed`: the simulator's meter model, 5-
minute readings) whose rollups are computed with the analytics functions. Inserting
is the embedded database's bottleneck (a few thousand documents a second), so not all
of the history is stored: daily rollups for every day (`days`) and their daily digests
(what the dashboard reads), hourly rollups for the dashboard window (`window`) and
their location-hourly coin in (what the heatmap of all cabinets reads), raw snapshots
for the last `raw_days` (what the exports read). The report says exactly what was
stored.

Figures, each beside a baseline from the same run:
- the dashboard for the window, all cabinets, from the daily digests
  (`build_dashboard`) vs reading the same digest documents straight from the database
  (plain `find`, no processing), and beside them the plain read of the daily rollup
  rows the digests hold (what the dashboard read before them);
  the heatmap of all cabinets (location-hourly rows) likewise, and beside it the
  heatmap from the hourly rollups (every cabinet chosen: how it was built before);
- export throughput in rows/s per format over the raw snapshots vs the raw read rate
  of the same rows (plain `find().sort("at")` iteration), with the process's RSS
  before and at its peak during each export (psutil, sampled every 10 ms).
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from smib_core.analytics.rollups import ROLLUP_COLUMNS
from smib_core.services.dashboard import build_dashboard, coin_in_heatmap
from smib_core.services.export import ExportRequest, export_chunks
from smib_core.services.export_files import write_export
from smib_core.services.meter_report import ReportPeriod, Scope, report_period
from smib_core.services.meter_seed import (
    SeedCabinet,
    machine_history,
    rollups_of,
    snapshot_documents,
)
from smib_core.store.documents import batches
from smib_core.store.meters import FAILURES, SNAPSHOTS, MeterStore
from smib_core.store.rollups import (
    DAILY_DIGEST,
    LOCATION_HOURLY,
    ROLLUP_COLLECTIONS,
    location_hourly_frame,
    rollup_id,
)

BATCH = 5_000
LOCATIONS = 10
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Plan:
    cabinets: int = 500
    days: int = 90  # daily rollups for every day
    window: int = 30  # the dashboard's period; hourly rollups for it
    raw_days: int = 2  # raw snapshots (what exports read)
    end: datetime = datetime(2024, 7, 1, tzinfo=UTC)  # midnight: whole gaming days

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


def fleet(count: int) -> list[SeedCabinet]:
    """`count` cabinets over ten locations, each with its own seeded machine."""
    cabinets = []
    for n in range(count):
        place = n % LOCATIONS
        ids = (f"cab{n:05d}", f"Cabinet {n + 1:03d}", f"loc{place:02d}", f"Floor {place + 1}")
        cabinets.append(SeedCabinet(*ids, relay=f"bb{n:010x}", seed=n))
    return cabinets


def registry_frame(cabinets: Sequence[SeedCabinet]) -> pd.DataFrame:
    """What `Registry.frame()` would give for the simulated fleet."""
    rows = [
        {
            "id": c.cabinet_id,
            "name": c.cabinet,
            "location_id": c.location_id,
            "location": c.location,
            "relay": c.relay,
            "retired": False,
        }
        for c in cabinets
    ]
    return pd.DataFrame(rows)


def _history(job: tuple[SeedCabinet, Plan]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One cabinet: (daily rollups, hourly rollups of the window, raw snapshots)."""
    cabinet, plan = job
    snapshots = machine_history(cabinet, plan.start, plan.days * 288 + 1)
    hourly, daily = rollups_of(snapshots)
    window = pd.Timestamp(plan.end - timedelta(days=plan.window))
    raw_from = pd.Timestamp(plan.end - timedelta(days=plan.raw_days))
    raw = snapshots[(snapshots["at"] >= raw_from) & (snapshots["at"] < pd.Timestamp(plan.end))]
    return daily, hourly[hourly["bucket"] >= window], raw


def _rollup_documents(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rollup rows as documents (bench seeding only: the store upserts row by row)."""
    rows = frame.reindex(columns=[*ROLLUP_COLUMNS, "cabinet_id", "location_id"])
    docs: list[dict[str, Any]] = [
        {str(k): v for k, v in d.items()} for d in rows.to_dict("records")
    ]
    for doc in docs:
        for key in ("bucket", "start", "end"):
            doc[key] = doc[key].to_pydatetime()
        doc["_id"] = rollup_id(doc["cabinet_id"], doc["bucket"])
    return docs


def _insert(collection: Any, docs: Iterable[dict[str, Any]]) -> int:
    return sum(
        len(collection.insert_many(batch, ordered=False).inserted_ids)
        for batch in batches(docs, BATCH)
    )


def seed(db: Any, plan: Plan, workers: int = 2) -> dict[str, Any]:
    """Generate the fleet's history and store it; returns counts and timings."""
    store = MeterStore(db)  # the collections' indexes, as in production
    began = time.perf_counter()
    jobs = [(cabinet, plan) for cabinet in fleet(plan.cabinets)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_history, jobs, chunksize=8))
    generated = time.perf_counter() - began
    daily = pd.concat([p[0] for p in parts], ignore_index=True)
    hourly = pd.concat([p[1] for p in parts], ignore_index=True)
    raw = pd.concat([p[2] for p in parts], ignore_index=True).sort_values("at", kind="stable")
    del parts
    began = time.perf_counter()
    snapshots = MeterStore(db).insert_snapshots(snapshot_documents(raw))  # + meter_failures
    snapshot_s = time.perf_counter() - began
    began = time.perf_counter()
    rollups = _insert(db[ROLLUP_COLLECTIONS["D"]], _rollup_documents(daily))
    rollups += _insert(db[ROLLUP_COLLECTIONS["h"]], _rollup_documents(hourly))
    rollups += store.upsert_location_hourly(location_hourly_frame(hourly))
    rollups += store.upsert_daily_digest(daily)
    rollup_s = time.perf_counter() - began
    return {
        "cabinets": plan.cabinets,
        "stored": f"daily rollups and digests for {plan.days} days, hourly rollups for the last "
        f"{plan.window} days and their coin in per location and hour, raw 5-minute "
        f"snapshots for the last {plan.raw_days} days "
        f"(all {plan.days} days simulated at 5 minutes to compute the rollups)",
        "snapshots": snapshots,
        "daily_rows": len(daily),
        "hourly_rows": len(hourly),
        "location_hourly_rows": db[LOCATION_HOURLY].estimated_document_count(),
        "daily_digest_docs": db[DAILY_DIGEST].estimated_document_count(),
        "generate_s": round(generated, 1),
        "insert_snapshots_s": round(snapshot_s, 1),
        "insert_rollups_s": round(rollup_s, 1),
        "insert_docs_per_s": round((snapshots + rollups) / max(1e-9, snapshot_s + rollup_s)),
    }


def _paired(
    baseline: Callable[[], object], action: Callable[[], object], repeat: int = 1
) -> tuple[float, float, object, object]:
    """Best times of `baseline` and `action`, run in turns (a busy machine slows both
    alike), and their last results."""
    best_base = best = float("inf")
    base_result = result = None
    for _ in range(repeat):
        began = time.perf_counter()
        base_result = baseline()
        best_base = min(best_base, time.perf_counter() - began)
        began = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - began)
    return best_base, best, base_result, result


def _plain(db: Any, collection: str, field: str, start: datetime, end: datetime) -> int:
    cursor = db[collection].find({field: {"$gte": start, "$lt": end}}).batch_size(BATCH)
    return sum(1 for _ in cursor)


def dashboard_figures(db: Any, plan: Plan) -> dict[str, Any]:
    end = pd.Timestamp(plan.end)
    start = end - pd.Timedelta(days=plan.window)
    before = start - pd.Timedelta(days=plan.window)
    period = ReportPeriod("custom", start, end, before, start, end)
    store = MeterStore(db)
    registry = registry_frame(fleet(plan.cabinets))

    def failed() -> int:
        return sum(1 for _ in db[FAILURES].find({"at": {"$gte": start, "$lt": end}}))

    def baseline() -> int:
        return _plain(db, DAILY_DIGEST, "bucket", before, end) + failed()

    def build() -> int:
        return build_dashboard(store, registry, period).kpis["cabinets"]

    baseline_s, build_s, docs, cabinets = _paired(baseline, build, repeat=3)
    rows_base_s, _, rows, _ = _paired(
        lambda: _plain(db, ROLLUP_COLLECTIONS["D"], "bucket", before, end) + failed(),
        lambda: None,
    )
    heat_base_s, heat_s, places, grid = _paired(
        lambda: _plain(db, LOCATION_HOURLY, "bucket", start, end),
        lambda: coin_in_heatmap(store, period),
    )
    every_cabinet = Scope.of(cabinet_ids=[c.cabinet_id for c in fleet(plan.cabinets)])
    hourly_base_s, hourly_s, hours, hourly_grid = _paired(
        lambda: _plain(db, ROLLUP_COLLECTIONS["h"], "bucket", start, end),
        lambda: coin_in_heatmap(store, period, every_cabinet),
    )
    three = [c.cabinet_id for c in fleet(plan.cabinets)[:3]]

    def three_rows() -> int:
        query = {"bucket": {"$gte": start, "$lt": end}}
        collection = db[ROLLUP_COLLECTIONS["h"]]
        return sum(len(list(collection.find({**query, "cabinet_id": c}))) for c in three)

    three_base_s, three_s, three_rows_read, _ = _paired(
        three_rows, lambda: coin_in_heatmap(store, period, Scope.of(cabinet_ids=three))
    )
    began = time.perf_counter()
    store.failed_readings(start.to_pydatetime(), end.to_pydatetime())
    failed_s = time.perf_counter() - began
    # A running day at 10:20, compared with yesterday to 10:20: its 10:00-10:20 part comes
    # from the readings (the raw days hold them).
    running = report_period("today", end - pd.Timedelta(hours=13, minutes=40))
    began = time.perf_counter()
    build_dashboard(store, registry, running)
    running_s = time.perf_counter() - began
    return {
        "period_days": plan.window,
        "cabinets": cabinets,
        "failed_readings_query_s": round(failed_s, 3),
        "snapshots_in_period": db[SNAPSHOTS].estimated_document_count(),
        "digest_docs_read": docs,
        "rollup_rows_read": rows,
        "build_s": round(build_s, 3),
        "running_day_build_s": round(running_s, 3),
        "baseline_read_s": round(baseline_s, 3),
        "rollup_rows_baseline_read_s": round(rows_base_s, 3),
        "heatmap_location_rows": places,
        "heatmap_s": round(heat_s, 3),
        "heatmap_baseline_read_s": round(heat_base_s, 3),
        "heatmap_hourly_rows": hours,
        "heatmap_from_hourly_s": round(hourly_s, 2),
        "heatmap_from_hourly_baseline_read_s": round(hourly_base_s, 2),
        "heatmap_same": _same_grid(grid, hourly_grid),
        "heatmap_three_cabinets_rows": three_rows_read,
        "heatmap_three_cabinets_s": round(three_s, 2),
        "heatmap_three_cabinets_baseline_read_s": round(three_base_s, 2),
    }


def _same_grid(one: object, other: object) -> bool:
    """The two heatmaps agree (to float rounding: the sums run in another order)."""
    if not isinstance(one, pd.DataFrame) or not isinstance(other, pd.DataFrame):
        return False
    return one.shape == other.shape and bool(np.allclose(one, other, rtol=1e-9, atol=1e-6))


class _PeakRss:
    """The process's RSS sampled on a thread while the block runs."""

    def __init__(self, every_s: float = 0.01) -> None:
        self._process = psutil.Process()
        self._every = every_s
        self._stop = threading.Event()
        self.before = self.peak = self._process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        gc.collect()
        self.before = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def export_figures(db: Any, plan: Plan, formats: Sequence[str]) -> dict[str, Any]:
    """Per format: the raw read rate of the snapshots, then the export of the same rows."""
    end = pd.Timestamp(plan.end)
    start = end - pd.Timedelta(days=plan.raw_days)
    store = MeterStore(db)
    folder = Path(tempfile.mkdtemp(prefix="smib-bench-export-"))
    report: dict[str, Any] = {"rows": 0, "formats": {}}
    for fmt in formats:
        request = ExportRequest(start, end, "raw", fmt)  # type: ignore[arg-type]
        path = folder / request.file_name
        began = time.perf_counter()
        report["rows"] = _plain_sorted(db, start, end)
        raw_per_s = report["rows"] / (time.perf_counter() - began)
        with _PeakRss() as rss:
            began = time.perf_counter()
            written = write_export(export_chunks(store, request), "raw", fmt, path)  # type: ignore[arg-type]
            per_s = written / (time.perf_counter() - began)
        report["formats"][fmt] = {
            "rows_per_s": round(per_s),
            "raw_read_rows_per_s": round(raw_per_s),
            "share_of_raw_pct": round(100 * per_s / raw_per_s, 1),
            "file_mib": round(path.stat().st_size / _MIB, 1),
            "rss_before_mib": round(rss.before / _MIB, 1),
            "rss_peak_mib": round(rss.peak / _MIB, 1),
        }
        path.unlink()
    folder.rmdir()
    return report


def _plain_sorted(db: Any, start: pd.Timestamp, end: pd.Timestamp) -> int:
    query = {"at": {"$gte": start.to_pydatetime(), "$lt": end.to_pydatetime()}}
    return sum(1 for _ in db[SNAPSHOTS].find(query).sort("at", 1).batch_size(BATCH))


def run(plan: Plan, formats: Sequence[str], data_dir: Path | None = None) -> dict[str, Any]:
    """Seed a fresh database, measure, and clean up: a temporary data folder (and its
    embedded server) is removed; in a given `data_dir` only the bench's database is
    dropped, and the server is stopped only if this run started it."""
    from smib_core import embedded
    from smib_core.store.db import client_for

    folder = data_dir or Path(tempfile.mkdtemp(prefix="smib-bench-meters-"))
    was_running = bool(embedded.status(folder)["database"]["running"]) if data_dir else False
    client = client_for(embedded.ensure_database(folder))
    name = f"bench_meters_{int(time.time())}"
    try:
        db = client[name]
        report = {"plan": _plan_json(plan), "seed": seed(db, plan)}
        report["dashboard"] = dashboard_figures(db, plan)
        report["export"] = export_figures(db, plan, formats)
        return report
    finally:
        client.drop_database(name)
        client.close()
        if not was_running:
            embedded.stop(folder)
        if data_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


def _plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "cabinets": plan.cabinets,
        "days": plan.days,
        "window_days": plan.window,
        "raw_days": plan.raw_days,
        "end": plan.end.isoformat(),
    }


def print_report(report: dict[str, Any]) -> None:
    seeded, board, export = report["seed"], report["dashboard"], report["export"]
    print(f"seeded {seeded['cabinets']} cabinets: {seeded['stored']}")
    print(
        f"  {seeded['snapshots']:,} snapshots, {seeded['hourly_rows']:,} hourly and "
        f"{seeded['daily_rows']:,} daily rollup rows, {seeded['location_hourly_rows']:,} "
        f"location-hour rows, {seeded['daily_digest_docs']:,} daily digests; "
        f"simulated in {seeded['generate_s']} s, "
        f"inserted in {seeded['insert_snapshots_s']} + {seeded['insert_rollups_s']} s "
        f"({seeded['insert_docs_per_s']:,} docs/s)"
    )
    print(
        f"dashboard, {board['period_days']} days x {board['cabinets']} cabinets from daily "
        f"digests: {board['build_s']} s (baseline: reading the same {board['digest_docs_read']:,} "
        f"digest docs {board['baseline_read_s']} s; the {board['rollup_rows_read']:,} daily "
        f"rollup rows they hold {board['rollup_rows_baseline_read_s']} s)"
    )
    print(
        f"  of which the failed-readings query (the only snapshot read) over the "
        f"{board['snapshots_in_period']:,} snapshots stored: {board['failed_readings_query_s']} s"
    )
    print(
        f"  heatmap from {board['heatmap_location_rows']:,} location-hour rows "
        f"{board['heatmap_s']} s (baseline read {board['heatmap_baseline_read_s']} s); from "
        f"{board['heatmap_hourly_rows']:,} hourly rollup rows {board['heatmap_from_hourly_s']} s "
        f"(baseline read {board['heatmap_from_hourly_baseline_read_s']} s); same grid: "
        f"{board['heatmap_same']}"
    )
    print(
        f"  heatmap of 3 chosen cabinets from their {board['heatmap_three_cabinets_rows']:,} "
        f"hourly rows {board['heatmap_three_cabinets_s']} s (baseline read "
        f"{board['heatmap_three_cabinets_baseline_read_s']} s)"
    )
    print(f"export of {export['rows']:,} raw snapshots, each format beside a raw read just before:")
    heads = ("format", "rows/s", "raw read/s", "of raw", "file MiB", "RSS before", "RSS peak")
    print("  {:<8} {:>9} {:>11} {:>7} {:>9} {:>11} {:>9}".format(*heads))
    for fmt, row in export["formats"].items():
        print(
            f"  {fmt:<8} {row['rows_per_s']:>9,} {row['raw_read_rows_per_s']:>11,} "
            f"{row['share_of_raw_pct']:>6}% {row['file_mib']:>9} {row['rss_before_mib']:>9} M "
            f"{row['rss_peak_mib']:>7} M"
        )
