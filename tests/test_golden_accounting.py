"""A golden accounting dataset: hand-made SAS readings with answers worked out by hand,
checked through the stored rollups, the exports and the dashboard service.

The casino is in America/New_York, gaming days from local midnight. Cabinets (meters
in credits; 0022 = 0001 + 0002 at every reading, as SAS keeps them):

- J (1 cent), Fri 8 Mar: coin in 100,000, coin out 90,000, drop 50,000, cancelled
  36,000, and a $100,000 progressive paid by hand (0002 +10,000,000 in 5 minutes):
  net win $500 - $360 - $100,000 = -$99,860; meter win $1,000 - $100,900 = -$99,900;
  $40 of credits left on the machine.
- R (25 cents), 8 Mar: 400 credits of coin in, a RAM clear, then 200 and 100 more:
  coin in $175 (the 200 since the clear counted), one RAM clear flagged.
- O (5 cents, 4-byte meters), 8 Mar: coin in rolls over 99,999,000 -> 500: +1,500 ($75).
- D, 8 Mar: 10,000 credits at 1 cent ($100), then re-set to 25 cents and 400 credits
  ($100): the day is $200, and its credits are 800 at 25 cents, not 10,400.
- S ($1), Sun 10 Mar, the spring daylight-saving day: 23 hourly intervals of 10 credits.
- P (1 cent): Tue 12 Mar at 20 credits a minute, Wed 13 Mar at 10 a minute, read every
  5 minutes: at 00:10 and 10:20 on Wednesday, today is compared with Tuesday up to
  00:10 and 10:20.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from smib_core.services.dashboard import build_dashboard
from smib_core.services.export import ExportRequest, export_chunks
from smib_core.services.export_files import write_export
from smib_core.services.meter_report import Scope, report_period
from smib_core.services.meter_rollups import (
    refresh_daily_digests,
    refresh_location_hours,
)
from smib_core.services.meter_seed import rollups_of
from smib_core.services.rollup_book import RollupBook
from smib_core.settings import Settings
from smib_core.store.meters import MeterStore, snapshot_document

pytestmark = pytest.mark.integration

ZONE = "America/New_York"
SETTINGS = Settings(timezone=ZONE, gaming_day_start_hour=0, collect_period_s=300)
CABINETS = {  # id: (name, location id, location, relay, par %)
    "J": ("Jackpot 1", "main", "Main floor", "aa0000000001", 8.0),
    "R": ("Cleared 2", "main", "Main floor", "aa0000000002", None),
    "O": ("Rolled 3", "vip", "VIP room", "aa0000000003", None),
    "D": ("Redenominated 4", "vip", "VIP room", "aa0000000004", None),
    "S": ("Spring 5", "vip", "VIP room", "aa0000000005", None),
    "P": ("Running 6", "main", "Main floor", "aa0000000006", None),
}
NAMES = {"coin_in": "0000", "coin_out": "0001", "jackpot": "0002", "handpaid": "0003"}
NAMES |= {"cancelled": "0004", "games": "0005", "won_games": "0006", "drop": "0024"}


def local(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=ZONE)


def reading(
    cabinet_id: str, when: str, denomination: float, size: int = 5, **meters: int
) -> dict[str, Any]:
    """A good reading at local time `when`; 0022 = 0001 + 0002."""
    name, location_id, location, relay, _ = CABINETS[cabinet_id]
    values = {code: meters.get(key, 0) for key, code in NAMES.items()}
    values["0022"] = values["0001"] + values["0002"]
    return snapshot_document(
        relay,
        local(when).tz_convert("UTC").to_pydatetime(),
        cabinet_id=cabinet_id,
        cabinet=name,
        location_id=location_id,
        location=location,
        denomination=denomination,
        meters=values,
        sizes={code: size for code in values},
    )


def jackpot_day() -> list[dict[str, Any]]:
    base = dict(coin_in=1_000_000, coin_out=900_000, drop=500_000, cancelled=400_000)
    base |= dict(games=10_000, won_games=3_000)
    noon = {**base, "coin_in": 1_050_000, "coin_out": 945_000, "drop": 550_000}
    noon |= dict(games=20_000, won_games=6_000)
    hit = {**noon, "jackpot": 10_000_000}  # $100,000 by hand, 5 minutes later
    late = {**hit, "coin_in": 1_100_000, "coin_out": 990_000, "cancelled": 436_000}
    late |= dict(games=30_000, won_games=9_000)
    return [
        reading("J", "2024-03-08 00:00", 0.01, **base),
        reading("J", "2024-03-08 12:00", 0.01, **noon),
        reading("J", "2024-03-08 12:05", 0.01, **hit),
        reading("J", "2024-03-08 23:00", 0.01, **late),
        reading("J", "2024-03-09 00:00", 0.01, **late),
    ]


def ram_clear_day() -> list[dict[str, Any]]:
    q = 0.25
    return [
        reading(
            "R",
            "2024-03-08 00:00",
            q,
            coin_in=400_000,
            coin_out=360_000,
            drop=100_000,
            cancelled=60_000,
            games=50_000,
        ),
        reading(
            "R",
            "2024-03-08 06:00",
            q,
            coin_in=400_400,
            coin_out=360_300,
            drop=100_100,
            cancelled=60_000,
            games=50_100,
        ),
        # RAM clear between 06:00 and 08:00: the meters restart from 0.
        reading(
            "R", "2024-03-08 08:00", q, coin_in=200, coin_out=150, drop=100, cancelled=50, games=40
        ),
        reading(
            "R", "2024-03-08 10:00", q, coin_in=300, coin_out=220, drop=130, cancelled=50, games=60
        ),
    ]


def rollover_day() -> list[dict[str, Any]]:
    n = 0.05
    return [
        reading(
            "O", "2024-03-08 00:00", n, 4, coin_in=99_999_000, coin_out=95_000_000, drop=10_000
        ),
        reading("O", "2024-03-08 12:00", n, 4, coin_in=500, coin_out=95_001_200, drop=10_300),
        reading("O", "2024-03-09 00:00", n, 4, coin_in=500, coin_out=95_001_200, drop=10_300),
    ]


def denomination_change() -> list[dict[str, Any]]:
    return [
        reading("D", "2024-03-08 00:00", 0.01),
        reading(
            "D",
            "2024-03-08 07:00",
            0.01,
            coin_in=10_000,
            coin_out=8_000,
            drop=10_000,
            cancelled=8_000,
        ),
        reading(
            "D",
            "2024-03-08 08:00",
            0.25,
            coin_in=10_400,
            coin_out=8_300,
            drop=10_400,
            cancelled=8_300,
        ),
    ]


def spring_day() -> list[dict[str, Any]]:
    """Hourly readings from Sun 10 Mar 00:00 EST to Mon 11 Mar 01:00 EDT (24 hours of
    real time: the day itself is 23)."""
    start = local("2024-03-10 00:00").tz_convert("UTC")
    rows = []
    for step in range(25):
        at = (start + pd.Timedelta(hours=step)).tz_convert(ZONE)
        meters = dict(coin_in=10 * step, coin_out=8 * step, drop=2 * step)
        rows.append(reading("S", f"{at:%Y-%m-%d %H:%M}", 1.0, **meters))
    return rows


def running(until: pd.Timestamp) -> list[dict[str, Any]]:
    """P's readings every 5 minutes from Tue 12 Mar 00:00 up to `until` (local)."""
    rows, coin_in = [], 0
    moment = local("2024-03-12 00:00")
    while moment <= until:
        rows.append(reading("P", f"{moment:%Y-%m-%d %H:%M}", 0.01, coin_in=coin_in, drop=coin_in))
        coin_in += 5 * (20 if moment < local("2024-03-13 00:00") else 10)
        moment += pd.Timedelta(minutes=5)
    return rows


