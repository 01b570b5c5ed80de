"""What a meter reading counts as: the money rules, in one place.

Pure (stdlib only), no I/O. The collector asks `judge` about every good meter reply
before it stores it, and applies the verdict; the rollups (`movement.py`) and the
alerts then only see readings this module let through.

The protocol gives a reply no correlation id and no time (PROTOCOL.md, "What a board
does NOT promise"): an old reply delivered late looks exactly like a fresh one, and the
only clock is the server's. So the rules lean on the one promise a board does make:
its meters only grow, except at a rollover or a RAM clear.

Rules, in this order (`judge`), against the cabinet's `History` (its latest accepted
reading and the meter sets of its recent ones):

1. **clock behind**: stamped at or before the latest accepted reading. Refused
   (stored as a failed reading): time only moves forward per cabinet, so a closed hour
   or gaming day is never rewritten by a late stamp.
2. **stale**: the meters equal those of a reply heard from the board before the latest
   accepted reading (in the order the replies were judged, not by their stamps),
   *other than* the latest one, and either below the latest reading in some counter
   or heard before the latest rollover or RAM clear: a replay of an earlier reply.
   Dropped: it is not this request's answer. But the same meters answering
   `STALE_CONFIRM` (3) requests in a row are the machine's own (a RAM clear back to
   meters heard before, e.g. 0 after a test clear; a reply first heard refused as
   clock behind, placed by its wrong stamp after a takeover): they are judged by the
   rules below, as no replay answers request after request. Meters heard before but
   at or above the latest reading in every counter, with no fall since, are accepted:
   the meters only grow, so the play between the latest reading and them is counted
   once however it is split, and they may well be the machine's true meters (an idle
   machine whose reply was first heard refused as clock behind, or before a replay of
   the latest reading was accepted). An exact repeat of the latest reading moves
   nothing and is accepted (an idle machine reads the same twice; a replay of the
   latest reply is harmless either way); a suspect reading stays pending across it,
   and its own meters read again are no replay but its re-read. Every reply judged,
   booked or not, is `hear`d, so a replay is recognised even when its original was
   never booked.
3. A movement meter (`MOVEMENT_METERS`: counters, not 000C current credits) below the
   latest reading:
   - **rollover** when every meter that fell wrapped (it was in the top part of its
     capacity, now in the bottom part; `movement.py`'s rule): accepted;
   - **RAM clear** when it is the re-read of a *suspect* reading and reads low too,
     no meter below the suspect's (play since the clear only grows), and both look
     like a machine that restarted from 0: every counter (jackpots and total won
     excepted: awards of any size) at most what the machine could play since the latest
     reading at the movement maths' rates. Booked;
   - else **suspect**: not booked; read the board again. A real RAM clear reads low
     twice; a stale replay does not (the re-read answers with the true, higher meters,
     which are then simply accepted).
4. **suspect** too, not booked, when a counter rose faster than the movement maths'
   rates allow since the latest meters were booked (`jumped`): an old reply this
   process never heard (a takeover's, one that came with no request pending) replayed
   after a RAM clear or rollover. The re-read tells: the true meters are accepted; the
   same jump read again is booked (and the movement maths set the interval aside).
5. **accepted**, or **late** when the reply came after the request's timeout while no
   newer request to the board was pending (stored with its real arrival time).

`STORED` verdicts become good snapshots; the others are failed readings (or nothing).

A process that takes the collector over starts from what the previous holder stored:
its good readings and the replies it refused, which are stored (as failed readings) with
the meters they carried, so a replay of either is recognised by the new holder too
(taken in stamp order: one refused as clock behind is placed too early, so its meters
may pass for heard before a reading that came first; read three times in a row, they
are judged afresh, see rule 2).
An exact repeat of the latest reading stored later than the original compresses the
play since into the next interval; the movement maths checks a meter's rate from when it
last changed (`movement.py`), so that interval is not set aside.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from smib_core.analytics.movement import (
    AWARD_METERS,
    COUNT_METERS,
    DEFAULT_DIGITS,
    MOVEMENT_METERS,
    MovementPolicy,
)

COUNTERS: tuple[str, ...] = tuple(MOVEMENT_METERS.values())  # meters that only grow
RECENT_READINGS = 32  # meter sets remembered per cabinet: a replay up to this many readings old
# Answers in a row with the same earlier-heard meters that make them the machine's own
# (judged as any other reply then): a replay does not answer request after request.
STALE_CONFIRM = 3
POLICY = MovementPolicy()  # the movement maths' rollover and rate rules
ROLLOVER_TOP = POLICY.rollover_top
_AWARDS = frozenset(MOVEMENT_METERS[m] for m in AWARD_METERS)
_COUNTS = frozenset(MOVEMENT_METERS[m] for m in COUNT_METERS)

Meters = Mapping[str, int]
MeterKey = tuple[tuple[str, int], ...]


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    LATE = "late"
    ROLLOVER = "rollover"
    RAM_CLEAR = "ram clear"
    STALE = "stale"
    SUSPECT = "suspect"
    CLOCK_BEHIND = "clock behind"
    UNJUDGED = "unjudged"  # the cabinet's history could not be read: not booked


STORED: frozenset[Verdict] = frozenset(
    {Verdict.ACCEPTED, Verdict.LATE, Verdict.ROLLOVER, Verdict.RAM_CLEAR}
)


@dataclass(frozen=True, slots=True)
class Reading:
    """A good meter reply as the collector stamped it."""

    at: datetime
    meters: Meters
    sizes: Mapping[str, int] = field(default_factory=dict)  # SAS size byte per code
    late: bool = False


@dataclass(frozen=True, slots=True)
class History:
    """What the rules remember of a cabinet. Replies are numbered in the order they are
    judged (`count` so far): `heard` holds the meter sets of the recent ones, each with
    the number of the reply that first carried it (oldest first); `latest_no` is the
    number of the latest accepted reading, `fell_no` that of the latest rollover or RAM
    clear booked; `suspect` a reading awaiting its re-read."""

    latest: Reading | None = None
    heard: tuple[tuple[MeterKey, int], ...] = ()
    suspect: Reading | None = None
    count: int = 0
    latest_no: int = 0
    fell_no: int | None = None
    since: datetime | None = None  # when the latest reading's meters were first booked
    stale_key: MeterKey | None = None  # the meters of the replies just refused as stale
    stale_streak: int = 0  # how many in a row

    def heard_by(self, key: MeterKey, number: int | None) -> bool:
        """Were these meters heard in reply `number` or before (never, when None)?"""
        return number is not None and any(k == key and n <= number for k, n in self.heard)


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    reason: str
    fallen: tuple[str, ...] = ()  # codes below the latest reading (rollover, suspect, RAM clear)

    @property
    def stored(self) -> bool:
        return self.verdict in STORED


def meter_key(meters: Meters) -> MeterKey:
    """A reading's counters as a comparable value (000C and unknown codes left out)."""
    return tuple(sorted((c, int(v)) for c, v in meters.items() if c in COUNTERS))


