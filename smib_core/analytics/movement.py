"""Meter movement: cumulative SAS meter snapshots in, per-interval differences out.

Pure pandas/numpy, vectorised (no per-row Python), no I/O.

Snapshot frame (input; one row per *successful* meter reading):

    relay         str        the board that read the machine
    cabinet       str        the machine; meters belong to it (histories are per cabinet)
    location      str        where the cabinet stands
    at            datetime   when the reading was taken (tz-aware UTC; naive = UTC)
    denomination  float      money per credit (the cabinet's accounting denomination)
    "0000", ...   int/float  one column per SAS meter code, the meter's cumulative
                             value; NaN where the machine did not report it. A code
                             missing altogether is treated as all NaN.
    "0000_size"   int        optional, per code: the SAS size byte of that reading.

Only the cumulative meters of `MOVEMENT_METERS` are differenced (000C, current
credits, is a level, not a counter). Rows with the same cabinet and `at` are kept
once (the last one). Extra columns are ignored.

Movement frame (output; one row per cabinet per interval between two consecutive
readings of that cabinet, sorted by cabinet then end):

    relay, cabinet, location   from the reading that ends the interval
    start, end                 the two readings' times (tz-aware UTC); interval (start, end]
    denomination               from the reading that ends the interval
    coin_in, coin_out, jackpot, cancelled, handpaid_cancelled, drop, won_credits
                               movement in credits (float64)
    games_played, games_won    movement in games (float64)
    rollover, ram_clear, absurd  bool flags (see below)

A meter's movement is NaN when there is no earlier value of it for that cabinet. A
meter missing (NaN) in one reading does not break its history: the next value is
differenced against the last value seen, so a missed reading or a 20-minute board
restart leaves no hole and nothing is counted twice.

Capacity: a meter of `d` digits wraps at 10**d. The digits come, in this order,
from the `<code>_size` column of the reading *before* the fall (size x 2, when > 0),
from the `digits` mapping {code: digits}, else `DEFAULT_DIGITS` (8, a 4-byte meter).

A fall (next < previous) is:

- a **rollover** when the previous value is in the top part of the capacity
  (>= `rollover_top` x 10**d, 90% by default, and < 10**d) and the new one in the
  bottom part (< (1 - `rollover_top`) x 10**d): movement = next + 10**d - previous,
  flagged `rollover`. 99999990 -> 15 on 8 digits moves 25.
- otherwise a **RAM clear** (the machine's memory reset: SAS meters restart from 0):
  the interval is flagged `ram_clear` and every meter's movement is its new value,
  the play since the clear (counted, not zeroed; the play between the last reading
  before the clear and the clear itself is unknown and lost). The new values are the
  baseline the next interval is measured from. The rate check below still applies
  to those values, so a machine that restarts from some large value is set aside.

An interval is **absurd** when a meter moves more than the policy allows for its
length: `max_credits_per_second` (10 000) or `max_games_per_second` (5) times the
interval's seconds, counted as at least `min_seconds` (60) so that a bill or a
cash-out inside a short interval is not taken for a fault. A meter that read the same
value in the readings before the interval may have moved any time since it last
changed (a reading that repeats the one before it may be a replay of it, stamped
later: PROTOCOL.md gives a reply no time), so its seconds count from the first reading
of that value, `repeat_reach_s` (an hour) at most before the interval. Jackpots (0002) and total
won (0022) are exempt from the rate: a jackpot is a discrete award of any size (a
$100,000 progressive on a 1-cent machine is 10,000,000 credits in one interval).
They are checked by SAS's identity instead: total won = coin out + jackpots, so an
interval whose 0022 movement differs from its 0001 + 0002 movement (all three known)
is absurd. An absurd interval is flagged and contributes 0 for every meter: a reading
that is wrong in one meter is not trusted for the others, and the meters of an
interval never disagree (games without coin in).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from smib_core.analytics.periods import to_utc
from smib_core.errors import InvalidInput

MOVEMENT_METERS: dict[str, str] = {
    "coin_in": "0000",
    "coin_out": "0001",
    "jackpot": "0002",
    "handpaid_cancelled": "0003",
    "cancelled": "0004",
    "games_played": "0005",
    "games_won": "0006",
    "won_credits": "0022",
    "drop": "0024",
}
COUNT_METERS: tuple[str, ...] = ("games_played", "games_won")
AWARD_METERS: tuple[str, ...] = ("jackpot", "won_credits")  # checked by identity, not rate
CREDIT_METERS: tuple[str, ...] = tuple(m for m in MOVEMENT_METERS if m not in COUNT_METERS)
FLAGS: tuple[str, ...] = ("rollover", "ram_clear", "absurd")
IDENTITY: tuple[str, ...] = ("relay", "cabinet", "location")
MOVEMENT_COLUMNS: tuple[str, ...] = (
    *IDENTITY,
    "start",
    "end",
    "denomination",
    *MOVEMENT_METERS,
    *FLAGS,
)
DEFAULT_DIGITS = 8
_MAX_DIGITS = 18  # 10**18 still fits an int64; SAS meters are at most 9 bytes

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MovementPolicy:
    """How falls and jumps are judged (see the module docstring)."""

    rollover_top: float = 0.9
    max_credits_per_second: float = 10_000.0
    max_games_per_second: float = 5.0
    min_seconds: float = 60.0
    repeat_reach_s: float = 3_600.0


@dataclass(frozen=True, slots=True)
class _Order:
    """Readings sorted by (cabinet, at), duplicates dropped, and the intervals they close.

    Arrays named for readings are in sorted order; arrays named for intervals have
    one entry per interval, i.e. per reading that is not its cabinet's first.
    """

    rows: Ints | None  # input position of each sorted reading; None: input already sorted
    at_ns: Ints  # reading times
    group_start: Ints  # per reading: position of its cabinet's first reading
    end_pos: Ints  # per interval: position of the reading that closes it
    seconds: Floats  # per interval: its length, at least the policy's minimum

    def pick(self, column: pd.Series) -> npt.NDArray[np.generic]:
        values = column.to_numpy()
        return values if self.rows is None else values[self.rows]

    def end_rows(self) -> Ints:
        """Input positions of the readings that close the intervals."""
        return self.end_pos if self.rows is None else self.rows[self.end_pos]


def _order(snapshots: pd.DataFrame, min_seconds: float) -> _Order:
    cabinet_codes, _ = pd.factorize(snapshots["cabinet"], sort=True)
    at_ns = to_utc(snapshots["at"]).to_numpy(dtype="datetime64[ns]").view(np.int64)
    same_cabinet = cabinet_codes[1:] == cabinet_codes[:-1]
    in_order = bool(
        np.all(cabinet_codes[1:] >= cabinet_codes[:-1])
        and np.all(~same_cabinet | (at_ns[1:] > at_ns[:-1]))
    )
    rows: Ints | None = None
    cab, at = cabinet_codes, at_ns
    if not in_order:
        sorted_rows = np.lexsort((at_ns, cabinet_codes))
        cab, at = cabinet_codes[sorted_rows], at_ns[sorted_rows]
        later_same = np.zeros(len(sorted_rows), dtype=bool)
        later_same[:-1] = (cab[1:] == cab[:-1]) & (at[1:] == at[:-1])
        rows = sorted_rows[~later_same].astype(np.int64)
        cab, at = cab[~later_same], at[~later_same]
    first = np.ones(len(cab), dtype=bool)
    first[1:] = cab[1:] != cab[:-1]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(cab)), 0))
    end_pos = np.flatnonzero(~first)
    seconds = np.maximum((at[end_pos] - at[end_pos - 1]) / 1e9, min_seconds)
    return _Order(rows, at.astype(np.int64), group_start, end_pos, seconds)


def _meter_values(snapshots: pd.DataFrame, code: str, order: _Order) -> tuple[Ints, Bools]:
    """A meter's values in sorted order (int64, 0 where unknown) and where known."""
    n = len(order.at_ns)
    if code not in snapshots.columns:
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    column = pd.to_numeric(snapshots[code])
    if pd.api.types.is_integer_dtype(column.dtype) and not column.hasnans:
        values = order.pick(column).astype(np.int64, copy=False)
        return values, values >= 0
    floats = order.pick(column.astype("float64")).astype(np.float64, copy=False)
    known = ~np.isnan(floats) & (floats >= 0)
    return np.where(known, floats, 0).astype(np.int64), known


