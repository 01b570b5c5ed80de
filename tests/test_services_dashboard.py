"""The dashboard from hand-made rollups: exact KPIs, change against the previous period
(cut to the same hour while a period runs), filters, data quality, the heatmap, and an
empty period. A fake source records which rollups were read: never raw snapshots."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import pandas as pd
import pytest

from smib_core.analytics.movement import CREDIT_METERS, FLAGS, MOVEMENT_METERS
from smib_core.analytics.rollups import ROLLUP_COLUMNS, rollup
from smib_core.services.dashboard import CABINET_TABLE_COLUMNS, build_dashboard, coin_in_heatmap
from smib_core.services.meter_report import Scope, report_period
from smib_core.store.rollups import location_hourly_frame

CABINETS = {  # id: (name, location id, location, relay, denomination)
    "a1": ("Buffalo 1", "main", "Main floor", "aa0000000001", 0.01),
    "b1": ("Dragon 7", "vip", "VIP room", "aa0000000002", 0.25),
    "c1": ("Quiet one", "vip", "VIP room", "aa0000000003", 0.05),
}


def registry() -> pd.DataFrame:
    rows = [
        {"id": i, "name": n, "location_id": lid, "location": loc, "relay": r, "denomination": d}
        for i, (n, lid, loc, r, d) in CABINETS.items()
    ]
    return pd.DataFrame(rows)


def hour(cabinet_id: str, when: str, **money: float) -> dict[str, Any]:
    """One hourly rollup row; `money` in $ by meter name (games in games), converted to
    credits by the cabinet's denomination as the collector's rollups are."""
    name, location_id, location, relay, denomination = CABINETS[cabinet_id]
    bucket = pd.Timestamp(when, tz="UTC")
    row: dict[str, Any] = {c: 0.0 for c in ROLLUP_COLUMNS}
    row.update(cabinet=name, bucket=bucket, relay=relay, location=location)
    row.update(denomination=denomination, intervals=12, cabinet_id=cabinet_id)
    row.update(start=bucket, end=bucket + pd.Timedelta(hours=1), location_id=location_id)
    money.setdefault("won_credits", money.get("coin_out", 0.0) + money.get("jackpot", 0.0))
    for meter in MOVEMENT_METERS:
        amount = float(money.get(meter, 0.0))
        if meter in CREDIT_METERS:
            row[meter] = amount / denomination
            row[f"{meter}_money"] = amount
        else:
            row[meter] = amount
    for flag in FLAGS:
        row[flag] = int(money.get(flag, 0))
    return row


class FakeSource:
    """Stands in for MeterStore: hourly rows given, daily rows rolled up from them."""

    def __init__(
        self, hours: list[dict[str, Any]], failed: list[dict[str, Any]] | None = None
    ) -> None:
        self.hourly = pd.DataFrame(hours, columns=[*ROLLUP_COLUMNS, "cabinet_id", "location_id"])
        self.hourly["bucket"] = pd.to_datetime(self.hourly["bucket"], utc=True)
        for column in ("start", "end"):
            self.hourly[column] = pd.to_datetime(self.hourly[column], utc=True)
        self.failed = pd.DataFrame(
            failed or [], columns=["relay", "cabinet", "location", "at", "failure", "failure_check"]
        )
        self.failed["at"] = pd.to_datetime(self.failed["at"], utc=True)
        self.readings = pd.DataFrame(columns=["cabinet_id", "location_id", "at"])
        self.reads: list[tuple[str, pd.Timestamp, pd.Timestamp]] = []

    def daily(self) -> pd.DataFrame:
        keyed = self.hourly.assign(cabinet=self.hourly["cabinet_id"])
        days = rollup(keyed, "D")
        days["cabinet_id"] = days["cabinet"]
        days["location_id"] = days["cabinet"].map(lambda c: CABINETS[c][1])
        days["cabinet"] = days["cabinet"].map(lambda c: CABINETS[c][0])
        return days

    def rollups(
        self,
        freq: str,
        start: datetime,
        end: datetime,
        cabinet_ids: Iterable[str] | None = None,
        location_ids: Iterable[str] | None = None,
        *,
        tz: str = "UTC",
    ) -> pd.DataFrame:
        assert location_ids is None  # locations are cut to scope in pandas
        self.reads.append((freq, pd.Timestamp(start), pd.Timestamp(end)))
        frame = self.hourly if freq == "h" else self.daily()
        inside = (frame["bucket"] >= start) & (frame["bucket"] < end)
        if cabinet_ids is not None:  # chosen cabinets: only their rows are read
            inside &= frame["cabinet_id"].isin(list(cabinet_ids))
        return frame[inside].reset_index(drop=True)

    def snapshots(
        self,
        start: datetime,
        end: datetime,
        relays: Iterable[str] | None = None,
        cabinet_ids: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        self.reads.append(("raw", pd.Timestamp(start), pd.Timestamp(end)))
        frame = self.readings
        inside = (frame["at"] >= start) & (frame["at"] < end)
        if cabinet_ids is not None:
            inside &= frame["cabinet_id"].isin(list(cabinet_ids))
        return frame[inside].reset_index(drop=True)

    def failed_readings(self, start: datetime, end: datetime, **_: object) -> pd.DataFrame:
        inside = (self.failed["at"] >= start) & (self.failed["at"] < end)
        return self.failed[inside].reset_index(drop=True)


NOW = pd.Timestamp("2024-05-15 12:30", tz="UTC")  # a Wednesday


def fleet() -> FakeSource:
    return FakeSource(
        [
            # Tuesday 14 May (the period "yesterday")
            hour(
                "a1",
                "2024-05-14 10:00",
                coin_in=100,
                coin_out=80,
                drop=40,
                cancelled=10,
                games_played=200,
            ),
            hour(
                "b1",
                "2024-05-14 20:00",
                coin_in=300,
                coin_out=250,
                drop=100,
                cancelled=150,
                jackpot=20,
                games_played=60,
                ram_clear=1,
            ),
            # Monday 13 May (the compared period)
            hour("a1", "2024-05-13 09:00", coin_in=50, drop=30, cancelled=5, games_played=100),
            # Wednesday 15 May (today, running): before and after 12:30
            hour("a1", "2024-05-15 08:00", coin_in=10, drop=10, games_played=20),
        ],
        failed=[
            {"relay": "aa0000000001", "at": "2024-05-14 11:00", "failure": "crc"},
            {"relay": "aa0000000003", "at": "2024-05-14 12:00", "failure": "timeout"},
            {"relay": "ffff00000000", "at": "2024-05-14 12:00", "failure": "crc"},
        ],
    )


def test_kpis_are_exact_and_compared_with_the_previous_period() -> None:
    source = fleet()
    board = build_dashboard(source, registry(), report_period("yesterday", NOW))
    k = board.kpis
    assert (k["coin_in"], k["coin_out"], k["drop"]) == (400.0, 330.0, 140.0)
    assert (k["cancelled"], k["jackpot"]) == (160.0, 20.0)
    assert k["net_win"] == pytest.approx(140 - 160 - 20)  # hand-paid jackpots subtracted
    assert k["meter_win"] == pytest.approx(400 - 350)  # coin in - total won (330 + 20)
    assert k["credits_left"] == pytest.approx(-40 - 50)
    assert k["hold_pct"] == pytest.approx(-40 / 400 * 100)
    assert k["games_played"] == 260
    assert k["avg_bet"] == pytest.approx(400 / 260)
    assert board.previous["net_win"] == pytest.approx(25.0)
    change = board.change["net_win"]
    assert change["delta"] == pytest.approx(-65.0)
    assert change["pct"] == pytest.approx(-65 / 25 * 100)
    assert board.change["coin_in"]["pct"] == pytest.approx((400 - 50) / 50 * 100)
    assert {f for f, _, _ in source.reads} == {"h"}  # a day is read hour by hour


def test_chart_frames_and_cabinet_table_carry_names() -> None:
    board = build_dashboard(fleet(), registry(), report_period("yesterday", NOW))
    assert board.over_time["bucket"].dt.hour.tolist() == [10, 20]
    assert board.over_time["net_win"].tolist() == pytest.approx([30.0, -70.0])
    assert board.by_location[["location", "net_win"]].values.tolist() == [
        ["Main floor", 30.0],
        ["VIP room", -70.0],
    ]
    assert board.top["cabinet"].tolist() == ["Buffalo 1", "Dragon 7"]
    assert board.bottom["cabinet"].tolist() == ["Dragon 7", "Buffalo 1"]
    assert board.hold["hold_pct"].tolist() == pytest.approx([30.0, -70 / 3])
    table = board.cabinets
    assert list(table.columns) == list(CABINET_TABLE_COLUMNS)
    assert table["cabinet"].tolist() == ["Buffalo 1", "Dragon 7"]
    assert table["cabinet_id"].tolist() == ["a1", "b1"]
    assert table["trend"].tolist() == [[30.0, 0.0], [0.0, -70.0]]


def test_filters_cut_to_locations_and_cabinets() -> None:
    vip = build_dashboard(fleet(), registry(), report_period("yesterday", NOW), Scope.of(["vip"]))
    assert vip.kpis["coin_in"] == 300.0
    assert vip.previous["coin_in"] == 0.0
    assert vip.change["coin_in"]["pct"] is None  # nothing to compare with
    assert vip.cabinets["cabinet"].tolist() == ["Dragon 7"]
    assert vip.quality.silent == ["Quiet one"]
    one = build_dashboard(
        fleet(), registry(), report_period("yesterday", NOW), Scope.of(None, ["a1"])
    )
    assert one.kpis["coin_in"] == 100.0
    assert one.quality.cabinets == 1


def snapshot(cabinet_id: str, when: str, coin_in: int) -> dict[str, Any]:
    """A good reading of the cabinet (coin in in credits, the other meters 0)."""
    name, location_id, location, relay, denomination = CABINETS[cabinet_id]
    row: dict[str, Any] = {"relay": relay, "cabinet": name, "cabinet_id": cabinet_id}
    row.update(location=location, location_id=location_id, denomination=denomination)
    row.update({code: 0 for code in MOVEMENT_METERS.values()})
    return {**row, "at": pd.Timestamp(when, tz="UTC"), "0000": coin_in}


def test_a_running_period_is_compared_with_the_same_elapsed_time_to_the_reading() -> None:
    source = fleet()
    source.hourly = pd.concat(
        [source.hourly, pd.DataFrame([hour("a1", "2024-05-14 12:00", coin_in=999)])],
        ignore_index=True,
    )
    source.readings = pd.DataFrame(
        [  # Tuesday's 12:00 hour, reading by reading (1 cent a credit)
            snapshot("a1", "2024-05-14 11:55", 100_000),  # the baseline
            snapshot("a1", "2024-05-14 12:05", 100_700),  # +$7
            snapshot("a1", "2024-05-14 12:30", 101_000),  # +$3, on the cut
            snapshot("a1", "2024-05-14 12:35", 199_900),  # after the cut
        ]
    )
    board = build_dashboard(source, registry(), report_period("today", NOW))
    assert board.period.previous_end == pd.Timestamp("2024-05-14 12:30", tz="UTC")
    assert board.kpis["coin_in"] == 10.0
    # Tuesday up to 12:30 to the reading: the 10:00 hour's 100 and 12:00-12:30's $10,
    # not the whole 12:00 hour's 999.
    assert board.previous["coin_in"] == pytest.approx(110.0)
    raw = [(a, b) for f, a, b in source.reads if f == "raw"]
    assert raw == [
        (
            pd.Timestamp("2024-05-14 11:45", tz="UTC"),
            pd.Timestamp("2024-05-14 12:30:01", tz="UTC"),
        )
    ]


def test_at_ten_past_midnight_the_comparison_is_yesterdays_first_ten_minutes() -> None:
    source = fleet()
    source.readings = pd.DataFrame(
        [
            snapshot("a1", "2024-05-13 23:55", 50_000),
            snapshot("a1", "2024-05-14 00:05", 50_200),  # +$2
            snapshot("a1", "2024-05-14 00:10", 50_300),  # +$1
            snapshot("a1", "2024-05-14 00:15", 90_000),  # after the cut
        ]
    )
    board = build_dashboard(
        source, registry(), report_period("today", pd.Timestamp("2024-05-15 00:10", tz="UTC"))
    )
    assert board.period.previous_start == pd.Timestamp("2024-05-14", tz="UTC")
    assert board.period.previous_end == pd.Timestamp("2024-05-14 00:10", tz="UTC")
    assert board.previous["coin_in"] == pytest.approx(3.0)
    assert [f for f, _, _ in source.reads if f != "raw"] == ["h"]  # today only: no whole hour


def test_longer_periods_read_daily_rollups_and_hours_only_for_the_cut() -> None:
    source = fleet()
    board = build_dashboard(source, registry(), report_period("this_week", NOW))
    assert board.kpis["coin_in"] == 460.0
    assert board.over_time["bucket"].dt.day.tolist() == [13, 14, 15]
    assert board.cabinets.set_index("cabinet")["trend"]["Buffalo 1"] == [25.0, 30.0, 10.0]
    week = pd.Timestamp("2024-05-13", tz="UTC")
    assert source.reads == [
        ("D", week - pd.Timedelta(days=7), week - pd.Timedelta(days=5)),
        ("h", week - pd.Timedelta(days=5), pd.Timestamp("2024-05-08 12:00", tz="UTC")),
        ("D", week, week + pd.Timedelta(days=7)),
        (
            "raw",
            pd.Timestamp("2024-05-08 11:45", tz="UTC"),
            pd.Timestamp("2024-05-08 12:30:01", tz="UTC"),
        ),
    ]
    custom = report_period("custom", NOW, first_day=date(2024, 5, 13), last_day=date(2024, 5, 14))
    source.reads.clear()
    build_dashboard(source, registry(), custom)
    assert [f for f, _, _ in source.reads] == ["h"]  # two days: hourly, previous and period
    three = report_period("custom", NOW, first_day=date(2024, 5, 12), last_day=date(2024, 5, 14))
    source.reads.clear()
    assert build_dashboard(source, registry(), three).kpis["coin_in"] == 450.0
    assert source.reads == [("D", pd.Timestamp("2024-05-09", tz="UTC"), three.end)]


def test_data_quality_counts_silent_cabinets_flags_and_failed_readings() -> None:
    quality = build_dashboard(fleet(), registry(), report_period("yesterday", NOW)).quality
    assert quality.silent == ["Quiet one"]
    assert quality.ram_clears == 1
    assert quality.rollovers == 0
    assert quality.failed_readings == 2  # the unregistered board's failure is not ours
    table = quality.per_cabinet.set_index("cabinet")
    assert table.loc["Buffalo 1", "intervals"] == 12
    assert table.loc["Quiet one", "failed_readings"] == 1
    assert bool(table.loc["Quiet one", "no_reading"])
    assert table.loc["Dragon 7", "last_reading"] == pd.Timestamp("2024-05-14 21:00", tz="UTC")


def test_heatmap_of_coin_in_by_weekday_and_hour() -> None:
    source = fleet()
    grid = coin_in_heatmap(source, report_period("this_week", NOW))
    assert grid.shape == (7, 24)
    assert grid.loc["Tue", 10] == 100.0
    assert grid.loc["Tue", 20] == 300.0
    assert grid.loc["Mon", 9] == 50.0
    assert grid.to_numpy().sum() == 460.0
    assert [f for f, _, _ in source.reads] == ["h"] * 3  # a day at a time, none after now
    vip = coin_in_heatmap(source, report_period("this_week", NOW), Scope.of("vip"))
    assert vip.to_numpy().sum() == 300.0


class LocationSource(FakeSource):
    """A FakeSource that also keeps the location-hourly coin in (from `since` on)."""

    def __init__(self, hours: list[dict[str, Any]], since: str | None = None) -> None:
        super().__init__(hours)
        places = location_hourly_frame(self.hourly)
        self.places = places if since is None else places[places["bucket"] >= since]
        self.location_reads: list[tuple[pd.Timestamp, pd.Timestamp, list[str] | None]] = []

    def location_hourly(
        self,
        start: datetime,
        end: datetime,
        location_ids: Iterable[str] | None = None,
        *,
        tz: str = "UTC",
    ) -> pd.DataFrame:
        wanted = None if location_ids is None else list(location_ids)
        self.location_reads.append((pd.Timestamp(start), pd.Timestamp(end), wanted))
        rows = self.places[(self.places["bucket"] >= start) & (self.places["bucket"] < end)]
        return rows[rows["location_id"].isin(wanted)] if wanted is not None else rows


def test_the_heatmap_of_locations_reads_location_hours_and_equals_the_cabinets_one() -> None:
    week = report_period("this_week", NOW)
    rows = fleet().hourly.to_dict("records")
    for scope in (Scope(), Scope.of("vip"), Scope.of(["main", "vip"])):
        source = LocationSource(rows)
        expected = coin_in_heatmap(fleet(), week, scope)
        pd.testing.assert_frame_equal(coin_in_heatmap(source, week, scope), expected)
        assert len(source.location_reads) == 1
        assert source.location_reads[0][2] == (list(scope.location_ids) or None)
        first = source.places["bucket"].min() if not scope.location_ids else None
        if first is not None:  # only the hours before the first location row, per cabinet
            assert source.reads == [("h", week.start, first)]
    assert coin_in_heatmap(LocationSource(rows), week).loc["Tue", 20] == 300.0
    chosen = LocationSource(rows)
    grid = coin_in_heatmap(chosen, week, Scope.of(cabinet_ids="b1"))
    assert grid.to_numpy().sum() == 300.0 and not chosen.location_reads, "cabinets: rollups"


def test_the_heatmap_takes_older_hours_from_the_hourly_rollups() -> None:
    week = report_period("this_week", NOW)
    rows = fleet().hourly.to_dict("records")
    expected = coin_in_heatmap(fleet(), week)
    late = LocationSource(rows, since="2024-05-14 00:00")  # Monday's hours predate them
    pd.testing.assert_frame_equal(coin_in_heatmap(late, week), expected)
    assert late.reads[-1][2] == pd.Timestamp("2024-05-14 10:00", tz="UTC")
    none = LocationSource(rows, since="2030-01-01")
    pd.testing.assert_frame_equal(coin_in_heatmap(none, week), expected)
    assert [f for f, _, _ in none.reads] == ["h"] * 3
    assert coin_in_heatmap(LocationSource([]), week).to_numpy().sum() == 0


def test_an_empty_period_says_so() -> None:
    board = build_dashboard(FakeSource([]), registry(), report_period("today", NOW))
    assert board.empty
    assert board.kpis["coin_in"] == 0.0
    assert board.kpis["hold_pct"] is None
    assert board.over_time.empty and board.top.empty
    assert sorted(board.quality.silent) == ["Buffalo 1", "Dragon 7", "Quiet one"]
    assert coin_in_heatmap(FakeSource([]), report_period("today", NOW)).to_numpy().sum() == 0


class DigestSource(FakeSource):
    """A FakeSource that also keeps daily digests (of the days from `since`, but `hole`)."""

    def __init__(self, since: str | None = None, hole: str | None = None) -> None:
        super().__init__(fleet().hourly.to_dict("records"))
        days = self.daily()
        if since is not None:
            days = days[days["bucket"] >= pd.Timestamp(since, tz="UTC")]
        if hole is not None:
            days = days[days["bucket"] != pd.Timestamp(hole, tz="UTC")]
        self.digests = days
        self.digest_reads: list[tuple[pd.Timestamp, pd.Timestamp]] = []

    def daily_digest(self, start: datetime, end: datetime, *, tz: str = "UTC") -> pd.DataFrame:
        self.digest_reads.append((pd.Timestamp(start), pd.Timestamp(end)))
        inside = (self.digests["bucket"] >= start) & (self.digests["bucket"] < end)
        return self.digests[inside].reset_index(drop=True)


def assert_same_dashboard(one: Any, other: Any) -> None:
    assert one.kpis == other.kpis and one.previous == other.previous
    assert one.change == other.change
    for name in ("cabinets", "over_time", "by_location", "top", "bottom", "hold"):
        pd.testing.assert_frame_equal(getattr(one, name), getattr(other, name))
    assert one.quality.silent == other.quality.silent
    assert one.quality.readings == other.quality.readings
    assert one.rows_read == other.rows_read


@pytest.mark.parametrize("scope", [Scope(), Scope.of("vip"), Scope.of(cabinet_ids="a1")])
def test_whole_days_come_from_the_daily_digests_with_the_same_numbers(scope: Scope) -> None:
    month = report_period("custom", NOW, first_day=date(2024, 5, 1), last_day=date(2024, 5, 14))
    for period in (report_period("this_week", NOW), month):
        expected = build_dashboard(fleet(), registry(), period, scope)
        digests = DigestSource()
        assert_same_dashboard(build_dashboard(digests, registry(), period, scope), expected)
        assert digests.digest_reads  # whole days: digests, the cut of a day: hours
        days = digests.daily()["bucket"]
        for freq, first, last in digests.reads:  # daily rollups only of days without play
            assert freq == "h" or not ((days >= first) & (days < last)).any()


def test_days_without_a_digest_are_read_from_the_daily_rollups() -> None:
    month = report_period("custom", NOW, first_day=date(2024, 5, 1), last_day=date(2024, 5, 14))
    expected = build_dashboard(fleet(), registry(), month)
    assert expected.kpis["coin_in"] == 450.0
    april = pd.Timestamp("2024-04-17", tz="UTC")  # the compared period's first day
    monday, tuesday = pd.Timestamp("2024-05-13", tz="UTC"), pd.Timestamp("2024-05-14", tz="UTC")
    older = DigestSource(since="2024-05-14")  # digests began on Tuesday
    assert_same_dashboard(build_dashboard(older, registry(), month), expected)
    assert older.reads == [("D", april, tuesday)]
    holed = DigestSource(hole="2024-05-14")  # a day the collector has not flushed yet
    assert_same_dashboard(build_dashboard(holed, registry(), month), expected)
    assert holed.reads == [("D", april, monday), ("D", tuesday, month.end)]


def test_actual_against_theoretical_hold_per_cabinet() -> None:
    par = registry().assign(par=[10.0, 5.0, None])
    board = build_dashboard(fleet(), par, report_period("yesterday", NOW))
    table = board.cabinets.set_index("cabinet")
    assert table.loc["Buffalo 1", "meter_win"] == pytest.approx(100 - 80)
    assert table.loc["Buffalo 1", "meter_hold_pct"] == pytest.approx(20.0)
    assert table.loc["Buffalo 1", "expected_win"] == pytest.approx(10.0)  # $100 x 10 %
    assert table.loc["Buffalo 1", "win_variance"] == pytest.approx(10.0)
    assert table.loc["Dragon 7", "expected_win"] == pytest.approx(15.0)
    assert table.loc["Dragon 7", "meter_win"] == pytest.approx(300 - 270)
    assert not table["unusual"].any()  # 200 and 60 games: any hold is within chance
    assert board.with_par is not None
    assert board.with_par.cabinets == 2
    assert board.with_par.expected_win == pytest.approx(25.0)
    assert board.with_par.theoretical_hold_pct == pytest.approx(25 / 400 * 100)
    assert board.with_par.meter_hold_pct == pytest.approx(50 / 400 * 100)
    assert build_dashboard(fleet(), registry(), report_period("yesterday", NOW)).with_par is None


def test_a_cabinet_far_from_par_over_many_games_is_marked() -> None:
    source = FakeSource(
        [
            hour("a1", "2024-05-14 10:00", coin_in=10_000, coin_out=9_900, games_played=10**6),
            hour("b1", "2024-05-14 10:00", coin_in=10_000, coin_out=9_300, games_played=10**6),
        ]
    )
    par = registry().assign(par=[8.0, 8.0, None])
    board = build_dashboard(source, par, report_period("yesterday", NOW))
    assert board.unusual == ["Buffalo 1"]  # 1 % against 8 %, band 3 points; Dragon 7 at 7 %
