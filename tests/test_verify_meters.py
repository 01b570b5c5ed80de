"""Rollups repair themselves: a reading stored whose rollup update failed (the database
went away in between) leaves a cabinet-hour wrong; `verify_rollups` / `smib verify
meters` find it and `--repair` rewrites it from the readings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
import pytest

from smib_core.cli import main
from smib_core.services.meter_rollups import verify_rollups
from smib_core.store.meters import snapshot_document
from tests.test_rollups_rebuild import stored

pytestmark = pytest.mark.integration

CABINETS = ["J", "R", "D", "S"]
FIRST, LAST = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-20", tz="UTC")


def test_a_reading_whose_rollup_update_failed_is_found_and_repaired(
    mongo_db: Any, embedded_mongo: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    store = stored(mongo_db)
    assert verify_rollups(store, FIRST, LAST, CABINETS) == []
    last = store.previous_snapshots("J", LAST.to_pydatetime()).iloc[-1]
    at = pd.Timestamp(last["at"]).to_pydatetime() + timedelta(minutes=5)
    meters = {c: int(last[c]) for c in ("0000", "0001", "0002", "0005", "0022", "0024")}
    meters["0000"] += 1_000
    meters["0005"] += 10
    names = {k: str(last[k]) for k in ("cabinet_id", "cabinet", "location_id", "location")}
    store.insert_snapshots(
        [snapshot_document(str(last["relay"]), at, **names, denomination=0.01, meters=meters)]
    )  # ... and the database failed before the rollup update
    found = verify_rollups(store, FIRST, LAST, CABINETS)
    assert {(d.cabinet_id, d.column) for d in found} >= {("J", "coin_in"), ("J", "intervals")}
    coin_in = next(d for d in found if d.column == "coin_in")
    assert (coin_in.expected or 0) - (coin_in.stored or 0) == 1_000

    monkeypatch.setenv("MONGO_URI", embedded_mongo.uri)
    monkeypatch.setenv("MONGO_DB", mongo_db.name)
    argv = ["verify", "meters", "--from", "2024-03-01", "--to", "2024-03-19"]
    argv += [arg for c in CABINETS for arg in ("--cabinet", c)]  # not in the registry
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "J\t" in out and "coin_in" in out and "1 cabinet-hours disagree" in out
    assert main([*argv, "--repair"]) == 0
    assert "1 cabinet-hours repaired" in capsys.readouterr().out
    assert verify_rollups(store, FIRST, LAST, CABINETS) == []
    daily = store.rollups("D", FIRST.to_pydatetime(), LAST.to_pydatetime(), ["J"])
    hourly = store.rollups("h", FIRST.to_pydatetime(), LAST.to_pydatetime(), ["J"])
    assert daily["coin_in"].sum() == hourly["coin_in"].sum()
    assert main(argv) == 0


def test_the_collector_repairs_recent_cabinet_hours_when_it_takes_the_lease(
    mongo_db: Any,
) -> None:
    import time

    from smib_core.services.collector import Collector, CollectorConfig
    from smib_core.services.demo import register_demo_fleet
    from smib_core.store.registry import Registry
    from tests.test_collector import FakeBus, meter_reply

    relay = "aa0000000001"
    register_demo_fleet(Registry(mongo_db), [relay], actor="test")
    bus, now = FakeBus(), [time.time() - 7200]  # hours before the live reading's
    coin = iter((50_000, 51_000, 53_000))
    bus.answers[relay] = lambda: meter_reply(relay, next(coin))
    early = Collector(bus, mongo_db, clock=lambda: now[0], alerts=False)
    early.run_once()
    now[0] += 300
    early.run_once()
    [doc] = early.store.snapshots(*(pd.Timestamp(0, tz="UTC"), pd.Timestamp.now("UTC")))[
        lambda f: f["0000"] == 51_000
    ].to_dict("records")
    later = dict(
        cabinet_id=doc["cabinet_id"], cabinet=doc["cabinet"], location_id=doc["location_id"]
    )
    at = pd.Timestamp(doc["at"]).to_pydatetime() + timedelta(minutes=5)
    early.store.insert_snapshots(
        [snapshot_document(relay, at, **later, meters={"0000": 53_000, "0005": 530})]
    )  # stored; the rollup update was lost
    wide = (pd.Timestamp(0, tz="UTC").to_pydatetime(), pd.Timestamp.now("UTC").to_pydatetime())
    assert early.store.rollups("h", *wide)["coin_in"].sum() == 1_000

    bus.answers[relay] = lambda: meter_reply(relay, 53_000)
    collector = Collector(bus, mongo_db, CollectorConfig(period_s=60), alerts=False)
    collector.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if collector.store.rollups("h", *wide)["coin_in"].sum() == 3_000:
                break
            time.sleep(0.2)
    finally:
        collector.stop()
    assert collector.store.rollups("h", *wide)["coin_in"].sum() == 3_000