def registry() -> pd.DataFrame:
    rows = [
        {"id": i, "name": n, "location_id": lid, "location": loc, "relay": r, "par": p}
        for i, (n, lid, loc, r, p) in CABINETS.items()
    ]
    return pd.DataFrame(rows)


def collect(store: MeterStore, docs: list[dict[str, Any]]) -> None:
    """Store readings and keep the rollups current as the collector does (its rollup
    book, a flush every few readings), then flush the location hours and daily digests."""
    store.insert_snapshots(docs)
    book = RollupBook(store, gaming_day_start_hour=0, tz=ZONE)
    book.classify((d["relay"], d["cabinet_id"]) for d in docs)
    hours, days = set(), set()
    for i in range(0, len(docs), 7):
        book.add(docs[i : i + 7])
        refreshed = book.flush()
        assert refreshed is not None
        hours |= refreshed.places
        days |= refreshed.days
    refresh_location_hours(store, hours)
    refresh_daily_digests(store, days, gaming_day_start_hour=0, tz=ZONE)


def seed_running(store: MeterStore, until: pd.Timestamp) -> None:
    """P's readings up to `until`, rollups recomputed whole (the seeds' way)."""
    docs = running(until)
    store.insert_snapshots(d for d in docs if d["at"] > store_last(store))
    frame = store.snapshots(
        local("2024-03-11").to_pydatetime(), local("2024-03-14").to_pydatetime(), cabinet_ids=["P"]
    )
    hourly, daily = rollups_of(frame, tz=ZONE)
    store.upsert_rollups("h", hourly)
    store.upsert_rollups("D", daily)
    days = [d.to_pydatetime() for d in daily["bucket"]]
    refresh_daily_digests(store, days, tz=ZONE)


