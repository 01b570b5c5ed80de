"""The casino's clock from the environment: SMIB_TIMEZONE (IANA) and the gaming day's
local start hour; bad values are refused with a sentence."""

from __future__ import annotations

import pytest

from smib_core.errors import InvalidInput
from smib_core.settings import Settings


def test_the_time_zone_and_start_hour_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {"SMIB_TIMEZONE": "America/Los_Angeles", "SMIB_GAMING_DAY_START_HOUR": "6"}
    )
    assert (settings.timezone, settings.gaming_day_start_hour) == ("America/Los_Angeles", 6)
    assert Settings.from_env({}).timezone == "UTC"
    assert Settings.from_env({"SMIB_TIMEZONE": " "}).timezone == "UTC"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SMIB_TIMEZONE": "Mars/Olympus"}, "IANA time zone"),
        ({"SMIB_TIMEZONE": "../etc/passwd"}, "IANA time zone"),
        ({"SMIB_GAMING_DAY_START_HOUR": "24"}, "0..23"),
        ({"SMIB_GAMING_DAY_START_HOUR": "6.5"}, "whole hour"),
    ],
)
def test_bad_clock_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Settings.from_env(env)


def test_the_jackpot_flag_is_gone() -> None:
    assert not hasattr(Settings(), "net_win_subtracts_jackpot")
