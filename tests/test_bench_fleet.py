"""`smib bench fleet`: the slot count it reports, and a tiny run of the whole machinery
(a private Mosquitto, its own embedded database, the worker and the simulators in their
own processes), which must leave no process behind."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psutil
import pytest

from smib_core.bench.fleet import fleet_relays, slot_report, split
from smib_core.cli import main
from smib_core.slots import offset_s, slot_of
from smib_core.store.meters import MeterStore

pytestmark = pytest.mark.integration

P = 10.0


def _at(relay: str, slot: int, late: float = 0.2) -> datetime:
    return datetime.fromtimestamp(slot * P + offset_s(relay, P) + late, UTC)


def test_boards_are_split_over_the_processes_with_distinct_relays() -> None:
    assert split(10, 3) == [4, 3, 3]
    groups = fleet_relays(50, 3)
    assert [len(g) for g in groups] == [17, 17, 16]
    assert len({r for g in groups for r in g}) == 50


def test_a_slot_is_read_failed_missed_absent_or_duplicated(mongo_db: Any) -> None:
    store = MeterStore(mongo_db)
    cabinets = {"c1": "aa0000000001", "c2": "aa0000000002", "c3": "aa0000000003"}

    def put(cabinet: str, slot: int, **fields: Any) -> None:
        relay = cabinets[cabinet]
        store.insert_snapshot(relay, _at(relay, slot), cabinet_id=cabinet, **fields)

    for slot in (100, 101, 102):
        put("c1", slot, meters={"0000": 1})  # every slot read
    put("c2", 100, meters={"0000": 1})
    put("c2", 101, failure="no reply within 5 s", failure_check="timeout")
    put("c2", 101, meters={"0000": 1})  # a second snapshot of the same slot
    put("c3", 100, failure="collector down", failure_check="missed")
    put("c3", 99, meters={"0000": 1})  # before the window: not counted
    put("c3", 103, meters={"0000": 1})  # after it: not counted
    # c2's slot 102 and c3's slots 101, 102 have no record at all

    report = slot_report(mongo_db, cabinets, P, 100, 102)
    assert report.expected == 9
    assert (report.read_ok, report.read_failed, report.recorded_missed) == (5, 0, 1)
    assert report.absent == 3 and report.lost == 3
    assert report.duplicated == 1
    assert slot_of("aa0000000001", _at("aa0000000001", 7).timestamp(), P) == 7


def test_once_the_collector_marks_slots_readings_on_demand_fill_none(mongo_db: Any) -> None:
    relay = "aa0000000001"
    docs = [
        {"_id": f"c1:10:{slot}", "relay": relay, "cabinet_id": "c1", "at": _at(relay, slot)}
        | {"ok": True, "slot": slot, "period_s": P}
        for slot in (5, 6)
    ]
    docs.append({"relay": relay, "cabinet_id": "c1", "at": _at(relay, 6, 3.0), "ok": True})
    mongo_db["meter_snapshots"].insert_many(docs)
    report = slot_report(mongo_db, {"c1": relay}, P, 5, 6)
    assert (report.read_ok, report.absent, report.duplicated) == (2, 0, 0)


def test_a_long_gap_recorded_as_one_snapshot_accounts_for_each_of_its_slots(
    mongo_db: Any,
) -> None:
    relay = "aa0000000002"
    gap = {"_id": "c2:10:1", "relay": relay, "cabinet_id": "c2", "at": _at(relay, 1, 0)}
    gap |= {"ok": False, "failure_check": "missed", "slot": 1, "slot_from": 1, "slot_to": 8}
    read = {"_id": "c2:10:9", "relay": relay, "cabinet_id": "c2", "at": _at(relay, 9)}
    read |= {"ok": True, "slot": 9, "period_s": P}
    mongo_db["meter_snapshots"].insert_many([gap | {"period_s": P}, read])
    report = slot_report(mongo_db, {"c2": relay}, P, 6, 10)
    assert (report.recorded_missed, report.read_ok, report.absent) == (3, 1, 1)
    assert report.examples == (("c2", 10, 0),)


def test_a_tiny_run_reads_every_slot_and_leaves_no_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["bench", "fleet", "--boards", "20", "--period", "3", "--periods", "2"]
    argv += ["--processes", "2", "--baseline", "2", "--events-per-minute", "0", "--json"]
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plan"]["boards_per_process"] == [10, 10]
    slots = report["slots"]
    assert slots["cabinets"] == 20 and slots["expected"] == 40
    assert slots["absent"] == 0 and slots["duplicated"] == 0
    assert slots["read_ok"] + slots["read_failed"] == 40
    assert slots["read_share_pct"] == 100.0
    assert report["slots_a_period_later"] == slots  # nothing came late, nothing changed
    idle, busy = report["worker_usage"]["idle"], report["worker_usage"]["collecting"]
    assert idle["rss_mib"] > 0 and busy["rss_peak_mib"] >= busy["rss_mib"] > 0
    assert busy["seconds"] >= 5.5 and busy["cpu_pct"] >= 0
    table = report["table"]
    assert table["rows"] == table["raw_rows"] == 20
    assert table["status"]["online"] == 20 and table["with_meter_reading"] == 20
    assert table["build_s"] > 0 and table["baseline_s"] > 0
    rollups = report["rollups"]  # every row the worker wrote is what the readings give
    assert rollups["h_rows"] >= 20 and rollups["D_rows"] >= 20
    assert rollups["h_wrong"] == 0 and rollups["D_wrong"] == 0
    after = psutil.Process().children(recursive=True)
    assert not [p for p in after if p.pid not in before]