def capacity(code: str, sizes: Mapping[str, int]) -> int:
    """10**digits of a meter: its SAS size byte x 2 when known and > 0, else 8 digits."""
    size = int(sizes.get(code, 0))
    return 10 ** min(size * 2, 18) if size > 0 else 10**DEFAULT_DIGITS


def wrapped(before: int, after: int, cap: int) -> bool:
    """A fall from the top part of the capacity into the bottom part: a rollover."""
    return ROLLOVER_TOP * cap <= before < cap and after < (1 - ROLLOVER_TOP) * cap


def fallen(latest: Reading, meters: Meters) -> tuple[str, ...]:
    """The counters below the latest reading's."""
    return tuple(
        code
        for code in COUNTERS
        if code in meters and code in latest.meters and int(meters[code]) < int(latest.meters[code])
    )


def restarted(latest: Reading, reading: Reading) -> bool:
    """Could `reading` be a machine's meters counted from 0 since `latest` was taken?
    Every counter but the awards at most its rate times the time since (at least
    `min_seconds`)."""
    seconds = max((reading.at - latest.at).total_seconds(), POLICY.min_seconds)
    credits = POLICY.max_credits_per_second * seconds
    games = POLICY.max_games_per_second * seconds
    return all(
        int(value) <= (games if code in _COUNTS else credits)
        for code, value in reading.meters.items()
        if code in COUNTERS and code not in _AWARDS
    )


def jumped(history: History, latest: Reading, reading: Reading) -> tuple[str, ...]:
    """The counters (awards excepted) that rose from the latest reading by more than the
    movement maths' rates allow, over the seconds since the latest meters were first
    booked (an hour back at most; at least the interval and `min_seconds`), as the
    movement maths count them: an old reply never heard before (a takeover's, one with
    no request pending) replayed after a RAM clear or rollover."""
    interval = (reading.at - latest.at).total_seconds()
    since = history.since or latest.at
    unchanged = min((reading.at - since).total_seconds(), max(interval, POLICY.repeat_reach_s))
    seconds = max(unchanged, interval, POLICY.min_seconds)
    credits = POLICY.max_credits_per_second * seconds
    games = POLICY.max_games_per_second * seconds
    return tuple(
        code
        for code in COUNTERS
        if code not in _AWARDS
        and code in reading.meters
        and code in latest.meters
        and int(reading.meters[code]) - int(latest.meters[code])
        > (games if code in _COUNTS else credits)
    )


def _confirms_clear(
    latest: Reading, suspect: Reading, reading: Reading, codes: Iterable[str]
) -> bool:
    """The re-read of a suspect reading reads low too, no counter below the suspect's,
    and both look restarted from 0."""
    if not (restarted(latest, suspect) and restarted(latest, reading)):
        return False
    same_fall = all(code in suspect.meters for code in codes)
    grew = all(
        int(reading.meters[c]) >= int(suspect.meters[c])
        for c in COUNTERS
        if c in reading.meters and c in suspect.meters
    )
    return same_fall and grew


