"""Rollout use cases without a database: versions, shares, batch progress, tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from smib_core.errors import InvalidInput
from smib_core.services import rollout_plan as plan
from smib_core.services.rollout import confirmed_share, same_version
from smib_core.store.firmware import FirmwareInfo
from smib_core.store.rollouts import BoardState, Rollout


def board(relay: str, batch: int, state: str, **kw: Any) -> BoardState:
    return BoardState("r1", relay, 0, batch, state, **kw)


BOARDS = [
    board("a", 0, "confirmed", times={"confirmed": 100.0}, previous_version="v1", version="v2"),
    board("b", 0, "failed", reason="device kept version v1"),
    board("c", 0, "skipped"),
    board("d", 1, "command_sent", command_at=90.0),
    board("e", 1, "queued"),
    board("f", 2, "queued"),
]


def test_versions_compare_without_case_or_a_leading_v() -> None:
    assert same_version("v1.5.0", "1.5.0") and same_version("V1.5.0 ", "v1.5.0")
    assert not same_version("v1.5.1", "v1.5.0")
    assert not same_version("", "") and not same_version(None, "v1")


def test_confirmed_share_leaves_skipped_and_unfinished_boards_out() -> None:
    assert confirmed_share(BOARDS) == 50.0
    assert confirmed_share([board("x", 0, "skipped"), board("y", 0, "queued")]) is None


def test_counts_and_batches() -> None:
    counts = plan.board_counts(BOARDS)
    assert counts == {
        "confirmed": 1,
        "skipped": 1,
        "not_confirmed": 1,
        "updating": 1,
        "queued": 2,
        "not_started": 0,
        "total": 6,
    }
    assert plan.done_fraction(counts) == 0.5
    lines = plan.batch_lines(BOARDS)
    assert lines == [
        (1.0, "Batch 1 · 1 of 3 confirmed · 1 not confirmed · 1 skipped · done"),
        (0.0, "Batch 2 · 0 of 2 confirmed · 1 updating · updating"),
        (0.0, "Batch 3 · 0 of 1 confirmed · waiting"),
    ]
    assert plan.batch_count(5, 2) == "3 batches" and plan.batch_count(2, 5) == "1 batch"


def test_boards_table_has_times_as_utc_datetimes() -> None:
    table = plan.boards_table(BOARDS)
    assert table.columns.tolist() == plan.BOARD_COLUMNS
    first = table.iloc[0]
    assert (first["relay"], first["batch"], first["from_version"]) == ("a", 1, "v1")
    assert first["finished_at"] == datetime.fromtimestamp(100.0, UTC)
    assert table.iloc[3]["command_at"] == datetime.fromtimestamp(90.0, UTC)
    assert table["finished_at"].isna().tolist() == [False, True, True, True, True, True]


def test_targets_by_version() -> None:
    class Bus:
        def firmware(self, relay: str) -> tuple[str, str] | None:
            return {"a": ("cloudy", "v1.4.2"), "b": ("cloudy", "v2.0.0")}.get(relay)

    versions = plan.reported_versions(Bus(), ["a", "b", "c"])
    assert versions == {"a": "v1.4.2", "b": "v2.0.0", "c": ""}
    assert plan.relays_on(versions, ["v1.4.2", "v9"]) == ["a"]
    assert plan.already_on(versions, "2.0.0") == ["b"]


def test_find_firmware_by_version_then_product() -> None:
    def info(product: str, version: str) -> FirmwareInfo:
        return FirmwareInfo(
            "id",
            product,
            version,
            f"{product}_{version}.bin",
            1,
            "0" * 64,
            "",
            datetime.now(UTC),
            "t",
            False,
        )

    class Library:
        def list(self) -> list[FirmwareInfo]:
            return [info("cloudy", "v2"), info("sunny", "v2"), info("cloudy", "v3")]

    library: Any = Library()
    assert plan.find_firmware(library, "v3").product == "cloudy"
    assert plan.find_firmware(library, "v2", "sunny").product == "sunny"
    with pytest.raises(InvalidInput, match="choose one with --product"):
        plan.find_firmware(library, "v2")
    with pytest.raises(InvalidInput, match="no firmware version v9"):
        plan.find_firmware(library, "v9")


def test_summary_and_http_status_of_nothing() -> None:
    rollout = Rollout(
        "r1",
        "f",
        "cloudy",
        "v2",
        "cloudy_v2.bin",
        ("a",),
        5,
        80.0,
        60.0,
        "tina",
        "technician",
        "local",
        "running",
        "",
        1_000.0,
        1_000.0,
    )
    text = plan.summary_text(rollout, BOARDS, now=1_075.0)
    assert "Started by tina" in text and "running for 1 min 15 s" in text
    assert "50% confirmed" in text and "at least 80%" in text
    done = replace(rollout, state="completed", finished_at=1_003.0)
    assert "took 3 s" in plan.summary_text(done, [])
    assert plan.http_status("http://127.0.0.1:9/nothing", timeout=0.2) is None
    assert plan.http_status("ftp://example/") is None
