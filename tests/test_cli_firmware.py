"""`smib firmware add|list|archive` against the embedded database, audited as the CLI user."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from smib_core.cli import main
from smib_core.store.audit import AuditTrail

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_db(mongo_db: Any, embedded_mongo: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MONGO_URI", embedded_mongo.uri)
    monkeypatch.setenv("MONGO_DB", mongo_db.name)
    return mongo_db


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def test_add_list_archive(cli_db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "wifi.bin"
    image.write_bytes(b"\xe9" + bytes(5000))
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    argv = ["firmware", "add", str(image), "--product", "cloudy", "--version", "v0.0.2"]
    assert _run([*argv, "--notes", "door fix"]) == 0
    assert f"added cloudy v0.0.2: cloudy_v0.0.2.bin, 5,001 bytes, sha256 {sha}" in (
        capsys.readouterr().out
    )
    assert _run(argv) == 1
    assert "already in the library" in capsys.readouterr().err

    assert _run(["firmware", "list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["product"], row["version"], row["sha256"], row["notes"]) == (
        "cloudy",
        "v0.0.2",
        sha,
        "door fix",
    )
    assert row["uploaded_by"].startswith("cli:")

    assert _run(["firmware", "archive", "cloudy", "v0.0.2"]) == 0
    assert _run(["firmware", "list"]) == 0
    assert "no firmware" in capsys.readouterr().out
    assert _run(["firmware", "list", "--all"]) == 0
    assert "(archived)" in capsys.readouterr().out
    assert _run(["firmware", "archive", "cloudy", "v9"]) == 1
    assert "no firmware cloudy version v9" in capsys.readouterr().err

    kinds = AuditTrail(cli_db).query()["kind"].tolist()
    assert kinds == ["firmware_archive", "firmware_add"]


def test_refuses_what_is_not_a_firmware(
    cli_db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.bin").write_bytes(b"")
    for name, message in (
        ("notes.txt", "its name must end .bin"),
        ("empty.bin", "is empty"),
        ("missing.bin", "is not a file"),
    ):
        argv = ["firmware", "add", str(tmp_path / name), "--product", "p", "--version", "1"]
        assert _run(argv) == 1
        assert message in capsys.readouterr().err