def _unchanged_seconds(values: Ints, order: _Order, policy: MovementPolicy) -> Floats:
    """Per interval, the seconds since the meter last changed before it (its first
    reading of the value the interval starts from), `repeat_reach_s` back at most, and
    never less than the interval or `min_seconds`."""
    n = len(values)
    positions = np.arange(n)
    changed = np.ones(n, dtype=bool)
    changed[1:] = values[1:] != values[:-1]
    changed |= order.group_start == positions
    since = np.maximum.accumulate(np.where(changed, positions, 0))[order.end_pos - 1]
    ends = order.at_ns[order.end_pos]
    interval = (ends - order.at_ns[order.end_pos - 1]) / 1e9
    unchanged = np.minimum(
        (ends - order.at_ns[since]) / 1e9, np.maximum(interval, policy.repeat_reach_s)
    )
    return np.maximum(np.maximum(unchanged, interval), policy.min_seconds)


def _capacity(
    snapshots: pd.DataFrame, code: str, order: _Order, prev: Ints, digits: Mapping[str, int]
) -> Ints:
    """10**digits of the meter as it was at the readings `prev`."""
    default = min(int(digits.get(code, DEFAULT_DIGITS)), _MAX_DIGITS)
    cap = np.full(len(prev), 10**default, dtype=np.int64)
    size_column = f"{code}_size"
    if size_column in snapshots.columns:
        sizes = order.pick(pd.to_numeric(snapshots[size_column]).astype("float64"))[prev]
        row_digits = np.minimum(np.nan_to_num(sizes).astype(np.int64) * 2, _MAX_DIGITS)
        cap = np.where(row_digits > 0, np.power(10, row_digits, dtype=np.int64), cap)
    return cap