def store_last(store: MeterStore) -> datetime:
    last = store.last_reading_times().get(CABINETS["P"][3])
    return last or local("2000-01-01").to_pydatetime()


@pytest.fixture(scope="module")
def golden(embedded_mongo: Any) -> Iterator[MeterStore]:
    from pymongo import MongoClient

    client: MongoClient[Any] = MongoClient(embedded_mongo.uri, tz_aware=True)
    store = MeterStore(client[f"golden_{datetime.now().timestamp():.0f}"])
    for docs in (jackpot_day(), ram_clear_day(), rollover_day(), denomination_change()):
        collect(store, docs)
    collect(store, spring_day())
    yield store
    client.close()


def day_rows(store: MeterStore, first: str, last: str) -> pd.DataFrame:
    rows = store.rollups("D", local(first).to_pydatetime(), local(last).to_pydatetime(), tz=ZONE)
    return rows.set_index("cabinet_id")


# --- rollups -------------------------------------------------------------------------


def test_rollups_of_the_jackpot_day(golden: MeterStore) -> None:
    j = day_rows(golden, "2024-03-08", "2024-03-09").loc["J"]
    assert j["bucket"] == local("2024-03-08 00:00")
    assert (j["coin_in_money"], j["coin_out_money"]) == pytest.approx((1_000.0, 900.0))
    assert j["jackpot_money"] == pytest.approx(100_000.0)  # a progressive is an award
    assert j["won_credits_money"] == pytest.approx(100_900.0)
    assert (j["drop_money"], j["cancelled_money"]) == pytest.approx((500.0, 360.0))
    assert j["handpaid_cancelled_money"] == 0.0  # 0003 never holds a jackpot
    assert (j["absurd"], j["ram_clear"]) == (0, 0)


def test_rollups_of_the_ram_clear_rollover_and_denomination_change(golden: MeterStore) -> None:
    days = day_rows(golden, "2024-03-08", "2024-03-09")
    r = days.loc["R"]
    assert r["coin_in"] == pytest.approx(700.0)  # 400 + 200 since the clear + 100
    assert r["coin_in_money"] == pytest.approx(175.0)
    assert (r["ram_clear"], r["intervals"]) == (1, 3)
    o = days.loc["O"]
    assert (o["coin_in"], o["coin_in_money"], o["rollover"]) == (1_500.0, 75.0, 1)
    d = days.loc["D"]
    assert d["coin_in_money"] == pytest.approx(200.0)
    assert d["denomination"] == 0.25
    assert d["coin_in"] == pytest.approx(800.0)  # $200 at 25 cents, not 10,400 credits


def test_the_daylight_saving_day_is_23_hours(golden: MeterStore) -> None:
    s = day_rows(golden, "2024-03-10", "2024-03-12").loc["S"]
    first = s.iloc[0] if isinstance(s, pd.DataFrame) else s
    assert first["bucket"] == local("2024-03-10 00:00")
    assert first["intervals"] == 23
    assert first["coin_in_money"] == pytest.approx(230.0)
    hours = golden.rollups(
        "h",
        local("2024-03-10").to_pydatetime(),
        local("2024-03-11").to_pydatetime(),
        ["S"],
        tz=ZONE,
    )
    assert len(hours) == 23
    assert "02:00" not in {f"{b:%H:%M}" for b in hours["bucket"]}  # 02:00 did not exist


# --- dashboard -----------------------------------------------------------------------


def test_dashboard_of_the_jackpot_day(golden: MeterStore) -> None:
    day = report_period(
        "custom",
        local("2024-03-20"),
        first_day=date(2024, 3, 8),
        last_day=date(2024, 3, 8),
        tz=ZONE,
    )
    board = build_dashboard(golden, registry(), day, None, SETTINGS)
    k = board.kpis
    assert k["coin_in"] == pytest.approx(1_000 + 175 + 75 + 200)
    assert k["jackpot"] == pytest.approx(100_000.0)
    assert k["net_win"] == pytest.approx(-99_860 + 45 + 15 + 45)
    assert k["meter_win"] == pytest.approx(-99_900 + 45 + 15 + 45)
    assert k["credits_left"] == pytest.approx(40.0)
    table = board.cabinets.set_index("cabinet_id")
    assert table.loc["J", "net_win"] == pytest.approx(-99_860.0)  # not +$140
    assert table.loc["J", "meter_win"] == pytest.approx(-99_900.0)
    assert table.loc["J", "expected_win"] == pytest.approx(80.0)  # $1,000 x 8 %
    assert bool(table.loc["J", "unusual"])
    assert (board.quality.ram_clears, board.quality.rollovers, board.quality.absurd) == (1, 1, 0)
    assert "EST (America/New_York)" in day.label


