"""The read-back rule (services.readback) with a scripted board: no broker needed."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from smib_core import protocol
from smib_core.errors import RequestTimeout
from smib_core.protocol import Command, ConfigReply, DeviceMessage
from smib_core.services.actions import compared_fields
from smib_core.services.readback import (
    ReadBackTimings,
    await_back,
    differing,
    read_back,
    reports,
)

RELAY = "e831cdfa8384"
QUICK = ReadBackTimings(ask_timeout_s=0.05, gap_s=0.0, disagreements=3, grace_s=0.0)


class Scripted:
    """Answers each `cfg` question with the next scripted fields (None: no answer)."""

    def __init__(self, answers: list[Mapping[str, Any] | None]) -> None:
        self.answers = list(answers)
        self.asked: list[dict[str, Any]] = []

    def request(self, relay: str, command: Command, timeout: float = 5.0) -> DeviceMessage:
        self.asked.append(dict(command.payload))
        fields = self.answers.pop(0) if self.answers else None
        if fields is None:
            raise RequestTimeout(f"board {relay} did not answer")
        return ConfigReply(relay, "cfg", "smib/config", str(command.payload["comp"]), dict(fields))


def test_a_stale_answer_is_outlived_and_the_new_value_confirms() -> None:
    board = Scripted([{"netStaChan": 6}, None, {"netStaChan": "11"}])
    back = read_back(board, RELAY, "net", reports({"netStaChan": 11}), 2.0, QUICK)
    assert back.outcome == "confirmed" and back.answers == 2
    assert board.asked == [protocol.config_read("net").payload] * 3


def test_a_board_that_keeps_answering_the_old_value_is_not_confirmed() -> None:
    board = Scripted([{"netStaChan": 6}] * 10)
    back = read_back(board, RELAY, "net", reports({"netStaChan": 11}), 2.0, QUICK)
    assert back.outcome == "not_confirmed" and back.answers == 3
    assert back.fields == {"netStaChan": 6} and "3 times" in back.reason


def test_a_silent_board_times_out() -> None:
    back = read_back(Scripted([]), RELAY, "net", reports({"netStaChan": 11}), 0.2, QUICK)
    assert back.outcome == "timed_out" and not back.answered


def test_back_after_a_restart_asks_only_after_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    board = Scripted([None, None, {"firmware": "cloudy", "version": "v1"}])
    timings = ReadBackTimings(ask_timeout_s=0.05, gap_s=0.0, grace_s=2.0)
    now = [100.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    back = await_back(board, RELAY, 100.0, 30.0, timings, clock=lambda: now[0], sleep=sleep)
    assert back.outcome == "confirmed" and slept[0] == pytest.approx(2.0)
    assert len(board.asked) == 3 and board.asked[0] == {"typ": "cfg", "comp": "app"}


def test_a_board_that_never_answers_again_is_timed_out() -> None:
    back = await_back(Scripted([]), RELAY, 0.0, 0.0, QUICK)
    assert back.outcome == "timed_out" and "did not come back" in back.reason


def test_only_the_time_ends_a_read_back_without_a_disagreement_limit() -> None:
    board = Scripted([{"netStaChan": 6}] * 5 + [{"netStaChan": 11}])
    patient = ReadBackTimings(ask_timeout_s=0.05, gap_s=0.0, disagreements=None)
    back = read_back(board, RELAY, "net", reports({"netStaChan": 11}), 2.0, patient)
    assert back.outcome == "confirmed" and back.answers == 6


def test_secrets_are_left_out_of_what_a_read_back_compares() -> None:
    write = protocol.config_write("net", {"netStaChan": 6, "netStaPwd": "new-wifi-pass"})
    expected = compared_fields(write)
    assert expected == {"netStaChan": 6}
    board = Scripted([{"netStaChan": "6", "netStaPwd": "••••••"}])
    assert read_back(board, RELAY, "net", reports(expected), 1.0, QUICK).confirmed
    assert differing(expected, {"netStaPwd": "new-wifi-pass"}) == ["netStaChan"]
    assert differing({"b": 1, "a": "x"}, {"a": "y", "b": "1"}) == ["a"]


class Stops(Scripted):
    """Sets `stopping` when asked its `after`-th question (then answers as scripted)."""

    def __init__(self, answers: list[Mapping[str, Any] | None], after: int) -> None:
        super().__init__(answers)
        self.stopping = threading.Event()
        self.after = after

    def request(self, relay: str, command: Command, timeout: float = 5.0) -> DeviceMessage:
        if len(self.asked) + 1 == self.after:
            self.stopping.set()
        return super().request(relay, command, timeout)


def test_a_stopped_read_back_judges_nothing() -> None:
    board = Stops([{"netStaChan": 6}] * 10, after=2)
    back = read_back(
        board, RELAY, "net", reports({"netStaChan": 11}), 30.0, QUICK, stopping=board.stopping
    )
    assert back.stopped and back.answers == 2 and len(board.asked) == 2
    assert back.outcome == "not_confirmed", "the outcome so far, not a verdict"


def test_a_stopped_wait_for_a_restart_asks_nothing() -> None:
    board = Stops([], after=1)
    board.stopping.set()
    timings = ReadBackTimings(ask_timeout_s=0.05, gap_s=0.0, grace_s=30.0)
    started = time.monotonic()
    back = await_back(board, RELAY, time.time(), 60.0, timings, stopping=board.stopping)
    assert back.stopped and board.asked == [] and time.monotonic() - started < 1.0


def test_a_board_found_back_after_the_time_is_up_is_back() -> None:
    """A worker resumed long after the rst asks once rather than judge by the clock."""
    board = Scripted([{"firmware": "cloudy", "version": "v1"}])
    back = await_back(board, RELAY, time.time() - 600, 60.0, QUICK)
    assert back.confirmed and len(board.asked) == 1