@dataclass(frozen=True, slots=True)
class _Work:
    """Per-interval arrays shared by the meters: fall flags accumulate over the meters,
    scratch buffers are reused (fewer fresh 100 MB arrays on a 13M-reading history)."""

    rollover: Bools
    fell: Bools  # a fall that is not a rollover, in any meter
    before: Ints
    now: Ints
    delta: Ints
    test: Bools
    limits: dict[str, Floats]  # most a meter may move per interval, by meter

    @classmethod
    def of(cls, order: _Order, policy: MovementPolicy) -> _Work:
        n = len(order.end_pos)
        credits = policy.max_credits_per_second * order.seconds
        games = policy.max_games_per_second * order.seconds
        limits = {m: games if m in COUNT_METERS else credits for m in MOVEMENT_METERS}
        return cls(
            rollover=np.zeros(n, dtype=bool),
            fell=np.zeros(n, dtype=bool),
            before=np.empty(n, dtype=np.int64),
            now=np.empty(n, dtype=np.int64),
            delta=np.empty(n, dtype=np.int64),
            test=np.empty(n, dtype=bool),
            limits=limits,
        )


def _meter_movement(
    snapshots: pd.DataFrame,
    name: str,
    order: _Order,
    digits: Mapping[str, int],
    policy: MovementPolicy,
    work: _Work,
    out: Floats,
    since_clear: Floats,
) -> Floats | None:
    """Write one meter's movement per interval into `out` and its value at the end of
    the interval into `since_clear` (both NaN where unknown), add its rollovers and
    falls to `work`'s flags; returns the most it may move per interval (None: no rate
    limit, an award meter)."""
    code = MOVEMENT_METERS[name]
    values, known = _meter_values(snapshots, code, order)
    ends = order.end_pos
    has_prev: Bools | None = None
    if known.all():  # the usual case: every reading has the meter
        prev = ends - 1
        limit = work.limits[name] / order.seconds * _unchanged_seconds(values, order, policy)
    else:  # difference against the cabinet's last reading that had it
        last_known = np.maximum.accumulate(np.where(known, np.arange(len(values)), -1))
        prev = last_known[ends - 1]
        has_prev = known[ends] & (prev >= order.group_start[ends])
        prev = np.where(has_prev, prev, 0)
        seconds = np.maximum((order.at_ns[ends] - order.at_ns[prev]) / 1e9, policy.min_seconds)
        limit = work.limits[name] / order.seconds * seconds
    before = np.take(values, prev, out=work.before)
    now = np.take(values, ends, out=work.now)
    delta = np.subtract(now, before, out=work.delta)
    falls = np.less(delta, 0, out=work.test)
    if has_prev is not None:
        falls &= has_prev
    fallen = np.flatnonzero(falls)
    if len(fallen):
        cap = _capacity(snapshots, code, order, prev[fallen], digits)
        top = policy.rollover_top
        was = before[fallen]
        wrapped = (was >= top * cap) & (was < cap) & (now[fallen] < (1 - top) * cap)
        work.rollover[fallen[wrapped]] = True
        work.fell[fallen[~wrapped]] = True
        delta[fallen[wrapped]] += cap[wrapped]
    out[:] = delta
    since_clear[:] = now
    if has_prev is not None:
        out[~has_prev] = np.nan
        since_clear[~known[ends]] = np.nan
    return None if name in AWARD_METERS else np.broadcast_to(limit, out.shape)