def test_dashboard_over_days_from_the_digests_includes_the_short_day(golden: MeterStore) -> None:
    days = report_period(
        "custom",
        local("2024-03-20"),
        first_day=date(2024, 3, 8),
        last_day=date(2024, 3, 10),
        tz=ZONE,
    )
    board = build_dashboard(golden, registry(), days, None, SETTINGS)
    assert board.kpis["coin_in"] == pytest.approx(1_450 + 230)
    by_day = board.over_time.set_index("bucket")["coin_in"]
    assert by_day[local("2024-03-10 00:00")] == pytest.approx(230.0)
    assert by_day[local("2024-03-08 00:00")] == pytest.approx(1_450.0)


@pytest.mark.parametrize(
    ("now", "today", "yesterday"),
    [
        ("2024-03-13 00:10", 1.0, 2.0),  # 10 minutes at 10 and at 20 credits a minute
        ("2024-03-13 10:20", 62.0, 124.0),  # 620 minutes
    ],
)
def test_a_running_day_is_compared_to_the_reading(
    golden: MeterStore, now: str, today: float, yesterday: float
) -> None:
    seed_running(golden, local(now))
    period = report_period("today", local(now), tz=ZONE)
    board = build_dashboard(golden, registry(), period, Scope.of(None, ["P"]), SETTINGS)
    assert period.previous_end == local(now) - pd.Timedelta(days=1)
    assert board.kpis["coin_in"] == pytest.approx(today)
    assert board.previous["coin_in"] == pytest.approx(yesterday)
    assert board.change["coin_in"]["pct"] == pytest.approx(-50.0)


# --- exports -------------------------------------------------------------------------


def export(store: MeterStore, tmp_path: Path, granularity: str, first: str, last: str) -> Any:
    request = ExportRequest(
        local(first).tz_convert("UTC"),
        local(last).tz_convert("UTC"),
        granularity,  # type: ignore[arg-type]
        "csv",
        tz=ZONE,
    )
    path = tmp_path / request.file_name
    write_export(export_chunks(store, request, cabinets=6), request.granularity, "csv", path)
    return pd.read_csv(path)


def test_daily_export_of_the_golden_days(golden: MeterStore, tmp_path: Path) -> None:
    rows = export(golden, tmp_path, "day", "2024-03-08", "2024-03-11")
    j = rows[rows["Cabinet"] == "Jackpot 1"].iloc[0]
    assert j["Gaming day"] == "2024-03-08"
    assert j["Gaming day starting (UTC)"] == "2024-03-08 05:00:00"
    assert j["Gaming day starting (local)"] == "2024-03-08 00:00:00"
    assert j["Time zone"] == ZONE
    assert j["Net win ($)"] == pytest.approx(-99_860.0)
    assert j["Meter win ($)"] == pytest.approx(-99_900.0)
    assert j["Credits left on the machines ($)"] == pytest.approx(40.0)
    assert j["Jackpots ($)"] == pytest.approx(100_000.0)
    d = rows[rows["Cabinet"] == "Redenominated 4"].iloc[0]
    assert (d["Coin in ($)"], d["Coin in (credits)"]) == pytest.approx((200.0, 800.0))
    s = rows[rows["Cabinet"] == "Spring 5"].iloc[0]
    assert s["Gaming day"] == "2024-03-10"
    assert s["Intervals (readings differenced)"] == 23
    assert s["Coin in ($)"] == pytest.approx(230.0)


def test_raw_and_hourly_exports_carry_local_times_and_the_gaming_day(
    golden: MeterStore, tmp_path: Path
) -> None:
    raw = export(golden, tmp_path, "raw", "2024-03-10", "2024-03-12")
    s = raw[raw["Cabinet"] == "Spring 5"].reset_index(drop=True)
    midnight = s[s["Time (local)"] == "2024-03-11 00:00:00"].iloc[0]
    assert midnight["Time (UTC)"] == "2024-03-11 04:00:00"  # EDT after the change
    assert midnight["Gaming day"] == "2024-03-10"  # it closes the day's last interval
    hourly = export(golden, tmp_path, "hour", "2024-03-10", "2024-03-11")
    spring = hourly[hourly["Cabinet"] == "Spring 5"]
    assert len(spring) == 23
    assert set(spring["Gaming day"]) == {"2024-03-10"}
    assert spring["Hour starting (local)"].tolist()[2] == "2024-03-10 03:00:00"  # 02:00 skipped
