"""Exports round-trip: snapshots and rollups seeded from the simulator's meter model into
the embedded database, written as CSV, Excel and Parquet, read back with pandas and
compared value by value; chunking bounds the rows in memory; jobs are audited."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from smib_core.auth import Principal, Role
from smib_core.errors import PermissionDenied
from smib_core.services.export import (
    ExportRequest,
    columns,
    estimate_rows,
    export_chunks,
    preview,
)
from smib_core.services.export_files import write_export
from smib_core.services.export_jobs import ExportContext, ExportJobs, run_export
from smib_core.services.meter_report import Scope
from smib_core.services.meter_seed import SeedCabinet, seed_history
from smib_core.store.audit import AuditTrail
from smib_core.store.meters import MeterStore

pytestmark = pytest.mark.integration

START = datetime(2024, 5, 13, tzinfo=UTC)
END = datetime(2024, 5, 15, tzinfo=UTC)
STEPS = 500  # readings per cabinet, every 5 minutes: 41 h 35 min
CABINETS = [
    SeedCabinet("c1", "Buffalo 1", "main", "Main floor", "ab0000000001", seed=1, denomination=0.01),
    SeedCabinet("c2", "Dragon 7", "vip", "VIP room", "ab0000000002", seed=2, denomination=0.25),
]
ANALYST = Principal("ann", Role.ANALYST)


@pytest.fixture(scope="module")
def seeded_db(embedded_mongo: Any) -> Iterator[Any]:
    """One database for the module: seeding takes a second, the tests only read."""
    from pymongo import MongoClient

    client: MongoClient[Any] = MongoClient(embedded_mongo.uri, tz_aware=True)
    db = client[f"t_{uuid.uuid4().hex[:12]}"]
    meters = MeterStore(db)
    seed_history(meters, CABINETS, START, STEPS)
    meters.insert_snapshot(
        "ab0000000001",
        datetime(2024, 5, 13, 0, 2, tzinfo=UTC),
        cabinet_id="c1",
        cabinet="Buffalo 1",
        location_id="main",
        location="Main floor",
        failure="crc mismatch",
        failure_check="crc",
    )
    yield db
    client.close()


@pytest.fixture
def store(seeded_db: Any) -> MeterStore:
    return MeterStore(seeded_db)


@pytest.fixture
def audit(seeded_db: Any) -> AuditTrail:
    return AuditTrail(seeded_db)


def write(store: MeterStore, request: ExportRequest, path: Path, chunk_rows: int = 300) -> int:
    chunks = export_chunks(store, request, cabinets=2, chunk_rows=chunk_rows)
    return write_export(chunks, request.granularity, request.format, path)


def read_back(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(path)
    if fmt == "xlsx":
        return pd.read_excel(path, sheet_name="Meters")
    return pd.read_parquet(path)


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
def test_raw_snapshots_round_trip(store: MeterStore, tmp_path: Path, fmt: str) -> None:
    request = ExportRequest(pd.Timestamp(START), pd.Timestamp(END), "raw", fmt)  # type: ignore[arg-type]
    path = tmp_path / request.file_name
    assert write(store, request, path) == 2 * STEPS + 1
    back = read_back(path, fmt)
    assert list(back.columns) == columns("raw")
    expected = store.snapshots(START, END)
    good = back[back["Reading OK"].astype(str).str.lower() == "true"].reset_index(drop=True)
    assert len(good) == len(expected) == 2 * STEPS
    times = pd.to_datetime(good["Time (UTC)"]).dt.tz_localize("UTC")
    key = ["cabinet", "at"]
    want = expected.sort_values(key).reset_index(drop=True)
    got = good.assign(cabinet=good["Cabinet"], at=times).sort_values(key).reset_index(drop=True)
    assert got["at"].tolist() == want["at"].tolist()
    assert got["Coin in (credits)"].astype("int64").tolist() == want["0000"].tolist()
    assert got["Drop (credits)"].astype("int64").tolist() == want["0024"].tolist()
    money = (want["0000"] * want["denomination"]).round(2)
    assert got["Coin in ($)"].tolist() == pytest.approx(money.tolist())
    failed = back[back["Reading OK"].astype(str).str.lower() == "false"]
    assert failed["Failure"].tolist() == ["crc mismatch"]
    assert failed["Coin in (credits)"].isna().all()


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
@pytest.mark.parametrize("granularity", ["hour", "day"])
def test_movement_round_trip(store: MeterStore, tmp_path: Path, fmt: str, granularity: str) -> None:
    request = ExportRequest(pd.Timestamp(START), pd.Timestamp(END), granularity, fmt)  # type: ignore[arg-type]
    path = tmp_path / request.file_name
    rows = write(store, request, path, chunk_rows=25)
    back = read_back(path, fmt)
    stored = store.rollups("h" if granularity == "hour" else "D", START, END)
    assert rows == len(back) == len(stored)
    assert list(back.columns) == columns(granularity)  # type: ignore[arg-type]
    by_cabinet = back.groupby("Cabinet")["Coin in ($)"].sum()
    expected = stored.groupby("cabinet")["coin_in_money"].sum()
    assert by_cabinet.to_dict() == pytest.approx(expected.round(2).to_dict(), abs=0.05)
    net = stored["drop_money"] - stored["cancelled_money"] - stored["jackpot_money"]
    assert back["Net win ($)"].sum() == pytest.approx(net.sum(), abs=0.05)
    meter = stored["coin_in_money"] - stored["won_credits_money"]
    assert back["Meter win ($)"].sum() == pytest.approx(meter.sum(), abs=0.05)
    left = back["Net win ($)"] - back["Meter win ($)"]
    assert back["Credits left on the machines ($)"].tolist() == pytest.approx(
        left.tolist(), abs=0.011
    )
    assert back["Games played"].sum() == stored["games_played"].sum()
    first = back.iloc[0]
    hold = first["Net win ($)"] / first["Coin in ($)"] * 100
    assert first["Hold (%)"] == pytest.approx(hold, abs=0.01)
    if granularity == "day":
        assert sorted({str(d)[:10] for d in back["Gaming day"]}) == ["2024-05-13", "2024-05-14"]


def test_chunks_bound_the_rows_in_memory(store: MeterStore) -> None:
    request = ExportRequest(pd.Timestamp(START), pd.Timestamp(END), "raw", "csv")
    sizes = [len(c) for c in export_chunks(store, request, chunk_rows=100)]
    assert sizes == [100] * 10 + [1]  # 1,001 readings: ten full chunks and the rest
    hourly = ExportRequest(pd.Timestamp(START), pd.Timestamp(END), "hour", "csv")
    sizes = [len(c) for c in export_chunks(store, hourly, cabinets=2, chunk_rows=10)]
    assert max(sizes) <= 10 and sum(sizes) == len(store.rollups("h", START, END))


def test_filters_preview_and_estimate(store: MeterStore) -> None:
    vip = ExportRequest(pd.Timestamp(START), pd.Timestamp(END), "raw", "csv", Scope.of("vip"))
    rows = pd.concat(list(export_chunks(store, vip, chunk_rows=400)))
    assert set(rows["Cabinet"]) == {"Dragon 7"} and len(rows) == STEPS
    first = preview(store, vip, rows=5)
    assert len(first) == 5 and list(first.columns) == columns("raw")
    empty = ExportRequest(
        pd.Timestamp("2020-01-01", tz="UTC"), pd.Timestamp("2020-01-02", tz="UTC")
    )
    assert preview(store, empty).empty
    assert list(preview(store, empty).columns) == columns("day")
    day = ExportRequest(pd.Timestamp(START), pd.Timestamp(END), "raw")
    assert estimate_rows(day, cabinets=2) == 2 * 2 * 288


def test_a_job_exports_in_the_background_and_is_audited(
    store: MeterStore, audit: AuditTrail
) -> None:
    context = ExportContext(store, audit, ANALYST, cabinets=2, names={"vip": "VIP room"})
    request = ExportRequest(
        pd.Timestamp(START), pd.Timestamp(END), "day", "parquet", Scope.of("vip")
    )
    job = ExportJobs().start(context, request)
    assert job.wait(30) and job.ok, job.error
    assert job.fraction == 1.0 and job.rows == 2 and job.size > 0
    assert len(pd.read_parquet(job.path)) == 2
    record = audit.query(kind="export").iloc[0]
    assert record["actor"] == "ann" and record["outcome"] == "ok"
    assert '"rows": 2' in record["detail"] and "VIP room" in record["detail"]
    assert '"granularity": "day"' in record["detail"] and '"format": "parquet"' in record["detail"]
    shutil.rmtree(job.path.parent)


def test_a_cancelled_job_leaves_no_file(
    store: MeterStore, audit: AuditTrail, tmp_path: Path
) -> None:
    context = ExportContext(store, audit, ANALYST, cabinets=2, chunk_rows=50)
    request = ExportRequest(pd.Timestamp(START), pd.Timestamp(END), "raw", "xlsx")
    path = tmp_path / "x.xlsx"
    with pytest.raises(Exception, match="cancelled"):
        run_export(context, request, path, should_stop=lambda: True)
    assert not path.exists()
    assert audit.query(kind="export").iloc[0]["outcome"] == "failed"


def test_only_roles_that_may_export_can(
    store: MeterStore, audit: AuditTrail, tmp_path: Path
) -> None:
    manager = ExportContext(store, audit, Principal("max", Role.MANAGER))
    request = ExportRequest(pd.Timestamp(START), pd.Timestamp(END))
    with pytest.raises(PermissionDenied):
        ExportJobs().start(manager, request)
    with pytest.raises(PermissionDenied):
        run_export(manager, request, tmp_path / "no.csv")
    assert not (tmp_path / "no.csv").exists()
    refused = audit.query(kind="export", person="max")
    assert refused["outcome"].tolist() == ["refused", "refused"]