def _absurd(moves: Floats, limits: list[Floats | None]) -> Bools:
    """Intervals where a meter moves past its rate limit, or where total won (0022)
    is not coin out (0001) + jackpots (0002)."""
    absurd = np.zeros(moves.shape[1], dtype=bool)
    with np.errstate(invalid="ignore"):
        for row, limit in zip(moves, limits, strict=True):
            if limit is not None:
                absurd |= row > limit
        names = list(MOVEMENT_METERS)
        won, out, jackpot = (moves[names.index(n)] for n in ("won_credits", "coin_out", "jackpot"))
        absurd |= np.abs(won - (out + jackpot)) > 0.5  # NaN (a meter unknown) compares False
    return absurd


def _empty_movement() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in MOVEMENT_COLUMNS})
    for column in IDENTITY:
        frame[column] = pd.Series(dtype="str")
    for column in ("start", "end"):
        frame[column] = pd.Series(dtype="datetime64[ns, UTC]")
    for column in FLAGS:
        frame[column] = pd.Series(dtype="bool")
    return frame


def meter_movement(
    snapshots: pd.DataFrame,
    *,
    digits: Mapping[str, int] | None = None,
    policy: MovementPolicy | None = None,
) -> pd.DataFrame:
    """The movement frame of a snapshot frame (see the module docstring).

    Incremental use: pass the new readings plus, per cabinet, the last reading before
    them; the intervals that come out are exactly those ending at a new reading, with
    the same numbers as over the whole history (except that a meter missing from that
    baseline reading has no movement until its next value).
    """
    missing = [c for c in (*IDENTITY, "at", "denomination") if c not in snapshots.columns]
    if missing:
        raise InvalidInput(f"the snapshot frame lacks columns {missing}")
    if snapshots.empty:
        return _empty_movement()
    policy = policy or MovementPolicy()
    order = _order(snapshots, policy.min_seconds)
    moves = np.empty((len(MOVEMENT_METERS), len(order.end_pos)), dtype=np.float64)
    since_clear = np.empty_like(moves)
    work = _Work.of(order, policy)
    limits = [
        _meter_movement(
            snapshots, name, order, digits or {}, policy, work, moves[i], since_clear[i]
        )
        for i, name in enumerate(MOVEMENT_METERS)
    ]
    rollover, ram_clear = work.rollover, work.fell
    cleared = np.flatnonzero(ram_clear)
    if len(cleared):  # play since the clear: the meters' new values
        moves[:, cleared] = since_clear[:, cleared]
    absurd = _absurd(moves, limits)
    excluded = np.flatnonzero(absurd)
    if len(excluded):
        kept = moves[:, excluded]
        moves[:, excluded] = np.where(np.isnan(kept), np.nan, 0.0)

    # One float block for the meters (no copy), the other columns put around it.
    frame = pd.DataFrame(moves.T, columns=list(MOVEMENT_METERS), copy=False)
    end_rows = order.end_rows()
    at = pd.DatetimeIndex(order.at_ns.view("datetime64[ns]")).tz_localize("UTC")
    denomination = pd.to_numeric(snapshots["denomination"]).astype("float64").to_numpy()
    front: dict[str, Any] = {name: snapshots[name].array.take(end_rows) for name in IDENTITY}
    front["start"] = at[order.end_pos - 1]
    front["end"] = at[order.end_pos]
    front["denomination"] = denomination[end_rows]
    for position, (name, values) in enumerate(front.items()):
        frame.insert(position, name, values)
    frame["rollover"] = rollover
    frame["ram_clear"] = ram_clear
    frame["absurd"] = absurd
    return frame
