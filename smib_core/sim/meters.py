"""A slot machine's SAS meters, advanced by elapsed time: pure, stdlib only, no I/O.

Contract: `Machine.advance(seconds)` plays the machine for that long and returns its
meters by SAS code, using only its own seeded `random.Random`; the same seed and the
same sequence of durations give the same values. Each call is a handful of arithmetic
steps whatever the duration (counts are drawn from Poisson/binomial laws, normal
approximations for large means), so `history()` of 90 days of 5-minute snapshots for one
machine takes about a tenth of a second.

Invariants kept after every call (the ones a meter reader may rely on):

- every meter is cumulative and never falls (until `reset()`, a RAM clear);
- 0022 total won = 0001 coin out + 0002 jackpot, exactly;
- 0006 games won <= 0005 games played; 0007 games lost is the difference;
- 0003 hand paid cancelled credits <= 0004 cancelled credits;
- 000C current credits = 0024 drop + 0001 coin out - 0000 coin in - 0004 cancelled >= 0:
  players insert bills whenever their credits would not cover their bets.

Jackpots follow SAS: a jackpot is paid by an attendant (a hand pay), counted in 0002
and so in 0022, and never goes through the credit meter: it is not credited, not
cancelled, and 0003 (hand paid *cancelled credits*) never holds it. So coin in - total
won (0000 - 0022, the meter win) and drop - cancelled - jackpots (the net win) differ
exactly by the change of 000C, the credits left on the machine.

Meter values are true counts; `sas_meters` wraps them to the machine's BCD width
(4 or 5 bytes), as a real machine rolls over.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from smib_core import sas

DAY_S = 86_400.0

# Share of the daily mean occupancy by UTC hour of day (a casino's night-heavy curve);
# the mean of the 24 factors is 1.
_HOURLY = (
    1.5,
    1.4,
    1.2,
    0.9,
    0.6,
    0.4,
    0.3,
    0.3,
    0.4,
    0.5,
    0.6,
    0.8,
    0.9,
    1.0,
    1.0,
    1.0,
    1.1,
    1.2,
    1.3,
    1.4,
    1.5,
    1.6,
    1.7,
    1.7,
)
_HOURLY_MEAN = sum(_HOURLY) / len(_HOURLY)
HOURLY_OCCUPANCY: tuple[float, ...] = tuple(f / _HOURLY_MEAN for f in _HOURLY)

_DENOMS_CENTS = (1, 1, 1, 1, 2, 5, 5, 10, 25, 25, 100)
_BET_CENTS = (25, 50, 100, 200, 300, 500)
_BILLS_CENTS = (2_000, 2_000, 2_000, 5_000, 10_000)


@dataclass(frozen=True, slots=True)
class MachineProfile:
    """How one machine is configured and played (rates are per second of wall time)."""

    denom_cents: int  # accounting denomination: money = credits x denomination
    bet_levels: tuple[int, ...]  # credits per game the players choose from
    seconds_per_game: float  # while someone plays
    occupancy: float  # daily mean share of time someone plays
    hit_rate: float  # share of games that win something
    rtp: float  # return to player, jackpots included
    jackpot_odds: float  # jackpots per game
    jackpot_x: int  # a jackpot pays this many times the bet, by hand (0002), never as credits
    session_s: float  # mean seconds of play between two cash-outs
    bill_cents: int  # the bill a player usually inserts
    handpay_cents: int  # cash-outs from this amount are paid by an attendant (0003)
    meter_size: int  # BCD bytes per meter in the machine's 6F replies (4 or 5)

    @classmethod
    def random(cls, rng: random.Random) -> MachineProfile:
        denom = rng.choice(_DENOMS_CENTS)
        levels = tuple(sorted({max(1, round(c / denom)) for c in _BET_CENTS}))
        jackpot_odds = 1 / rng.uniform(20_000, 80_000)
        jackpot_x = rng.randint(500, 1_500)
        return cls(
            denom_cents=denom,
            bet_levels=levels,
            seconds_per_game=rng.uniform(3.5, 8.0),
            occupancy=rng.uniform(0.15, 0.5),
            hit_rate=rng.uniform(0.18, 0.4),
            rtp=rng.uniform(0.88, 0.96),
            jackpot_odds=jackpot_odds,
            jackpot_x=jackpot_x,
            session_s=rng.uniform(900, 2_700),
            bill_cents=rng.choice(_BILLS_CENTS),
            handpay_cents=120_000,
            meter_size=rng.choice((4, 4, 5)),
        )

    @property
    def mean_bet(self) -> float:
        return sum(self.bet_levels) / len(self.bet_levels)

    @property
    def bill_credits(self) -> int:
        return max(1, self.bill_cents // self.denom_cents)


@dataclass(slots=True)
class MeterState:
    """The machine's cumulative meters, in credits unless named a count."""

    coin_in: int = 0
    coin_out: int = 0
    jackpot: int = 0
    handpaid: int = 0
    cancelled: int = 0
    games_played: int = 0
    games_won: int = 0
    drop: int = 0
    credits: int = 0

    def values(self) -> dict[str, int]:
        """Meters by SAS code (METER_CODES names them)."""
        return {
            "0000": self.coin_in,
            "0001": self.coin_out,
            "0002": self.jackpot,
            "0003": self.handpaid,
            "0004": self.cancelled,
            "0005": self.games_played,
            "0006": self.games_won,
            "0007": self.games_played - self.games_won,
            "000B": self.drop,  # every credit dropped came from a bill
            "000C": self.credits,
            "0022": self.coin_out + self.jackpot,
            "0024": self.drop,
        }


