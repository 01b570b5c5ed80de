"""Meter movement from hand-made snapshot histories: increments, rollover, RAM clear,
absurd jumps, missing meters, gaps, order and duplicates. Every test checks numbers.

`reading` and `snapshot_frame` build snapshot frames for the other analytics tests too.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest

from smib_core.analytics.movement import (
    FLAGS,
    MOVEMENT_COLUMNS,
    MOVEMENT_METERS,
    MovementPolicy,
    meter_movement,
)
from smib_core.errors import InvalidInput

T0 = pd.Timestamp("2024-05-13 08:00", tz="UTC")  # a Monday


def reading(
    cabinet: str,
    minute: float,
    *,
    denomination: float = 0.01,
    location: str = "Floor A",
    relay: str | None = None,
    start: pd.Timestamp = T0,
    meters: Mapping[str, float | None] | None = None,
    **named: float | None,
) -> dict[str, object]:
    """One snapshot row; meters by movement name (coin_in=...), unnamed meters are 0,
    except total won, which is coin out + jackpots (SAS) unless named."""
    meters = {**(meters or {}), **named}
    if "won_credits" not in meters:
        out, jackpot = meters.get("coin_out", 0), meters.get("jackpot", 0)
        meters["won_credits"] = None if out is None or jackpot is None else out + jackpot
    unknown = set(meters) - set(MOVEMENT_METERS)
    assert not unknown, unknown
    row: dict[str, object] = {
        "relay": relay or f"relay-{cabinet}",
        "cabinet": cabinet,
        "location": location,
        "at": start + pd.Timedelta(minutes=minute),
        "denomination": denomination,
    }
    for name, code in MOVEMENT_METERS.items():
        row[code] = meters.get(name, 0)
    row["000C"] = 0  # current credits: a level, never differenced
    return row


def snapshot_frame(*rows: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


# --- normal play -----------------------------------------------------------------------


def test_normal_increments_are_differences_of_consecutive_readings() -> None:
    frame = snapshot_frame(
        reading("C1", 0, coin_in=1000, games_played=10, drop=500),
        reading("C1", 5, coin_in=1150, games_played=13, drop=700),
        reading("C1", 10, coin_in=1175, games_played=14, drop=700, relay="relay-new"),
    )
    movement = meter_movement(frame)
    assert list(movement.columns) == list(MOVEMENT_COLUMNS)
    assert movement["coin_in"].tolist() == [150.0, 25.0]
    assert movement["games_played"].tolist() == [3.0, 1.0]
    assert movement["drop"].tolist() == [200.0, 0.0]
    assert movement["coin_out"].tolist() == [0.0, 0.0]
    assert movement["start"].tolist() == [T0, T0 + pd.Timedelta(minutes=5)]
    assert movement["end"].tolist() == [T0 + pd.Timedelta(minutes=5), T0 + pd.Timedelta(minutes=10)]
    assert movement["relay"].tolist() == ["relay-C1", "relay-new"]  # from the closing reading
    assert movement["denomination"].tolist() == [0.01, 0.01]
    assert not movement[list(FLAGS)].to_numpy().any()


def test_each_cabinet_has_its_own_history_and_first_readings_close_nothing() -> None:
    frame = snapshot_frame(
        reading("C2", 0, coin_in=50),
        reading("C1", 0, coin_in=1000),
        reading("C2", 5, coin_in=80),
        reading("C1", 5, coin_in=1010),
        reading("C3", 5, coin_in=7),  # a single reading: no interval yet
    )
    movement = meter_movement(frame)
    assert movement["cabinet"].tolist() == ["C1", "C2"]
    assert movement["coin_in"].tolist() == [10.0, 30.0]


def test_unsorted_input_and_a_duplicate_reading_give_the_sorted_answer() -> None:
    rows = [
        reading("C1", 0, coin_in=100),
        reading("C1", 5, coin_in=130),
        reading("C1", 10, coin_in=200),
    ]
    shuffled = snapshot_frame(rows[2], rows[0], rows[1], rows[1])  # QoS 1 duplicate
    movement = meter_movement(shuffled)
    assert movement["coin_in"].tolist() == [30.0, 70.0]
    assert len(movement) == 2


def test_naive_times_are_taken_as_utc() -> None:
    frame = snapshot_frame(reading("C1", 0, coin_in=1), reading("C1", 5, coin_in=4))
    frame["at"] = frame["at"].dt.tz_localize(None)
    movement = meter_movement(frame)
    assert movement["end"].iloc[0] == T0 + pd.Timedelta(minutes=5)
    assert str(movement["end"].dt.tz) == "UTC"
    assert movement["coin_in"].iloc[0] == 3.0


# --- rollover ----------------------------------------------------------------------------


def test_rollover_of_a_4_byte_meter_counts_the_wrap_and_is_flagged() -> None:
    frame = snapshot_frame(
        reading("C1", 0, coin_in=99_999_990, games_played=5),
        reading("C1", 5, coin_in=15, games_played=6),
        reading("C1", 10, coin_in=40, games_played=7),
    )
    movement = meter_movement(frame)
    assert movement["coin_in"].tolist() == [25.0, 25.0]
    assert movement["games_played"].tolist() == [1.0, 1.0]
    assert movement["rollover"].tolist() == [True, False]
    assert movement["ram_clear"].tolist() == [False, False]


def test_capacity_from_the_size_column_or_the_digits_mapping() -> None:
    frame = snapshot_frame(
        reading("C1", 0, coin_in=9_999_999_990), reading("C1", 5, coin_in=15)
    )  # a 5-byte (10-digit) meter
    sized = frame.assign(**{"0000_size": [5, 5]})
    assert meter_movement(sized)["coin_in"].tolist() == [25.0]
    assert meter_movement(sized)["rollover"].tolist() == [True]
    assert meter_movement(frame, digits={"0000": 10})["coin_in"].tolist() == [25.0]
    # Read as an 8-digit meter, 9999999990 is not near a top it could wrap past:
    # the fall is a RAM clear and counts the play since the clear.
    assert meter_movement(frame)["coin_in"].tolist() == [15.0]
    assert meter_movement(frame)["ram_clear"].tolist() == [True]


def test_a_fall_from_near_the_top_to_the_middle_is_not_a_rollover() -> None:
    frame = snapshot_frame(
        reading("C1", 0, coin_in=99_999_990), reading("C1", 5, coin_in=50_000_000)
    )
    movement = meter_movement(frame)
    assert movement["rollover"].tolist() == [False]
    assert movement["ram_clear"].tolist() == [True]
    # 50,000,000 credits "since the clear" in 5 minutes is past the rate: set aside.
    assert movement["absurd"].tolist() == [True]
    assert movement["coin_in"].tolist() == [0.0]


# --- RAM clear ---------------------------------------------------------------------------


def test_ram_clear_is_flagged_counts_the_play_since_and_starts_a_new_baseline() -> None:
    frame = snapshot_frame(
        reading("C1", 0, coin_in=1000, games_played=100, drop=900),
        reading("C1", 5, coin_in=5, games_played=1, drop=910),  # drop did not fall
        reading("C1", 10, coin_in=30, games_played=3, drop=960),
    )
    movement = meter_movement(frame)
    assert movement["ram_clear"].tolist() == [True, False]
    assert movement["absurd"].tolist() == [False, False]
    assert movement["coin_in"].tolist() == [5.0, 25.0]  # the meters since the clear
    assert movement["games_played"].tolist() == [1.0, 2.0]
    assert movement["drop"].tolist() == [910.0, 50.0]  # every meter restarted at the clear
    assert (movement[list(MOVEMENT_METERS)] >= 0).all().all()


def test_no_negative_movement_ever_comes_out() -> None:
    rng = np.random.default_rng(7)
    values = rng.integers(0, 100_000_000, size=200)  # meters jumping anywhere
    frame = snapshot_frame(*[reading("C1", 5 * i, coin_in=int(v)) for i, v in enumerate(values)])
    movement = meter_movement(frame)
    assert len(movement) == 199
    assert (movement["coin_in"] >= 0).all()
    falls = int((np.diff(values) < 0).sum())
    assert int(movement["ram_clear"].sum() + movement["rollover"].sum()) == falls


# --- absurd jumps ------------------------------------------------------------------------


def test_absurd_jump_is_excluded_and_flagged() -> None:
    frame = snapshot_frame(
        reading("C1", 0, coin_in=1_000, games_played=10),
        reading("C1", 5, coin_in=90_001_000, games_played=11),  # 90M credits in 5 minutes
        reading("C1", 10, coin_in=90_001_100, games_played=12),
    )
    movement = meter_movement(frame)
    assert movement["absurd"].tolist() == [True, False]
    assert movement["coin_in"].tolist() == [0.0, 100.0]
    assert movement["games_played"].tolist() == [0.0, 1.0]
    assert movement["ram_clear"].tolist() == [False, False]


def test_absurd_limits_follow_the_policy_and_the_interval_length() -> None:
    # 500 games in 5 minutes is 1.67/s: fine by default (5/s), absurd at 1/s.
    frame = snapshot_frame(
        reading("C1", 0, games_played=0, coin_in=0),
        reading("C1", 5, games_played=500, coin_in=1000),
    )
    assert meter_movement(frame)["absurd"].tolist() == [False]
    strict = MovementPolicy(max_games_per_second=1.0)
    movement = meter_movement(frame, policy=strict)
    assert movement["absurd"].tolist() == [True]
    assert movement["coin_in"].tolist() == [0.0]


def test_a_meters_rate_counts_from_when_it_last_changed_an_hour_back_at_most() -> None:
    # 400 games after a repeat stamped a minute before: 20 minutes of play, not 1.
    frame = snapshot_frame(
        reading("C1", 0, games_played=100),
        reading("C1", 19, games_played=100),  # a replay of the reading before, stamped later
        reading("C1", 20, games_played=500),
    )
    movement = meter_movement(frame)
    assert movement["absurd"].tolist() == [False, False]
    assert movement["games_played"].tolist() == [0.0, 400.0]
    strict = MovementPolicy(repeat_reach_s=0.0)  # the interval alone: 400 in 60 s is absurd
    assert meter_movement(frame, policy=strict)["absurd"].tolist() == [False, True]
    # Unchanged for two hours: the reach stops at one (5/s x 3600 s = 18,000 games).
    idle = snapshot_frame(
        reading("C1", 0, games_played=100),
        reading("C1", 119, games_played=100),
        reading("C1", 120, games_played=100 + 18_001),
    )
    assert meter_movement(idle)["absurd"].tolist() == [False, True]


def test_a_progressive_jackpot_is_an_award_not_an_absurd_jump() -> None:
    # $100,000 on a 1-cent machine: 10,000,000 credits in 5 minutes, past 10,000/s.
    frame = snapshot_frame(
        reading("C1", 0, coin_in=1_000, coin_out=800, jackpot=0),
        reading("C1", 5, coin_in=1_100, coin_out=850, jackpot=10_000_000),
    )
    movement = meter_movement(frame)
    assert movement["absurd"].tolist() == [False]
    assert movement["jackpot"].tolist() == [10_000_000.0]
    assert movement["won_credits"].tolist() == [10_000_050.0]
    assert movement["coin_in"].tolist() == [100.0]


def test_total_won_that_is_not_coin_out_plus_jackpots_is_absurd() -> None:
    frame = snapshot_frame(
        reading("C1", 0, coin_out=800, jackpot=0, won_credits=800),
        reading("C1", 5, coin_out=850, jackpot=10_000_000, won_credits=850),  # 0002 garbage
        reading("C1", 10, coin_out=900, jackpot=10_000_000, won_credits=900),
    )
    movement = meter_movement(frame)
    assert movement["absurd"].tolist() == [True, False]
    assert movement["jackpot"].tolist() == [0.0, 0.0]
    assert movement["coin_out"].tolist() == [0.0, 50.0]


def test_the_identity_is_not_checked_when_a_meter_is_missing() -> None:
    frame = snapshot_frame(
        reading("C1", 0, coin_out=800, jackpot=0, won_credits=None),
        reading("C1", 5, coin_out=850, jackpot=500, won_credits=None),
    )
    movement = meter_movement(frame)
    assert movement["absurd"].tolist() == [False]
    assert movement["jackpot"].tolist() == [500.0]


def test_a_big_bill_in_a_short_interval_is_not_absurd() -> None:
    # A $100 bill on a 1-cent cabinet is 10 000 credits; 10 s apart it is 1 000/s,
    # judged over the 60-second minimum, so it stays in.
    frame = snapshot_frame(reading("C1", 0, drop=0), reading("C1", 10 / 60, drop=10_000))
    movement = meter_movement(frame)
    assert movement["absurd"].tolist() == [False]
    assert movement["drop"].tolist() == [10_000.0]


# --- missing meters and gaps -------------------------------------------------------------


def test_missing_meter_is_bridged_to_its_last_known_value() -> None:
    frame = snapshot_frame(
        reading("C1", 0, coin_in=100, drop=10),
        reading("C1", 5, coin_in=None, drop=20),
        reading("C1", 10, coin_in=160, drop=30),
    )
    assert frame["0000"].dtype == np.float64
    movement = meter_movement(frame)
    assert movement["coin_in"].isna().tolist() == [True, False]
    assert movement["coin_in"].iloc[1] == 60.0  # 160 - 100: counted once, no hole
    assert movement["drop"].tolist() == [10.0, 10.0]
    assert movement["coin_in"].sum() == 60.0


def test_a_meter_the_machine_never_sends_has_no_movement() -> None:
    frame = snapshot_frame(reading("C1", 0, coin_in=1), reading("C1", 5, coin_in=2))
    frame = frame.drop(columns=["0024"])
    frame["0002"] = np.nan
    movement = meter_movement(frame)
    assert movement["drop"].isna().all()
    assert movement["jackpot"].isna().all()
    assert movement["coin_in"].tolist() == [1.0]


def test_board_restart_gap_is_counted_once() -> None:
    minutes = [0, 5, 10, 30, 35]  # the board restarted: 20 minutes without a reading
    coin_in = [1000, 1100, 1200, 1900, 1950]
    frame = snapshot_frame(
        *[reading("C1", m, coin_in=c) for m, c in zip(minutes, coin_in, strict=True)]
    )
    movement = meter_movement(frame)
    assert movement["coin_in"].tolist() == [100.0, 100.0, 700.0, 50.0]
    assert movement["start"].iloc[2] == T0 + pd.Timedelta(minutes=10)
    assert movement["end"].iloc[2] == T0 + pd.Timedelta(minutes=30)
    assert movement["coin_in"].sum() == 1950 - 1000


def test_large_meter_values_keep_their_precision() -> None:
    frame = snapshot_frame(
        reading("C1", 0, coin_in=123_456_789_012_345_678),
        reading("C1", 5, coin_in=123_456_789_012_345_679),
    )
    assert meter_movement(frame, digits={"0000": 18})["coin_in"].tolist() == [1.0]


# --- shapes ------------------------------------------------------------------------------


def test_empty_snapshots_give_an_empty_movement_frame() -> None:
    empty = snapshot_frame(reading("C1", 0)).iloc[:0]
    movement = meter_movement(empty)
    assert movement.empty
    assert list(movement.columns) == list(MOVEMENT_COLUMNS)


def test_missing_identity_columns_are_refused() -> None:
    frame = snapshot_frame(reading("C1", 0)).drop(columns=["denomination"])
    with pytest.raises(InvalidInput, match="denomination"):
        meter_movement(frame)
