"""The read-back rule (services.readback) with a scripted board: no broker needed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from smib_core import protocol
from smib_core.errors import RequestTimeout
from smib_core.protocol import Command, ConfigReply, DeviceMessage
from smib_core.services.readback import ReadBackTimings, await_back, read_back, reports

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
