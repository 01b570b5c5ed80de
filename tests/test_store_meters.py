"""The meter store on the embedded database: snapshots, failed readings, chunks, rollups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from smib_core.analytics import meter_movement, rollup
from smib_core.errors import InvalidInput
from smib_core.services.dashboard import build_dashboard, coin_in_heatmap
from smib_core.services.meter_report import ReportPeriod, Scope
from smib_core.services.meter_seed import SeedCabinet, seed_history
from smib_core.store import rollups as rollups_module
from smib_core.store.meters import MeterStore, snapshot_document
from smib_core.store.rollups import location_hourly_frame

pytestmark = pytest.mark.integration
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
CABINET = {"cabinet_id": "c1", "cabinet": "Buffalo 7", "location_id": "l1", "location": "Floor"}


@pytest.fixture
def store(mongo_db: Any) -> MeterStore:
    return MeterStore(mongo_db)


def _reading(store: MeterStore, minutes: float, coin_in: int, **extra: Any) -> None:
    store.insert_snapshot(
        "aa0000000001",
        T0 + timedelta(minutes=minutes),
        denomination=0.25,
        meters={"0000": coin_in, "0005": coin_in // 10, "000C": 3},
        sizes={"0000": 4, "0005": 4, "000C": 4},
        **CABINET,
        **extra,
    )


def test_snapshots_come_back_in_the_analytics_frame_format(store: MeterStore) -> None:
    _reading(store, 10, 2_000)
    _reading(store, 5, 1_000)
    store.insert_snapshot("aa0000000002", T0, failure="-1", failure_check="device_error")
    frame = store.snapshots(T0, T0 + timedelta(hours=1))
    assert list(frame.columns[:5]) == ["relay", "cabinet", "location", "at", "denomination"]
    assert list(frame["0000"]) == [1_000, 2_000], "time order, failed readings left out"
    assert list(frame["0000_size"]) == [4, 4] and set(frame["cabinet_id"]) == {"c1"}
    assert str(frame["at"].dt.tz) == "UTC" and frame["cabinet"].iloc[0] == "Buffalo 7"
    movement = meter_movement(frame)
    assert movement["coin_in"].iloc[0] == 1_000
    assert store.snapshots(T0, T0 + timedelta(hours=1), relays=["aa0000000002"]).empty
    assert len(store.snapshots(T0, T0 + timedelta(hours=1), cabinet_ids=["c1"])) == 2
    assert store.snapshots(T0 + timedelta(minutes=6), T0 + timedelta(minutes=10)).empty


def test_failed_readings_keep_their_reason(store: MeterStore) -> None:
    store.insert_snapshot("aa0000000002", T0, failure="-1", failure_check="device_error")
    store.insert_snapshot("aa0000000003", T0, failure_check="timeout", meters={"0000": 5})
    _reading(store, 1, 100)
    failed = store.failed_readings(T0, T0 + timedelta(hours=1))
    assert list(failed.columns) == [
        "relay",
        "cabinet",
        "location",
        "at",
        "failure",
        "failure_check",
    ]
    assert sorted(failed["failure_check"]) == ["device_error", "timeout"]
    assert set(failed["failure"]) == {"-1", "timeout"}
    assert store.failed_readings(T0, T0 + timedelta(hours=1), relays=["aa0000000001"]).empty
    doc = snapshot_document("aa0000000003", T0, ok=False)
    assert doc["failure"] == "unreadable" and doc["meters"] == {}


def test_chunks_are_bounded_and_cover_the_range(store: MeterStore) -> None:
    for minute in range(23):
        _reading(store, minute, 100 * minute)
    store.insert_snapshot("aa0000000002", T0, failure="bad crc", failure_check="crc")
    chunks = list(store.iter_snapshot_chunks(T0, T0 + timedelta(hours=1), chunk_rows=5))
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
    assert list(pd.concat(chunks)["0000"]) == [100 * m for m in range(23)]
    everything = list(
        store.iter_snapshot_chunks(
            T0, T0 + timedelta(hours=1), {"relays": ["aa0000000002"]}, include_failed=True
        )
    )
    assert len(everything) == 1 and list(everything[0]["failure_check"]) == ["crc"]
    with pytest.raises(InvalidInput):
        list(store.iter_snapshot_chunks(T0, T0 + timedelta(hours=1), chunk_rows=0))
    with pytest.raises(InvalidInput, match="unknown"):
        list(store.iter_snapshot_chunks(T0, T0 + timedelta(hours=1), {"colour": ["red"]}))


def test_rollups_upsert_is_idempotent_and_reads_back_the_same(store: MeterStore) -> None:
    for minute in range(0, 130, 5):
        _reading(store, minute, 100 * minute)
    snapshots = store.snapshots(T0, T0 + timedelta(hours=3))
    hourly = rollup(meter_movement(snapshots), "h").assign(cabinet_id="c1", location_id="l1")
    assert store.upsert_rollups("h", hourly) == 3
    assert store.upsert_rollups("h", hourly) == 3
    back = store.rollups("h", T0, T0 + timedelta(hours=3))
    assert len(back) == 3, "the second write replaced, it did not add"
    assert list(back["coin_in"]) == list(hourly["coin_in"])
    assert list(back["coin_in_money"]) == pytest.approx([c * 0.25 for c in hourly["coin_in"]])
    assert back["intervals"].dtype == "int64" and str(back["bucket"].dt.tz) == "UTC"
    assert list(back.columns[-2:]) == ["cabinet_id", "location_id"]
    assert len(store.rollups("h", T0, T0 + timedelta(hours=1), location_ids=["l1"])) == 1
    assert store.rollups("h", T0, T0 + timedelta(hours=3), cabinet_ids=["other"]).empty
    assert store.rollups("D", T0, T0 + timedelta(days=1)).empty
    many = pd.concat([hourly.assign(cabinet_id=f"c{n}") for n in range(210)], ignore_index=True)
    assert store.upsert_rollups("h", many) == 630, "more rows than one bulk write holds"
    assert len(store.rollups("h", T0, T0 + timedelta(hours=3))) == 630
    with pytest.raises(InvalidInput):
        store.upsert_rollups("h", hourly.drop(columns="cabinet_id"))
    with pytest.raises(InvalidInput):
        store.rollups("W", T0, T0 + timedelta(days=1))  # type: ignore[arg-type]


def test_chosen_cabinets_read_alone_or_by_in_give_the_same_rows(
    store: MeterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cabinets = [
        SeedCabinet(f"c{n}", f"Cabinet {n}", "l0", "Floor 0", f"bb{n:010x}", n, 0.25)
        for n in range(4)
    ]
    start = datetime(2024, 5, 13, tzinfo=UTC)
    seed_history(store, cabinets, start, 3 * 12 + 1)
    end = start + timedelta(hours=3)
    every = store.rollups("h", start, end)
    wanted = every[every["cabinet_id"].isin(["c1", "c3"])].reset_index(drop=True)
    one_each = store.rollups("h", start, end, cabinet_ids=["c3", "c1", "c1"])
    pd.testing.assert_frame_equal(one_each, wanted)
    monkeypatch.setattr(rollups_module, "MAX_CABINET_QUERIES", 1)  # now one `$in` query
    pd.testing.assert_frame_equal(store.rollups("h", start, end, cabinet_ids=["c1", "c3"]), wanted)
    assert store.rollups("h", start, end, cabinet_ids=[]).empty


def test_last_reading_times_and_previous_snapshots(store: MeterStore) -> None:
    _reading(store, 5, 500)
    _reading(store, 1, 100)
    store.insert_snapshot("aa0000000001", T0 + timedelta(minutes=9), failure_check="timeout")
    store.insert_snapshot("aa0000000002", T0, failure_check="timeout")
    assert store.last_reading_times() == {"aa0000000001": T0 + timedelta(minutes=5)}
    assert store.last_reading_times(ok_only=False) == {
        "aa0000000001": T0 + timedelta(minutes=9),
        "aa0000000002": T0,
    }
    before = store.previous_snapshots("c1", T0 + timedelta(minutes=5), count=3)
    assert list(before["0000"]) == [100]
    assert store.previous_snapshots("c1", T0).empty


def test_location_hours_upsert_read_back_and_make_the_same_heatmap(store: MeterStore) -> None:
    cabinets = [
        SeedCabinet(f"c{n}", f"Cabinet {n}", f"l{n % 2}", f"Floor {n % 2}", f"bb{n:010x}", n, 0.25)
        for n in range(3)
    ]
    start = datetime(2024, 5, 13, tzinfo=UTC)
    assert seed_history(store, cabinets[:2], start, 2 * 288 + 1).location_hourly == 2 * 48
    later = seed_history(store, cabinets[2:], start, 2 * 288 + 1)  # c2 joins c0 on l0
    assert later.location_hourly == 48
    end = start + timedelta(days=2)
    hourly = store.rollups("h", start, end)
    places = store.location_hourly(start, end)
    assert list(places.columns) == ["location_id", "bucket", "coin_in_money", "cabinets"]
    assert len(places) == 2 * 48 and places["cabinets"].sum() == len(hourly) == 3 * 48
    expected = location_hourly_frame(hourly).sort_values(["location_id", "bucket"])
    pd.testing.assert_frame_equal(places, expected.reset_index(drop=True))
    assert store.upsert_location_hourly(places.head(5)) == 5, "replaced, not added"
    assert len(store.location_hourly(start, end)) == 2 * 48
    one = store.location_hourly(start, start + timedelta(hours=1), location_ids=["l1"])
    assert list(one["cabinets"]) == [1] and str(one["bucket"].dt.tz) == "UTC"
    assert store.location_hourly(start, end, location_ids=["nowhere"]).empty

    first, last = pd.Timestamp(start), pd.Timestamp(end)
    period = ReportPeriod("custom", first, last, first - (last - first), first, last)
    from_places = coin_in_heatmap(store, period)
    assert from_places.to_numpy().sum() == hourly["coin_in_money"].sum() > 0
    every_cabinet = Scope.of(cabinet_ids=[c.cabinet_id for c in cabinets])
    pd.testing.assert_frame_equal(from_places, coin_in_heatmap(store, period, every_cabinet))
    floor = coin_in_heatmap(store, period, Scope.of("l0"))
    pd.testing.assert_frame_equal(
        floor, coin_in_heatmap(store, period, Scope.of("l0", ["c0", "c2"]))
    )


class RollupsOnly:
    """The store without its daily digests (what the dashboard read before them)."""

    def __init__(self, store: MeterStore) -> None:
        self.rollups = store.rollups
        self.failed_readings = store.failed_readings
        self.iter_snapshot_chunks = store.iter_snapshot_chunks


def test_daily_digests_round_trip_and_make_the_same_dashboard(store: MeterStore) -> None:
    cabinets = [
        SeedCabinet(f"c{n}", f"Cabinet {n}", f"l{n % 2}", f"Floor {n % 2}", f"bb{n:010x}", n, 0.25)
        for n in range(3)
    ]
    start = datetime(2024, 5, 13, tzinfo=UTC)
    assert seed_history(store, cabinets[:2], start, 3 * 288 + 1).daily_digest == 3
    assert seed_history(store, cabinets[2:], start, 3 * 288 + 1).daily_digest == 3
    end = start + timedelta(days=3)
    daily = store.rollups("D", start, end)
    assert len(daily) == 9
    pd.testing.assert_frame_equal(store.daily_digest(start, end), daily)
    local = store.daily_digest(start, end, tz="Europe/Paris")
    pd.testing.assert_frame_equal(local, store.rollups("D", start, end, tz="Europe/Paris"))
    assert store.upsert_daily_digest(daily) == 3, "replaced, not added"
    pd.testing.assert_frame_equal(store.daily_digest(start, end), daily)
    one = store.daily_digest(start, start + timedelta(days=1))
    assert set(one["cabinet_id"]) == {"c0", "c1", "c2"} and str(one["bucket"].dt.tz) == "UTC"

    first, last = pd.Timestamp(start), pd.Timestamp(end)
    period = ReportPeriod("custom", first, last, first - (last - first), first, last)
    registry = pd.DataFrame(
        [
            {"id": c.cabinet_id, "name": c.cabinet, "location_id": c.location_id}
            | {"location": c.location, "relay": c.relay}
            for c in cabinets
        ]
    )
    for scope in (Scope(), Scope.of("l1")):
        digests = build_dashboard(store, registry, period, scope)
        rows = build_dashboard(RollupsOnly(store), registry, period, scope)  # type: ignore[arg-type]
        assert digests.kpis == rows.kpis and digests.kpis["coin_in"] > 0
        pd.testing.assert_frame_equal(digests.cabinets, rows.cabinets)
        pd.testing.assert_frame_equal(digests.over_time, rows.over_time)

    assert store.upsert_daily_digest(daily.iloc[0:0], days=[start]) == 1, "no rows: removed"
    assert len(store.daily_digest(start, end)) == 6
    assert store.upsert_daily_digest(daily.iloc[0:0]) == 0
    without = build_dashboard(store, registry, period)
    assert without.kpis == build_dashboard(RollupsOnly(store), registry, period).kpis  # type: ignore[arg-type]


def test_a_digest_of_an_older_layout_is_read_from_the_daily_rollups(store: MeterStore) -> None:
    """Digests once held their rows as sub-documents; such a day counts as undigested."""
    cabinets = [SeedCabinet("c0", "Cabinet 0", "l0", "Floor 0", "bb0000000000", 0, 0.25)]
    start = datetime(2024, 5, 13, tzinfo=UTC)
    seed_history(store, cabinets, start, 2 * 288 + 1)
    end = start + timedelta(days=2)
    collection = store._daily_digest  # the stored layout is what this test is about
    stored = collection.find_one({"bucket": start})
    assert stored is not None and isinstance(stored["frame"], bytes)
    collection.delete_one({"_id": stored["_id"]})
    collection.insert_one({"_id": stored["_id"], "bucket": start, "cabinets": 1, "rows": []})
    assert len(store.daily_digest(start, end)) == 1, "only the day with a frame"
    first, last = pd.Timestamp(start), pd.Timestamp(end)
    period = ReportPeriod("custom", first, last, first - (last - first), first, last)
    registry = pd.DataFrame(
        [{"id": "c0", "name": "Cabinet 0", "location_id": "l0", "location": "Floor 0"}]
    )
    board = build_dashboard(store, registry, period)
    expected = store.rollups("D", start, end)["coin_in_money"].sum()
    assert board.kpis["coin_in"] == pytest.approx(expected) and expected > 0


def test_a_slot_is_stored_once_whoever_stores_it(store: MeterStore, mongo_db: Any) -> None:
    slotted = {"slot": 7, "period_s": 300.0, **CABINET}
    first = store.insert_snapshot("aa0000000001", T0, failure_check="timeout", **slotted)
    assert first["_id"] == "c1:300:7" and first["slot"] == 7 and first["period_s"] == 300.0
    again = snapshot_document("aa0000000001", T0, failure_check="timeout", **slotted)
    assert store.store_snapshots([again, again]) == []
    assert mongo_db.meter_snapshots.count_documents({}) == 1
    assert mongo_db.meter_failures.count_documents({"_id": "c1:300:7"}) == 1
    assert store.last_slots(300) == {"c1": 7} and store.last_slots(60) == {}


def test_a_reading_replaces_a_missed_record_of_its_slot(store: MeterStore, mongo_db: Any) -> None:
    slotted = {"slot": 8, "period_s": 300.0, **CABINET}
    store.insert_snapshot(
        "aa0000000001", T0, failure="nobody read it", failure_check="missed", **slotted
    )
    good = snapshot_document("aa0000000001", T0, meters={"0000": 5}, **slotted)
    assert [d["_id"] for d in store.store_snapshots([good])] == ["c1:300:8"]
    stored = mongo_db.meter_snapshots.find_one({"_id": "c1:300:8"})
    assert stored["ok"] and stored["meters"] == {"0000": 5}
    assert mongo_db.meter_failures.count_documents({}) == 0
    # ...but never the other way round, nor a good reading by another.
    assert (
        store.store_snapshots(
            [snapshot_document("aa0000000001", T0, failure_check="missed", **slotted)]
        )
        == []
    )
    assert store.store_snapshots([good]) == []
    assert mongo_db.meter_snapshots.find_one({"_id": "c1:300:8"})["ok"]


def test_a_long_gap_is_one_record_and_missed_counts_as_a_failure(store: MeterStore) -> None:
    gap = {"slot": 10, "slot_to": 500, "period_s": 300.0, **CABINET}
    doc = store.insert_snapshot("aa0000000001", T0, failure="down", failure_check="missed", **gap)
    assert (doc["_id"], doc["slot_from"], doc["slot_to"]) == ("c1:300:10", 10, 500)
    assert store.last_slots(300) == {"c1": 500}
    assert store.last_reading_times(ok_only=False) == {}, "a missed slot is no reading attempt"
    failed = store.failed_readings(T0, T0 + timedelta(minutes=1))
    assert list(failed["failure_check"]) == ["missed"]
    with pytest.raises(InvalidInput):
        snapshot_document("aa0000000001", T0, slot=10, slot_to=9, period_s=300.0, **CABINET)
    with pytest.raises(InvalidInput):
        snapshot_document("aa0000000001", T0, slot=10, **CABINET)  # no period


def test_a_late_reading_replaces_the_timeout_record_of_its_slot(
    store: MeterStore, mongo_db: Any
) -> None:
    slotted = {"slot": 9, "period_s": 300.0, **CABINET}
    store.insert_snapshot("aa0000000001", T0, failure_check="timeout", **slotted)
    late = snapshot_document("aa0000000001", T0, meters={"0000": 5}, late=True, **slotted)
    assert [d["_id"] for d in store.store_snapshots([late])] == ["c1:300:9"]
    stored = mongo_db.meter_snapshots.find_one({"_id": "c1:300:9"})
    assert stored["ok"] and stored["late"] is True
    assert mongo_db.meter_failures.count_documents({}) == 0
    # A device error is the board's answer: no late reply takes its place.
    slotted["slot"] = 10
    store.insert_snapshot("aa0000000001", T0, failure_check="device_error", **slotted)
    other = snapshot_document("aa0000000001", T0, meters={"0000": 6}, late=True, **slotted)
    assert store.store_snapshots([other]) == []