def judge(history: History, reading: Reading) -> Judgement:
    """The verdict on `reading` given the cabinet's `history` (module docstring)."""
    latest = history.latest
    if latest is None:
        return _fresh(reading, "the cabinet's first reading")
    if reading.at <= latest.at:
        skew = (latest.at - reading.at).total_seconds()
        return Judgement(
            Verdict.CLOCK_BEHIND,
            f"clock behind: stamped {skew:.3f} s at or before the cabinet's latest reading",
        )
    key = meter_key(reading.meters)
    pending = history.suspect is not None and key == meter_key(history.suspect.meters)
    codes = fallen(latest, reading.meters)
    if (
        key != meter_key(latest.meters)
        and not pending
        and history.heard_by(key, history.latest_no)
        and (codes or history.heard_by(key, history.fell_no))
        and not (history.stale_key == key and history.stale_streak >= STALE_CONFIRM - 1)
    ):
        return Judgement(Verdict.STALE, "stale: the meters of an earlier reading (a replay)")
    if not codes:
        if not pending and (jump := jumped(history, latest, reading)):
            return Judgement(
                Verdict.SUSPECT,
                f"suspect: {', '.join(jump)} rose faster than a machine plays; read again",
            )
        return _fresh(reading, "meters at or above the latest reading")
    sizes = {**reading.sizes, **latest.sizes}  # the size before the fall, as movement.py
    if all(
        wrapped(int(latest.meters[c]), int(reading.meters[c]), capacity(c, sizes)) for c in codes
    ):
        return Judgement(Verdict.ROLLOVER, f"rollover of {', '.join(codes)}", codes)
    if history.suspect is not None and _confirms_clear(latest, history.suspect, reading, codes):
        return Judgement(Verdict.RAM_CLEAR, "RAM clear: the meters read low twice", codes)
    return Judgement(
        Verdict.SUSPECT,
        f"suspect: {', '.join(codes)} below the latest reading; read again",
        codes,
    )


def _fresh(reading: Reading, reason: str) -> Judgement:
    if reading.late:
        return Judgement(Verdict.LATE, f"late: {reason}, the reply came after the timeout")
    return Judgement(Verdict.ACCEPTED, reason)


def hear(history: History, meters: Meters) -> History:
    """Remember that the board said `meters` (any meter reply, answered or not, in the
    order judged); a set already remembered keeps the number it was first heard in."""
    key = meter_key(meters)
    count = history.count + 1
    if any(k == key for k, _ in history.heard):
        return replace(history, count=count)
    heard = (*history.heard, (key, count))[-RECENT_READINGS:]
    return replace(history, heard=heard, count=count)


def remember(history: History, reading: Reading, judgement: Judgement) -> History:
    """The cabinet's history after `reading` got `judgement` (heard, in any case)."""
    history = hear(history, reading.meters)
    if judgement.verdict is not Verdict.STALE:
        history = replace(history, stale_key=None, stale_streak=0)  # the streak is broken
    if judgement.stored:
        repeat = history.latest is not None and meter_key(reading.meters) == meter_key(
            history.latest.meters
        )  # moves nothing: a suspect reading still awaits a re-read that tells
        suspect = history.suspect if repeat else None
        fell = judgement.verdict in (Verdict.ROLLOVER, Verdict.RAM_CLEAR)
        fell_no = history.count if fell else history.fell_no
        since = history.since if repeat else reading.at
        return replace(
            history,
            latest=reading,
            suspect=suspect,
            latest_no=history.count,
            fell_no=fell_no,
            since=since,
        )
    if judgement.verdict is Verdict.STALE:
        key = meter_key(reading.meters)
        streak = history.stale_streak + 1 if history.stale_key == key else 1
        return replace(history, stale_key=key, stale_streak=streak)
    if judgement.verdict is Verdict.SUSPECT:
        return replace(history, suspect=reading)
    return history


def history_of(readings: Iterable[Reading], heard: Iterable[Reading] = ()) -> History:
    """The history of a cabinet's stored good readings (each taken as accepted; one
    below the reading before it as a fall, a rollover or RAM clear) and of the replies
    refused but stored with their meters (only heard), e.g. from the database on start:
    merged in time order."""
    events = [(r.at, 0, r) for r in readings] + [(r.at, 1, r) for r in heard]
    history = History()
    for _, refused, reading in sorted(events, key=lambda e: (e[0], e[1])):
        if refused:
            history = hear(history, reading.meters)
        else:
            fell = history.latest is not None and fallen(history.latest, reading.meters)
            verdict = Verdict.ROLLOVER if fell else Verdict.ACCEPTED  # a fall, either way
            history = remember(history, reading, Judgement(verdict, "stored"))
    return history
