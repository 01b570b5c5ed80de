"""`smib decode [--json] HEX`: the output operators script against, and its failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from smib_core import sas
from smib_core.cli import main

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "sas_vectors.json").read_text(encoding="utf-8")
)
VALID: list[dict[str, Any]] = VECTORS["valid"]
INVALID: list[dict[str, Any]] = VECTORS["invalid"]
OTHER_ORDER = next(v for v in VALID if "another order" in v["name"])


def _run(argv: list[str]) -> int:
    """The exit code, whether main returns it or argparse exits."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def test_decode_json_exact_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["decode", "--json", OTHER_ORDER["hex"]]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.count("\n") == 1
    printed = json.loads(out)
    assert printed == {
        "address": 1,
        "command": "6F",
        "game": 0,
        "meters": [
            {"code": "0024", "name": "Total drop", "size": 4, "value": 413261},
            {"code": "0000", "name": "Total coin in (handle)", "size": 4, "value": 99999999},
            {"code": "000B", "name": "Credits from bills accepted", "size": 4, "value": 276500},
            {"code": "00A0", "name": "AFT transfer meter 00A0", "size": 9, "value": 89475290},
            {"code": "0005", "name": "Games played", "size": 4, "value": 10335},
        ],
    }
    assert list(printed) == ["address", "command", "game", "meters"]
    assert all(list(m) == ["code", "name", "size", "value"] for m in printed["meters"])


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_decode_json_of_every_valid_vector(
    vector: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["decode", "--json", vector["hex"]]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["address"], printed["command"], printed["game"]) == (
        vector["address"],
        vector["command"],
        vector["game"],
    )
    assert [{k: m[k] for k in ("code", "size", "value")} for m in printed["meters"]] == vector[
        "meters"
    ]
    assert all(m["name"] == sas.meter_spec(m["code"]).name for m in printed["meters"])


def test_decode_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    vector = next(v for v in VALID if "size 0" in v["name"])
    assert _run(["decode", vector["hex"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "address 1  command 6F  game 0"
    assert len(lines) == 4
    assert "1,234" in lines[1] and "Total coin in (handle)" in lines[1]
    assert "not supported" in lines[2]


@pytest.mark.parametrize(
    "vector", [v for v in INVALID if v["reason"] != "device_error"], ids=lambda v: v["name"]
)
@pytest.mark.parametrize("as_json", [True, False])
def test_decode_invalid_frame_exits_non_zero_with_the_reason(
    vector: dict[str, Any], as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["decode", "--json", vector["hex"]] if as_json else ["decode", vector["hex"]]
    assert _run(argv) != 0
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{vector['reason']}:" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("argv", [["decode", "-1"], ["decode", "--json", "-1"]])
def test_decode_minus_one_exits_non_zero(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(argv) != 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "could not read the machine" in err
