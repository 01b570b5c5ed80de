"""The money rules (`analytics.verdicts`) and the movement maths under adversarial
histories: replays of earlier replies, drops, late replies, rollovers and RAM clears.

The property tests play a true machine (its meters, its RAM clears, its rollovers)
against a model of the collector that applies `judge` to every reply it is handed, and
compare what `meter_movement` counts over the stored readings with the machine's truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from smib_core.analytics.movement import MOVEMENT_METERS, meter_movement
from smib_core.analytics.verdicts import (
    RECENT_READINGS,
    History,
    Judgement,
    Reading,
    Verdict,
    hear,
    history_of,
    judge,
    remember,
)

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
CODES = tuple(MOVEMENT_METERS.values())


def meters(coin_in: int, drop: int = 0, games: int = 0, out: int = 0) -> dict[str, int]:
    base = dict.fromkeys(CODES, 0)
    base |= {"0000": coin_in, "0024": drop, "0005": games, "0001": out, "0022": out}
    return base


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def after(*readings: Reading) -> History:
    return history_of(readings)


def judged(history: History, *readings: Reading) -> History:
    """`history` after each of `readings` was judged in turn."""
    for reading in readings:
        history = remember(history, reading, judge(history, reading))
    return history


# --- each rule ---------------------------------------------------------------------------


def test_first_reading_and_growth_are_accepted() -> None:
    assert judge(History(), Reading(at(0), meters(100))).verdict is Verdict.ACCEPTED
    history = after(Reading(at(0), meters(100)))
    assert judge(history, Reading(at(5), meters(150))).verdict is Verdict.ACCEPTED


def test_an_exact_repeat_of_the_latest_reading_is_accepted_and_moves_nothing() -> None:
    history = after(Reading(at(0), meters(100)), Reading(at(5), meters(150)))
    assert judge(history, Reading(at(10), meters(150))).verdict is Verdict.ACCEPTED


def test_a_stamp_at_or_before_the_latest_reading_is_clock_behind() -> None:
    history = after(Reading(at(5), meters(100)))
    for minute in (5, 4.9, 0):
        judgement = judge(history, Reading(at(minute), meters(200)))
        assert judgement.verdict is Verdict.CLOCK_BEHIND
        assert judgement.reason.startswith("clock behind")
        assert not judgement.stored


def test_a_replay_of_an_earlier_reading_is_stale_even_when_it_looks_like_growth() -> None:
    before_clear = Reading(at(0), meters(5_000, 900))
    after_clear = Reading(at(5), meters(10, 5))  # booked after a RAM clear
    history = after(before_clear, after_clear)
    replay = judge(history, Reading(at(6), meters(5_000, 900)))
    assert replay.verdict is Verdict.STALE
    assert not replay.stored


def test_a_replay_of_a_reply_heard_but_never_booked_is_stale() -> None:
    history = after(Reading(at(0), meters(100)))
    history = hear(history, meters(120))  # e.g. arrived with a newer request pending
    history = remember(history, Reading(at(5), meters(150)), Judgement(Verdict.ACCEPTED, ""))
    assert judge(history, Reading(at(6), meters(120))).verdict is Verdict.STALE


def test_meters_heard_before_a_repeat_of_the_latest_and_above_it_are_accepted() -> None:
    history = after(Reading(at(0), meters(100)))
    true = meters(100, out=1)  # the machine's meters now (it stays idle)
    history = hear(history, true)  # e.g. refused as clock behind, or a late reply refused
    replay = Reading(at(5), meters(100))  # a replay of the latest: accepted, moves nothing
    history = remember(history, replay, judge(history, replay))
    assert history.latest == replay
    for minute in (10, 15):  # the true meters read again are booked, not stale for ever
        reading = Reading(at(minute), true)
        judgement = judge(history, reading)
        assert judgement.verdict is Verdict.ACCEPTED
        history = remember(history, reading, judgement)


def test_a_true_reply_first_refused_as_clock_behind_is_booked_when_read_again() -> None:
    history = after(Reading(at(5), meters(100)))
    behind = Reading(at(4), meters(150))
    judgement = judge(history, behind)
    assert judgement.verdict is Verdict.CLOCK_BEHIND
    history = remember(history, behind, judgement)
    assert judge(history, Reading(at(10), meters(150))).verdict is Verdict.ACCEPTED


def test_meters_heard_before_a_rollover_are_stale_though_above_the_wrapped_latest() -> None:
    top = Reading(at(0), meters(99_999_990))
    wrapped = Reading(at(5), meters(15))
    history = after(top, wrapped)  # read from the database: the fall is known again
    assert history.fell_no == history.latest_no
    assert judge(history, Reading(at(6), meters(99_999_990))).verdict is Verdict.STALE


def test_a_second_ram_clear_back_to_meters_heard_before_is_booked_after_three_answers() -> None:
    history = after(Reading(at(0), meters(5_000, 900, 40)))
    history = judged(history, Reading(at(1), meters(0)), Reading(at(1.1), meters(0)))
    assert history.latest is not None and history.fell_no == history.latest_no  # clear 1
    history = judged(history, Reading(at(2), meters(300, 100, 3)))  # test play
    verdicts = []
    for minute in (3, 3.1, 4, 4.1):  # cleared again, idle at 0: heard before, fallen
        reading = Reading(at(minute), meters(0))
        verdicts.append(judge(history, reading).verdict)
        history = judged(history, reading)
    assert verdicts == [Verdict.STALE, Verdict.STALE, Verdict.SUSPECT, Verdict.RAM_CLEAR]


def test_a_replay_that_does_not_answer_three_requests_in_a_row_stays_stale() -> None:
    history = after(Reading(at(0), meters(5_000)), Reading(at(5), meters(6_000)))
    old = meters(5_000)
    history = judged(history, Reading(at(6), old), Reading(at(6.1), old))
    history = judged(history, Reading(at(7), meters(6_000)))  # the streak is broken
    assert judge(history, Reading(at(8), old)).verdict is Verdict.STALE


def test_a_jump_faster_than_a_machine_plays_is_read_again() -> None:
    before = meters(99_991_339, 50_003_977, 14)
    history = after(Reading(at(0), before), Reading(at(2), meters(0)))  # a RAM clear
    replay = Reading(at(3), before)  # a pre-clear reply this process never heard
    judgement = judge(history, replay)
    assert judgement.verdict is Verdict.STALE  # heard before the fall: a replay
    unheard = history_of([Reading(at(2), meters(0))])  # a new holder knows the clear only
    judgement = judge(unheard, replay)
    assert (
        judgement.verdict is Verdict.SUSPECT and "faster than a machine plays" in judgement.reason
    )
    unheard = remember(unheard, replay, judgement)
    assert judge(unheard, Reading(at(3.1), meters(3_407, 0, 47))).verdict is Verdict.ACCEPTED
    again = judge(unheard, Reading(at(3.1), before))  # the same jump read again: booked
    assert again.verdict is Verdict.ACCEPTED


def test_a_fall_is_suspect_then_a_ram_clear_when_the_reread_reads_low_too() -> None:
    history = after(Reading(at(0), meters(5_000, 900, 40)))
    low = Reading(at(5), meters(30, 20, 2))
    first = judge(history, low)
    assert first.verdict is Verdict.SUSPECT
    assert set(first.fallen) == {"0000", "0024", "0005"}
    history = remember(history, low, first)
    reread = Reading(at(5.1), meters(30, 20, 2))
    second = judge(history, reread)
    assert second.verdict is Verdict.RAM_CLEAR and second.stored
    history = remember(history, reread, second)
    assert history.latest == reread and history.suspect is None


def test_a_stale_fall_is_not_booked_when_the_reread_reads_true() -> None:
    history = after(Reading(at(0), meters(5_000)))
    replay = Reading(at(5), meters(4_000))  # an old reply heard for the first time
    judgement = judge(history, replay)
    assert judgement.verdict is Verdict.SUSPECT
    history = remember(history, replay, judgement)
    fresh = judge(history, Reading(at(5.1), meters(5_200)))
    assert fresh.verdict is Verdict.ACCEPTED


def test_a_reread_below_the_suspect_is_suspect_again() -> None:
    history = after(Reading(at(0), meters(5_000, 900)))
    suspect = Reading(at(5), meters(4_000, 800))
    history = remember(history, suspect, judge(history, suspect))
    assert judge(history, Reading(at(5.1), meters(3_000, 800))).verdict is Verdict.SUSPECT


def test_a_suspect_stays_pending_across_a_repeat_of_the_latest_and_its_reread_books_the_clear() -> (
    None
):
    latest = Reading(at(0), meters(5_000, 900))
    history = after(latest)
    cleared = Reading(at(5), meters(0, 0))  # a true RAM clear of an idle machine
    history = remember(history, cleared, judge(history, cleared))
    repeat = Reading(at(5.1), meters(5_000, 900))  # the re-read answered by a replay
    judgement = judge(history, repeat)
    assert judgement.verdict is Verdict.ACCEPTED  # moves nothing
    history = remember(history, repeat, judgement)
    assert history.suspect == cleared
    again = judge(history, Reading(at(10), meters(0, 0)))  # not a replay: its re-read
    assert again.verdict is Verdict.RAM_CLEAR


def test_a_replay_after_a_takeover_of_a_reply_the_old_holder_refused_is_stale() -> None:
    latest = Reading(at(0), meters(500, 90))
    refused = Reading(at(5), meters(10, 5))  # suspect for the old holder, stored refused
    newer = Reading(at(6), meters(600, 95))
    history = history_of([latest, newer], heard=[refused])  # what a new holder reads
    assert judge(history, Reading(at(7), meters(10, 5))).verdict is Verdict.STALE
    assert judge(history_of([latest, newer]), Reading(at(7), meters(10, 5))).verdict is (
        Verdict.SUSPECT
    )


def test_a_wrap_from_the_top_of_the_capacity_is_a_rollover() -> None:
    history = after(Reading(at(0), meters(99_999_990, 500)))
    judgement = judge(history, Reading(at(5), meters(15, 600)))
    assert judgement.verdict is Verdict.ROLLOVER and judgement.fallen == ("0000",)
    sized = after(Reading(at(0), meters(9_999_999_990), sizes={"0000": 5}))
    assert judge(sized, Reading(at(5), meters(5))).verdict is Verdict.ROLLOVER
    # A fall into the middle of the capacity is no wrap.
    assert judge(sized, Reading(at(5), meters(5_000_000_000))).verdict is Verdict.SUSPECT


def test_a_late_reply_is_a_late_reading() -> None:
    history = after(Reading(at(0), meters(100)))
    judgement = judge(history, Reading(at(5), meters(130), late=True))
    assert judgement.verdict is Verdict.LATE and judgement.stored


def test_current_credits_falling_is_no_fall() -> None:
    history = after(Reading(at(0), {**meters(100), "000C": 500}))
    assert judge(history, Reading(at(5), {**meters(100), "000C": 0})).verdict is Verdict.ACCEPTED


# --- adversarial histories ---------------------------------------------------------------

MAX_PLAY = 4_000  # credits a step: far below the movement maths' absurd rate


@dataclass(frozen=True)
class Step:
    coin_in: int
    drop: int
    games: int
    out: int
    fault: str  # ok | drop | late | replay | takeover (a new holder: history from the db)
    # | behind (the reply stamped before the latest reading: a clock stepped back)
    replay_pick: int  # which earlier reply a replay repeats
    reread_replay: bool  # the re-read of a suspect reading is answered by a replay
    clear: bool  # the machine's RAM is cleared just before this step's play


def _or_idle(play: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    return st.one_of(st.just(0), play)  # an idle machine: the same meters again


steps = st.builds(
    Step,
    coin_in=_or_idle(st.integers(0, MAX_PLAY)),
    drop=_or_idle(st.integers(0, MAX_PLAY)),
    games=_or_idle(st.integers(0, 50)),
    out=_or_idle(st.integers(0, MAX_PLAY // 2)),
    fault=st.sampled_from(["ok", "ok", "drop", "late", "replay", "replay", "takeover", "behind"]),
    replay_pick=st.integers(0, 10_000),
    reread_replay=st.booleans(),
    clear=st.just(False),  # set by `_plan` where a clear is drawn
)


@dataclass
class Machine:
    """The true machine: meters that only grow, except rollover and RAM clear."""

    coin_in: int
    drop: int = 50_000_000  # a fall from here is never a wrap: every clear shows
    games: int = 0
    out: int = 0
    play: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("0000", "0024", "0005"), 0))

    def meters(self) -> dict[str, int]:
        return meters(self.coin_in, self.drop, self.games, self.out)

    def advance(self, step: Step) -> None:
        if step.clear:
            self.coin_in = self.drop = self.games = self.out = 0
        self.coin_in = (self.coin_in + step.coin_in) % 10**8  # a 4-byte meter wraps
        self.drop += step.drop
        self.games += step.games
        self.out += step.out
        self.play["0000"] += step.coin_in
        self.play["0024"] += step.drop
        self.play["0005"] += step.games


@dataclass
class Outcome:
    stored: list[Reading] = field(default_factory=list)
    refused: list[Reading] = field(default_factory=list)  # stored as failed, with their meters
    verdicts: list[Verdict] = field(default_factory=list)


def collect(machine: Machine, plan: list[Step]) -> Outcome:
    """The collector model: one request a minute; each reply judged; a suspect reading
    read again at once. A takeover starts from what was stored: the good readings and
    the refused replies with their meters."""
    history, outcome = History(), Outcome()
    delivered: list[dict[str, int]] = []  # every reply the board ever sent

    def hand(reading: Reading) -> Judgement:
        nonlocal history
        judgement = judge(history, reading)
        history = remember(history, reading, judgement)
        outcome.verdicts.append(judgement.verdict)
        if judgement.stored:
            outcome.stored.append(reading)
        else:
            outcome.refused.append(reading)
        return judgement

    for k, step in enumerate(plan):
        if step.fault == "takeover":  # the new holder knows only the stored readings
            recent = RECENT_READINGS
            history = history_of(outcome.stored[-recent:], heard=outcome.refused[-recent:])
        machine.advance(step)
        moment = at(k)
        truth = machine.meters()
        if step.fault == "drop":
            continue  # the board dropped the command: nothing to hear
        if step.fault == "replay" and delivered:
            reply = delivered[step.replay_pick % len(delivered)]  # the board's answer is lost
        else:
            reply = truth
        delivered.append(truth) if reply is truth else None
        late = step.fault == "late"
        moment += timedelta(seconds=20 if late else 1)
        if step.fault == "behind":
            moment -= timedelta(minutes=3)
        judgement = hand(Reading(moment, reply, late=late))
        if judgement.verdict is Verdict.SUSPECT:
            again = delivered[step.replay_pick % len(delivered)] if step.reread_replay else truth
            if again is truth and (not delivered or delivered[-1] is not truth):
                delivered.append(truth)
            hand(Reading(moment + timedelta(seconds=2), again))
    return outcome


def counted(stored: list[Reading]) -> dict[str, float]:
    frame = pd.DataFrame(
        [
            {"relay": "r", "cabinet": "c", "location": "l", "at": r.at, "denomination": 0.01}
            | dict(r.meters)
            | {f"{c}_size": 4 for c in CODES}
            for r in stored
        ]
    )
    movement = meter_movement(frame)
    assert not movement["absurd"].any()
    return {code: float(movement[name].sum()) for name, code in MOVEMENT_METERS.items()}


def _plan(draw: st.DrawFn) -> tuple[int, list[Step]]:
    start = draw(st.sampled_from([0, 1_000, 99_990_000, 99_999_000]))
    body = draw(st.lists(steps, min_size=3, max_size=40))
    # At most one clear: a second one before the meters grew again would not show.
    clears = draw(st.sets(st.integers(1, len(body) - 2), max_size=1))
    plan = []
    for i, step in enumerate(body):
        if i in clears:  # a real RAM clear is read fresh, as is the reading before it
            step = Step(**{**step.__dict__, "clear": True, "fault": "ok"})
        elif i + 1 in clears or i == 0:
            step = Step(**{**step.__dict__, "fault": "ok"})
        if i == len(body) - 1:  # the test ends on a true reading
            step = Step(**{**step.__dict__, "fault": "ok", "reread_replay": False})
        plan.append(step)
    return start, plan


plans = st.composite(_plan)()


@settings(max_examples=300, deadline=None)
@given(plans)
def test_counted_equals_truth_under_replays_drops_late_replies_and_clears(
    drawn: tuple[int, list[Step]],
) -> None:
    start, plan = drawn
    machine = Machine(coin_in=start)
    first = plan[0]
    outcome = collect(machine, plan)
    stored = outcome.stored
    assert [r.at for r in stored] == sorted({r.at for r in stored}), "readings out of order"
    true_clears = sum(s.clear for s in plan)
    assert outcome.verdicts.count(Verdict.RAM_CLEAR) == true_clears, "false or missed RAM clear"
    assert dict(stored[-1].meters) == machine.meters(), "the final true reading not booked"
    totals = counted(stored)
    # Every step's play after the first reading is counted once, none twice.
    assert totals["0000"] == machine.play["0000"] - first.coin_in
    assert totals["0024"] == machine.play["0024"] - first.drop
    assert totals["0005"] == machine.play["0005"] - first.games


@settings(max_examples=200, deadline=None)
@given(plans, st.randoms(use_true_random=False))
def test_movement_of_true_readings_in_any_order_is_the_truth(
    drawn: tuple[int, list[Step]], rnd: object
) -> None:
    """The movement maths alone: true readings (rollovers, RAM clears read right after),
    shuffled and with duplicates, sum to the machine's play."""
    start, plan = drawn
    machine = Machine(coin_in=start)
    readings = []
    for k, step in enumerate(plan):
        machine.advance(step)
        readings.append(Reading(at(k), machine.meters()))
    shuffled = readings + readings[: len(readings) // 3]
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    totals = counted(sorted(shuffled, key=lambda r: r.at))
    totals_shuffled = counted(shuffled)
    assert totals == totals_shuffled
    assert totals["0000"] == machine.play["0000"] - plan[0].coin_in
    assert totals["0005"] == machine.play["0005"] - plan[0].games
