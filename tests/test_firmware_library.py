"""The firmware library on the embedded database: GridFS bytes + one document each."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from smib_core import protocol
from smib_core.errors import InvalidInput
from smib_core.firmware.names import firmware_file_name, is_firmware_file_name
from smib_core.store.firmware import FirmwareLibrary

pytestmark = pytest.mark.integration

IMAGE = bytes(range(256)) * 1000 + b"\xe9 tail"  # 256 kB, crosses GridFS chunk borders


@pytest.fixture
def library(mongo_db: Any) -> FirmwareLibrary:
    return FirmwareLibrary(mongo_db)


def test_add_list_get_read_round_trip(library: FirmwareLibrary) -> None:
    before = datetime.now(UTC)
    info = library.add(
        IMAGE,
        filename="wifi.bin",
        product="cloudy",
        version="v0.0.2",
        notes=" fixes the door event ",
        actor="alice",
    )
    assert info.filename == "cloudy_v0.0.2.bin"
    assert protocol.ota_start(info.filename).payload == {"typ": "ota_ud", "bin": info.filename}
    assert info.size == len(IMAGE)
    assert info.sha256 == hashlib.sha256(IMAGE).hexdigest()
    assert (info.notes, info.uploaded_by, info.archived) == ("fixes the door event", "alice", False)
    assert info.original_name == "wifi.bin"
    assert before - timedelta(seconds=1) <= info.uploaded_at <= datetime.now(UTC)
    assert info.uploaded_at.tzinfo is not None

    assert library.list() == [info]
    assert library.get("cloudy", "v0.0.2") == info
    assert library.by_filename("cloudy_v0.0.2.bin") == info
    assert library.by_id(info.id) == info
    assert library.get("cloudy", "v9") is None
    assert library.by_filename("other.bin") is None

    assert library.read(info.id) == IMAGE
    with library.open(info.id) as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == info.sha256


def test_add_from_a_path(library: FirmwareLibrary, tmp_path: Path) -> None:
    path = tmp_path / "board-1.2.bin"
    path.write_bytes(IMAGE)
    info = library.add(path, product="gli", version="1.2+build.7", actor="bob")
    assert (info.original_name, info.filename) == ("board-1.2.bin", "gli_1.2-build.7.bin")
    assert library.read(info.id) == IMAGE


def test_duplicate_product_and_version_is_refused(library: FirmwareLibrary) -> None:
    library.add(IMAGE, filename="a.bin", product="cloudy", version="v1", actor="alice")
    with pytest.raises(InvalidInput, match="cloudy version v1 is already in the library"):
        library.add(b"other", filename="b.bin", product="cloudy", version="v1", actor="bob")
    # two versions that would be served under the same file name
    library.add(IMAGE, filename="a.bin", product="cloudy", version="v1+a", actor="alice")
    with pytest.raises(InvalidInput, match=r"would be served as cloudy_v1-a\.bin"):
        library.add(IMAGE, filename="a.bin", product="cloudy", version="v1-a", actor="alice")
    assert [i.version for i in library.list()] == ["v1+a", "v1"]


@pytest.mark.parametrize(
    ("data", "filename", "product", "version", "message"),
    [
        (b"", "empty.bin", "cloudy", "v1", "empty.bin is empty"),
        (IMAGE, "firmware.hex", "cloudy", "v1", "its name must end .bin"),
        (IMAGE, None, "cloudy", "v1", "its name must end .bin"),
        (IMAGE, "a.bin", "", "v1", "the product '' is not valid"),
        (IMAGE, "a.bin", "../etc", "v1", "the product '../etc' is not valid"),
        (IMAGE, "a.bin", "cloudy", "v1/../x", "the version 'v1/../x' is not valid"),
        (IMAGE, "a.bin", "cloudy", "v" * 41, "is not valid"),
    ],
)
def test_bad_uploads_are_refused(
    library: FirmwareLibrary,
    data: bytes,
    filename: str | None,
    product: str,
    version: str,
    message: str,
) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        library.add(data, filename=filename, product=product, version=version, actor="alice")
    assert library.list(include_archived=True) == []


def test_archive_hides_from_the_list_but_keeps_the_file(library: FirmwareLibrary) -> None:
    old = library.add(IMAGE, filename="a.bin", product="cloudy", version="v1", actor="alice")
    new = library.add(IMAGE[:100], filename="b.bin", product="cloudy", version="v2", actor="al")
    archived = library.archive(old.id, actor="bob")
    assert archived.archived
    assert library.list() == [new]
    assert {i.version for i in library.list(include_archived=True)} == {"v1", "v2"}
    assert library.read(old.id) == IMAGE
    with pytest.raises(InvalidInput, match=r"already in the library \(archived\)"):
        library.add(IMAGE, filename="a.bin", product="cloudy", version="v1", actor="alice")
    with pytest.raises(InvalidInput, match="no firmware"):
        library.archive("not-an-id")
    with pytest.raises(InvalidInput, match="no firmware"):
        library.archive("0" * 24)


def test_served_file_names_follow_the_protocol_rule() -> None:
    assert firmware_file_name("Cloudy WiFi", "v1.0.0") == "Cloudy-WiFi_v1.0.0.bin"
    assert firmware_file_name("x", "1..2") == "x_1.2.bin"
    for bad in ("../a.bin", "a/b.bin", "a..bin", ".bin", "a.bin\x00", "a.BIN", "a b.bin"):
        assert not is_firmware_file_name(bad), bad
    assert is_firmware_file_name("cloudy_v0.0.1.bin")