# --- random counts without a per-game loop -------------------------------------------


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson count: exact below a mean of 12, normal approximation above."""
    if mean <= 0:
        return 0
    if mean < 0.02:  # P(2 or more) is below 2e-4: one draw is enough
        return 1 if rng.random() < mean else 0
    if mean < 12:
        limit, count, product = math.exp(-mean), 0, rng.random()
        while product > limit:
            count += 1
            product *= rng.random()
        return count
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def binomial(rng: random.Random, trials: int, p: float) -> int:
    """A binomial count: exact below 25 trials, normal approximation above."""
    if trials <= 0:
        return 0
    if trials < 25:
        rand = rng.random
        return sum(1 for _ in range(trials) if rand() < p)
    sd = math.sqrt(trials * p * (1 - p))
    return min(trials, max(0, round(rng.gauss(trials * p, sd))))


# --- the machine ----------------------------------------------------------------------


class Machine:
    """One cabinet's meters; `advance` plays it forward by a duration."""

    __slots__ = ("meters", "profile", "rng")

    def __init__(
        self, profile: MachineProfile, rng: random.Random, meters: MeterState | None = None
    ) -> None:
        self.profile = profile
        self.rng = rng
        self.meters = meters if meters is not None else MeterState()

    @classmethod
    def from_seed(cls, seed: int, *, history_days: float | None = None) -> Machine:
        """A machine with a random profile and some past play already on its meters.

        The BCD width is widened to 5 bytes when the past play would not leave room
        for months more in 4 bytes (so a fresh simulator does not start on a rollover).
        """
        rng = random.Random(seed)
        machine = cls(MachineProfile.random(rng), rng)
        days = rng.uniform(30, 400) if history_days is None else history_days
        for _ in range(int(days // 7)):  # a week at a time: quick, and still realistic
            machine.advance(7 * DAY_S)
        machine.advance((days % 7) * DAY_S)
        if machine.meters.coin_in >= 2 * 10**7 and machine.profile.meter_size < 5:
            machine.profile = replace(machine.profile, meter_size=5)
        return machine

    def values(self) -> dict[str, int]:
        return self.meters.values()

    def award_jackpot(self, credits: int) -> dict[str, int]:
        """A jackpot (a progressive, say) paid by an attendant: 0002 and 0022 move by
        `credits`, in one go; no other meter moves. Returns the new meters."""
        if credits < 0:
            raise ValueError("a jackpot is not negative")
        self.meters.jackpot += credits
        return self.meters.values()

    def reset(self) -> None:
        """A RAM clear / meter reset: every meter back to zero."""
        self.meters = MeterState()

    def occupancy(self, seconds: float, at: float | None) -> float:
        """Share of `seconds` someone plays; by hour of day when `at` (epoch s) is given."""
        base = self.profile.occupancy
        if at is None or seconds > 2 * 3600:
            return base
        hour = int(((at + seconds / 2) % DAY_S) // 3600)
        return min(0.95, base * HOURLY_OCCUPANCY[hour])

    def advance(self, seconds: float, at: float | None = None) -> dict[str, int]:
        """Play `seconds` of wall time (starting at epoch `at`, if known); the new meters."""
        if seconds > 0:
            self._play(seconds * self.occupancy(seconds, at))
        return self.meters.values()

    def _play(self, play_s: float) -> None:
        p, m, rng = self.profile, self.meters, self.rng
        games = poisson(rng, play_s / p.seconds_per_game)
        if games == 0:
            return
        bet = rng.choice(p.bet_levels) if games <= 200 else p.mean_bet
        coin_in = round(games * bet)
        jackpots = poisson(rng, games * p.jackpot_odds)
        jackpot = round(jackpots * bet * p.jackpot_x)
        won_games = min(games, max(binomial(rng, games, p.hit_rate), jackpots))
        base_rtp = max(0.5, p.rtp - p.jackpot_odds * p.jackpot_x)
        # Wins are volatile: a lognormal factor of mean 1 whose spread shrinks with the
        # number of wins (coefficient of variation 2.5 for a single win).
        sigma = math.sqrt(math.log1p(6.25 / max(1, won_games)))
        luck = math.exp(rng.gauss(-sigma * sigma / 2, sigma))
        coin_out = round(coin_in * base_rtp * luck)
        coin_out = max(coin_out, won_games - jackpots) if won_games > jackpots else 0
        m.games_played += games
        m.games_won += won_games
        m.coin_in += coin_in
        m.coin_out += coin_out
        m.jackpot += jackpot  # paid by an attendant: not credited, not cancelled
        self._fund_and_cash_out(coin_in - coin_out, play_s)

    def _fund_and_cash_out(self, net_loss: int, play_s: float) -> None:
        """Bills cover what the credits cannot; cash-outs empty the credit meter."""
        p, m, rng = self.profile, self.meters, self.rng
        bill = p.bill_credits
        need = net_loss - m.credits
        inserted = -(-need // bill) * bill if need > 0 else 0  # whole bills
        if inserted and rng.random() < 0.3:
            inserted += bill  # a player often puts in one bill more than needed
        m.drop += inserted
        m.credits += inserted - net_loss
        cash_outs = poisson(rng, play_s / p.session_s)
        if cash_outs == 0:
            return
        # Each earlier session in this span bought in and cashed out some bills unplayed.
        unplayed = poisson(rng, cash_outs - 1)
        m.drop += unplayed * bill
        amount = m.credits + unplayed * bill
        m.cancelled += amount
        if amount * p.denom_cents >= p.handpay_cents * cash_outs:
            m.handpaid += amount
        m.credits = 0

    def sas_meters(self, codes: Sequence[str]) -> list[sas.Meter]:
        """The meters a 6F reply carries for `codes`, in that order, wrapped to BCD width.

        Codes the machine does not keep come back with size 0 ("not supported").
        """
        values = self.meters.values()
        size = self.profile.meter_size
        modulus = 10 ** (2 * size)
        return [
            sas.Meter(code, size, values[code] % modulus)
            if code in values
            else sas.Meter(code, 0, None)
            for code in (c.upper() for c in codes)
        ]


def history(
    machine: Machine, start: float, steps: int, step_s: float = 300.0
) -> Iterator[tuple[float, dict[str, int]]]:
    """Snapshots (epoch seconds, meters by code) every `step_s` from `start`, offline.

    The first snapshot is the machine as it is at `start`; each next one has played
    `step_s` more (with the hour-of-day occupancy curve).
    """
    at = start
    yield at, machine.values()
    for _ in range(steps - 1):
        values = machine.advance(step_s, at)
        at += step_s
        yield at, values
