"""Meters on request: names, money by the cabinet's denomination, unsupported meters,
and the reasons a reading fails."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from smib_core import sas
from smib_core.auth import Principal, Role
from smib_core.errors import RequestTimeout
from smib_core.protocol import Command, Parsed, Topics, parse_device_message
from smib_core.services.actions import BoardActions
from smib_core.services.meters_view import NOT_SUPPORTED, meter_table, read_meters

RELAY = "e831cdfa8384"


def reading(*meters: sas.Meter) -> sas.MeterReading:
    return sas.MeterReading(1, "6F", 0, meters)


def test_credit_meters_are_money_by_the_denomination() -> None:
    table = meter_table(
        reading(sas.Meter("0000", 5, 123_456), sas.Meter("0005", 4, 789)), denomination=0.25
    )
    assert table[["code", "meter", "unit"]].values.tolist() == [
        ["0000", "Total coin in (handle)", "credits"],
        ["0005", "Games played", "count"],
    ]
    assert table["value"].tolist() == [123_456, 789]
    assert table["money"].iloc[0] == 30_864.0
    assert math.isnan(table["money"].iloc[1])
    assert table["money_text"].tolist() == ["30,864.00", ""]


def test_cents_meters_are_money_whatever_the_denomination() -> None:
    table = meter_table(reading(sas.Meter("000D", 5, 12_345)), denomination=1.0)
    assert table["money"].tolist() == [123.45]


def test_an_unsupported_meter_has_no_value_and_says_so() -> None:
    table = meter_table(reading(sas.Meter("0002", 0, None), sas.Meter("00FF", 4, 7)), 0.01)
    assert pd.isna(table["value"].iloc[0])
    assert table["money_text"].iloc[0] == NOT_SUPPORTED
    assert table["meter"].iloc[1] == "Meter 00FF" and table["unit"].iloc[1] == "unknown"
    assert table["value"].iloc[1] == 7 and table["money_text"].iloc[1] == ""


def test_an_unregistered_board_shows_credits_without_money() -> None:
    table = meter_table(reading(sas.Meter("0000", 5, 100)), denomination=None)
    assert table["value"].tolist() == [100] and table["money_text"].tolist() == [""]


@dataclass
class Bus:
    """Answers the meter request with `pyd` as a board would (None: never answers)."""

    pyd: str | None

    def send(self, relay: str, command: Command) -> None: ...

    def request(self, relay: str, command: Command, timeout: float = 5.0) -> Parsed:
        if self.pyd is None:
            raise RequestTimeout(f"board {relay} did not answer 'meters' within {timeout:.1f} s")
        payload = json.dumps({"rly": relay, "typ": "rsp", "sta": "", "pyd": self.pyd})
        return parse_device_message("sas/gy/server", payload.encode(), Topics())


class Audit:
    def record(self, *args: Any, **kwargs: Any) -> str:
        return "0"

    def update_outcome(self, *args: Any, **kwargs: Any) -> None: ...


def read(pyd: str | None) -> tuple[Any, datetime]:
    actions = BoardActions(Bus(pyd), Audit(), Principal("max", Role.MANAGER))  # type: ignore[arg-type]
    return read_meters(actions, RELAY, timeout=0.1)


def test_read_meters_returns_the_reading_and_when() -> None:
    frame = sas.encode_meter_reply([sas.Meter("0000", 4, 42)]).hex().upper()
    result, at = read(frame)
    assert isinstance(result, sas.MeterReading) and result.values() == {"0000": 42}
    assert at.tzinfo is UTC or at.utcoffset() is not None
    assert abs((datetime.now(UTC) - at).total_seconds()) < 5


def test_read_meters_explains_failures() -> None:
    assert "did not answer" in read(None)[0]
    assert read("-1")[0] == "the board could not read the machine (-1)"
    good = sas.encode_meter_reply([sas.Meter("0000", 4, 42)]).hex().upper()
    spoiled = good[:-4] + ("0000" if good[-4:] != "0000" else "1111")
    assert read(spoiled)[0].startswith("the machine's reply failed a check (crc:")
