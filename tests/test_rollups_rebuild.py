"""Rebuilding rollups from the readings: after the casino's time zone changes, the gaming
days of a range are recomputed whole (old rows removed), with the same numbers as
rolling the readings up afresh; `smib rollups rebuild` does it from a shell."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from smib_core.cli import main
from smib_core.services.meter_rollups import rebuild_rollups
from smib_core.services.meter_seed import rollups_of
from smib_core.store.meters import MeterStore
from tests.test_golden_accounting import (
    ZONE,
    denomination_change,
    jackpot_day,
    local,
    ram_clear_day,
    spring_day,
)

pytestmark = pytest.mark.integration


def stored(mongo_db: Any) -> MeterStore:
    """The golden readings with rollups as a UTC deployment kept them."""
    store = MeterStore(mongo_db)
    docs = [*jackpot_day(), *ram_clear_day(), *denomination_change(), *spring_day()]
    store.insert_snapshots(docs)
    hourly, daily = rollups_of(store.snapshots(local("2024-03-01"), local("2024-03-20")))
    store.upsert_rollups("h", hourly)
    store.upsert_rollups("D", daily)
    store.upsert_daily_digest(daily)
    return store


def test_a_rebuild_in_another_zone_replaces_the_days_rows(mongo_db: Any) -> None:
    store = stored(mongo_db)
    wide = (local("2024-03-01").to_pydatetime(), local("2024-03-20").to_pydatetime())
    assert local("2024-03-08 00:00") not in set(store.rollups("D", *wide, tz=ZONE)["bucket"])
    counts = rebuild_rollups(
        store, local("2024-03-08"), local("2024-03-11"), ["J", "R", "D", "S"], tz=ZONE
    )
    assert counts.removed > 0 and counts.daily_digest == 3
    daily = store.rollups("D", *wide, tz=ZONE)
    inside = daily[daily["bucket"] >= local("2024-03-08")]
    assert set(inside["bucket"]) <= {local(f"2024-03-{d:02d} 00:00") for d in (8, 9, 10, 11)}
    _, expected = rollups_of(store.snapshots(*wide), tz=ZONE)
    expected = expected[(expected["bucket"] >= local("2024-03-08"))]
    expected = expected[expected["bucket"] < local("2024-03-11")]
    got = inside.set_index(["cabinet_id", "bucket"])["coin_in_money"].sort_index()
    want = expected.set_index(["cabinet_id", "bucket"])["coin_in_money"].sort_index()
    pd.testing.assert_series_equal(got, want, check_names=False)
    spring = inside[inside["cabinet_id"] == "S"].iloc[0]
    assert (spring["intervals"], spring["coin_in_money"]) == (23, 230.0)
    digest = store.daily_digest(*wide, tz=ZONE)
    assert set(digest["bucket"]) == set(inside["bucket"])
    places = store.location_hourly(*wide, tz=ZONE)
    assert places["coin_in_money"].sum() == pytest.approx(inside["coin_in_money"].sum())


def test_smib_rollups_rebuild(
    mongo_db: Any, embedded_mongo: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    store = stored(mongo_db)
    monkeypatch.setenv("MONGO_URI", embedded_mongo.uri)
    monkeypatch.setenv("MONGO_DB", mongo_db.name)
    monkeypatch.setenv("SMIB_TIMEZONE", ZONE)
    argv = ["rollups", "rebuild", "--from", "2024-03-10", "--to", "2024-03-10"]
    assert main([*argv, "--cabinet", "S"]) == 0
    assert "rebuilt 2024-03-10..2024-03-10 (America/New_York)" in capsys.readouterr().out
    days = store.rollups("D", local("2024-03-10"), local("2024-03-11"), ["S"], tz=ZONE)
    assert days["intervals"].tolist() == [23]
    with pytest.raises(SystemExit):  # argparse refuses it with a sentence
        main(["rollups", "rebuild", "--from", "2024-03-10", "--to", "nonsense"])
    assert "is not a date" in capsys.readouterr().err
