"""Confirming by reading back: the one rule for every flow that writes to or restarts a board.

Contract (PROTOCOL.md, "What a board does NOT promise"): a board answers nothing to a
config write, `rst` or `ota_ud`, says nothing unprompted after a boot, and its replies
carry no correlation id, so a late duplicate of an old answer looks like a fresh one.
Nothing here waits for an acknowledgement or an announcement. Instead:

- `read_back` asks a component (`cfg` read) again and again until the board reports what
  `matches` wants (confirmed), or it has answered otherwise `disagreements` times in a
  row (not_confirmed: a stale answer or two are outlived, a board that refused the
  change is not waited on for ever; `None`: only the time ends it), or the time is up
  (not_confirmed when it answered, timed_out when it never did);
- `await_back` follows a restart: it asks nothing before `sent_at + grace_s` (a board
  still up would answer), then asks `cfg app` until the board answers again (back:
  confirmed) or the time is up (timed_out). It asks at least once, the question given
  its full time: a board found answering when a resumed caller looks is back.

A caller that may have to stop (a batch worker) passes `stopping`: once it is set, no
more questions are asked and the result is `stopped`: nothing was judged, the caller
leaves the board in flight for the next one to read back.

A firmware that acknowledges writes or announces itself changes nothing: its extra
messages at most answer one of these questions early, with the same truth. Every
question goes through `BoardActions` (role checked, audited); the caller settles the
audit record of its own write or restart with the outcome. No streamlit here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from smib_core import protocol
from smib_core.errors import BusError, RequestTimeout
from smib_core.protocol import Command, ConfigReply, DeviceMessage
from smib_core.services.config_forms import same_value

Outcome = Literal["confirmed", "not_confirmed", "timed_out"]


class Asker(Protocol):
    """What a read-back needs of `services.actions.BoardActions`."""

    def request(self, relay: str, command: Command, timeout: float = ...) -> DeviceMessage: ...


@dataclass(frozen=True, slots=True)
class ReadBackTimings:
    ask_timeout_s: float = 2.0  # how long one question waits for its answer
    gap_s: float = 0.3  # between two questions
    disagreements: int | None = 3  # answers in a row that disagree: not confirmed (None: no limit)
    grace_s: float = 2.0  # after a restart, how long before the first question


@dataclass(frozen=True, slots=True)
class ReadBack:
    outcome: Outcome
    fields: Mapping[str, Any] = field(default_factory=dict)  # the last answer ({}: none)
    answers: int = 0
    reason: str = ""
    stopped: bool = False  # `stopping` was set: not judged (the outcome is only "so far")

    @property
    def confirmed(self) -> bool:
        return self.outcome == "confirmed"

    @property
    def answered(self) -> bool:
        return self.answers > 0


def differing(expected: Mapping[str, Any], fields: Mapping[str, Any]) -> list[str]:
    """The expected fields (sorted) that `fields` does not report with that value (as
    text: a board's `"6"` is a form's `6`)."""
    return sorted(
        name
        for name, value in expected.items()
        if name not in fields or not same_value(fields[name], value)
    )


def reports(expected: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    """A `matches` for `read_back`: every expected field reported with that value."""
    return lambda fields: not differing(expected, fields)


def any_answer(_: Mapping[str, Any]) -> bool:
    """A `matches` for `read_back`: any answer will do (the board is up)."""
    return True


def _pause(
    stopping: threading.Event | None, sleep: Callable[[float], None]
) -> Callable[[float], None]:
    """How to wait between questions: cut short when `stopping` is set."""
    if stopping is None:
        return sleep

    def wait(seconds: float) -> None:
        stopping.wait(seconds)

    return wait


def _is_set(stopping: threading.Event | None) -> bool:
    return stopping is not None and stopping.is_set()


def read_back(
    actions: Asker,
    relay: str,
    comp: str,
    matches: Callable[[Mapping[str, Any]], bool],
    timeout: float,
    timings: ReadBackTimings | None = None,
    *,
    stopping: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReadBack:
    """Ask `comp` until the board's answer `matches` (see the module contract)."""
    timings = timings or ReadBackTimings()
    pause = _pause(stopping, sleep)
    deadline = clock() + timeout
    answers = disagreeing = 0
    last: Mapping[str, Any] = {}
    while not _is_set(stopping):
        left = deadline - clock()
        if left <= 0:
            break
        try:
            reply = actions.request(
                relay, protocol.config_read(comp), min(timings.ask_timeout_s, left)
            )
        except (RequestTimeout, BusError):  # not answered (or the broker is away a moment)
            pause(min(timings.gap_s, max(0.0, deadline - clock())))
            continue
        answers += 1
        last = dict(reply.fields) if isinstance(reply, ConfigReply) else {}
        if matches(last):
            return ReadBack("confirmed", last, answers)
        disagreeing += 1
        if timings.disagreements is not None and disagreeing >= timings.disagreements:
            why = f"the board answered {answers} times with other values"
            return ReadBack("not_confirmed", last, answers, why)
        pause(min(timings.gap_s, max(0.0, deadline - clock())))
    if _is_set(stopping):
        why = "stopped before the board was judged"
        return ReadBack("not_confirmed" if answers else "timed_out", last, answers, why, True)
    if answers:
        why = f"the board never reported the new value within {timeout:g} s"
        return ReadBack("not_confirmed", last, answers, why)
    return ReadBack("timed_out", {}, 0, f"no answer from the board within {timeout:g} s")


def await_back(
    actions: Asker,
    relay: str,
    sent_at: float,
    timeout: float,
    timings: ReadBackTimings | None = None,
    *,
    stopping: threading.Event | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> ReadBack:
    """After a `rst` sent at `sent_at` (`clock` time): back when it answers `cfg app`
    again, asked from `sent_at + grace_s` on, until `sent_at + timeout` (at least one
    question, given its full `ask_timeout_s`)."""
    timings = timings or ReadBackTimings()
    start = sent_at + timings.grace_s
    if clock() < start:
        _pause(stopping, sleep)(start - clock())
    left = max(sent_at + timeout - clock(), timings.ask_timeout_s)
    back = read_back(
        actions,
        relay,
        "app",
        any_answer,
        left,
        timings,
        stopping=stopping,
        clock=clock,
        sleep=sleep,
    )
    if back.confirmed or back.stopped:
        return back
    return ReadBack("timed_out", {}, 0, f"the board did not come back within {timeout:g} s")
