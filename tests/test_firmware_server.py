"""The firmware HTTP server: serves library files only, byte-exact, and logs downloads.

Traversal attempts go over a raw socket: urllib and http.client would normalise or
refuse some of these paths before they ever reached the server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from smib_core.errors import StoreError
from smib_core.firmware import materialise
from smib_core.firmware.server import (
    DownloadRecord,
    FirmwareServer,
    RangeNotSatisfiable,
    Requested,
    byte_range,
    requested,
)
from smib_core.settings import Settings
from smib_core.store.firmware import FirmwareInfo, FirmwareLibrary

IMAGE = hashlib.sha256(b"seed").digest() * 10_000  # 320 kB: several send chunks


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def request(port: int, method: str, target: str, headers: dict[str, str] | None = None) -> Reply:
    lines = [f"{method} {target} HTTP/1.1", "Host: board", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines)
    return Reply(int(status_line.split()[1]), {k.lower(): v for k, v in parsed.items()}, body)


BOARD = "e831cd000001"
TOKEN = "5f0c2a9be1d34c7781a0b2c3d4e5f601"


@dataclass
class Served:
    server: FirmwareServer
    library: FirmwareLibrary
    info: FirmwareInfo
    folder: Path
    records: list[DownloadRecord]

    def get(self, target: str, headers: dict[str, str] | None = None) -> Reply:
        return request(self.server.port, "GET", target, headers)


@pytest.fixture
def served(mongo_db: Any, tmp_path: Path) -> Iterator[Served]:
    folder = tmp_path / "firmwares"
    folder.mkdir()
    (folder / ".gitkeep").touch()
    (tmp_path / "secret.bin").write_bytes(b"not for boards")
    library = FirmwareLibrary(mongo_db)
    info = library.add(IMAGE, filename="w.bin", product="cloudy", version="v2", actor="alice")
    materialise.materialise(library, info, folder)
    records: list[DownloadRecord] = []
    server = FirmwareServer(
        folder,
        "127.0.0.1",
        0,
        allowed=materialise.in_library(library),
        on_download=records.append,
        board_token=lambda relay, token: (relay, token) == (BOARD, TOKEN),
    )
    server.start()
    try:
        yield Served(server, library, info, folder, records)
    finally:
        server.stop()


pytestmark = pytest.mark.integration


def test_serves_the_exact_bytes_and_logs_the_download(served: Served) -> None:
    reply = served.get(f"/firmwares/{served.info.filename}")
    assert reply.status == 200
    assert reply.headers["content-length"] == str(len(IMAGE))
    assert reply.headers["content-type"] == "application/octet-stream"
    assert reply.headers["accept-ranges"] == "bytes"
    assert hashlib.sha256(reply.body).hexdigest() == served.info.sha256
    [record] = served.server.downloads()
    assert record == served.records[0]
    assert (record.client, record.name, record.status) == ("127.0.0.1", "cloudy_v2.bin", 200)
    assert (record.bytes_sent, record.size, record.complete) == (len(IMAGE), len(IMAGE), True)
    assert datetime.now(UTC) - record.at < timedelta(seconds=5)


def test_a_board_path_with_its_token_names_the_board_in_the_log(served: Served) -> None:
    reply = served.get(f"/firmwares/{BOARD}/{TOKEN}/{served.info.filename}")
    assert (reply.status, reply.body) == (200, IMAGE)
    plain = served.get(f"/firmwares/{served.info.filename}")
    assert plain.status == 200
    assert [r.relay for r in served.server.downloads()] == [BOARD, None]


@pytest.mark.parametrize(
    "path",
    [
        f"/firmwares/{BOARD}/{{name}}",  # no token (the old per-board path)
        f"/firmwares/{BOARD}/{'0' * 32}/{{name}}",  # a wrong token
        f"/firmwares/{BOARD}/{TOKEN[:-1]}/{{name}}",  # almost the token
        f"/firmwares/e831cd000002/{TOKEN}/{{name}}",  # another board's name, this token
        f"/firmwares/{BOARD}/{TOKEN}x/{{name}}",
        f"/firmwares/{BOARD}//{{name}}",
    ],
)
def test_nobody_downloads_in_a_boards_name_without_its_token(
    served: Served, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The forged-download attack: `curl …/firmwares/<any relay>/<file>` used to create a
    complete download record for that relay. Now it is a 404 that records nothing."""
    caplog.set_level(logging.DEBUG, logger="smib_core.firmware")
    reply = served.get(path.format(name=served.info.filename))
    assert reply.status == 404 and reply.body != IMAGE
    assert served.server.downloads() == [] and served.records == []
    assert TOKEN[:-1] not in caplog.text  # a token is never logged in clear


def test_a_server_without_token_check_serves_no_board_path(served: Served) -> None:
    served.server.board_token = None
    reply = served.get(f"/firmwares/{BOARD}/{TOKEN}/{served.info.filename}")
    assert reply.status == 404 and served.server.downloads() == []


def test_the_token_is_masked_in_the_request_log(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="smib_core.firmware")
    assert served.get(f"/firmwares/{BOARD}/{TOKEN}/{served.info.filename}").status == 200
    assert served.get(f"/firmwares/{BOARD}/{TOKEN}/nothing.bin").status == 404
    assert TOKEN not in caplog.text and f"{BOARD}/••••••/" in caplog.text


def test_base_url_is_what_a_board_fetches_from(served: Served) -> None:
    assert served.server.base_url == f"http://127.0.0.1:{served.server.port}/firmwares/"
    path = served.server.base_url.split(str(served.server.port), 1)[1]
    assert served.get(path + served.info.filename).body == IMAGE


def test_head_has_the_length_and_no_body(served: Served) -> None:
    reply = request(served.server.port, "HEAD", f"/firmwares/{served.info.filename}")
    assert (reply.status, reply.body) == (200, b"")
    assert reply.headers["content-length"] == str(len(IMAGE))
    assert served.server.downloads() == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_not_allowed(served: Served, method: str) -> None:
    reply = request(served.server.port, method, f"/firmwares/{served.info.filename}")
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "target",
    [
        "/firmwares/../secret.bin",
        "/firmwares/%2e%2e/secret.bin",
        "/firmwares/%2E%2E%2Fsecret.bin",
        "/firmwares/..%2fsecret.bin",
        "/firmwares/..%2Fsecret.bin",
        "/firmwares/%252e%252e%252fsecret.bin",
        "/firmwares/..%5csecret.bin",
        "/firmwares/..\\secret.bin",
        "/firmwares/%2e%2e%5csecret.bin",
        "//etc/passwd",
        "/etc/passwd",
        "/firmwares//etc/passwd",
        "/firmwares/%2fetc%2fpasswd",
        "/firmwares/cloudy_v2.bin%00",
        "/firmwares/cloudy_v2.bin%00.bin",
        "/firmwares/./cloudy_v2.bin",
        "/firmwares/cloudy_v2.bin/",
        "/firmwares/cloudy_v2.bin?x=1",
        "/firmwares/",
        "/firmwares",
        "/",
        "/firmwares/.served.json",
        "/firmwares/.gitkeep",
        "http://board/firmwares/cloudy_v2.bin",
        "/firmwares/%ff.bin",
        "/firmwares/e831cd000001/../secret.bin",
        "/firmwares/e831cd000001/%2e%2e%2fsecret.bin",
        "/firmwares/e831cd000001/x/cloudy_v2.bin",
        "/firmwares/e831cd000001/",
        "/firmwares/E831CD000001/cloudy_v2.bin",
        "/firmwares/e831cd00000/cloudy_v2.bin",
        "/firmwares/e831cd0000011/cloudy_v2.bin",
        "/firmwares/e831cd000001/cloudy_v2.bin?x=1",
    ],
)
def test_anything_but_a_served_file_is_not_found(served: Served, target: str) -> None:
    reply = served.get(target)
    assert reply.status == 404, target
    assert b"not for boards" not in reply.body
    assert served.server.downloads() == []


def test_a_file_in_the_folder_but_not_in_the_library_is_not_served(
    served: Served, mongo_db: Any
) -> None:
    (served.folder / "stray.bin").write_bytes(b"dropped in by hand")
    assert served.get("/firmwares/stray.bin").status == 404
    # materialised (in the index) from another library: still not a file of ours
    other_db = mongo_db.client[f"t_other_{uuid.uuid4().hex[:8]}"]
    other = FirmwareLibrary(other_db)
    foreign = other.add(b"foreign", filename="f.bin", product="gli", version="v9", actor="eve")
    materialise.materialise(other, foreign, served.folder)
    assert materialise.is_materialised(served.folder, "gli_v9.bin")
    assert served.get("/firmwares/gli_v9.bin").status == 404
    mongo_db.client.drop_database(other_db.name)


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, None),
        ("bytes=-10", -10, None),
        ("bytes=5-5", 5, 5),
        ("bytes=300000-999999999", 300000, None),
    ],
)
def test_a_single_range_is_served_as_206(
    served: Served, header: str, first: int, last: int | None
) -> None:
    reply = served.get(f"/firmwares/{served.info.filename}", {"Range": header})
    expected = IMAGE[first : None if last is None else last + 1]
    assert reply.status == 206
    assert reply.body == expected
    assert reply.headers["content-length"] == str(len(expected))
    start = first % len(IMAGE)
    assert (
        reply.headers["content-range"] == f"bytes {start}-{start + len(expected) - 1}/{len(IMAGE)}"
    )
    [record] = served.server.downloads()
    assert (record.status, record.bytes_sent, record.complete) == (206, len(expected), True)


def test_an_unsatisfiable_range_is_416(served: Served) -> None:
    for header in (f"bytes={len(IMAGE)}-", "bytes=-0"):
        reply = served.get(f"/firmwares/{served.info.filename}", {"Range": header})
        assert reply.status == 416
        assert reply.headers["content-range"] == f"bytes */{len(IMAGE)}"
    for ignored in ("bytes=9-2", "bytes=0-1,5-6", "items=0-1", "bytes=x-y"):
        reply = served.get(f"/firmwares/{served.info.filename}", {"Range": ignored})
        assert (reply.status, reply.body == IMAGE) == (200, True), ignored


def test_a_range_of_thousands_of_digits_is_answered(served: Served) -> None:
    """Python refuses int() of more than 4,300 digits: that once closed the connection."""
    huge = "9" * 4400
    reply = served.get(f"/firmwares/{served.info.filename}", {"Range": f"bytes={huge}-"})
    assert reply.status == 416
    assert reply.headers["content-range"] == f"bytes */{len(IMAGE)}"
    for whole in (f"bytes=0-{huge}", f"bytes=-{huge}", f"bytes={'0' * 4400}-"):
        reply = served.get(f"/firmwares/{served.info.filename}", {"Range": whole})
        assert (reply.status, reply.body == IMAGE) == (206, True), whole[:12]
    assert byte_range(f"bytes=000{'0' * 4400}7-8", 10) == (7, 8)


def test_byte_range_and_requested_without_a_server() -> None:
    assert byte_range(None, 10) is None
    assert byte_range("bytes=2-", 10) == (2, 9)
    assert byte_range("bytes=-20", 10) == (0, 9)
    assert byte_range("bytes=3-100", 10) == (3, 9)
    with pytest.raises(RangeNotSatisfiable):
        byte_range("bytes=0-", 0)
    assert requested("/firmwares/cloudy_v2.bin") == Requested("cloudy_v2.bin")
    assert requested("/firmwares/cloudy%5Fv2.bin") == Requested("cloudy_v2.bin")
    assert requested("/firmwares/a..bin") is None
    board = requested(f"/firmwares/e831cd000001/{TOKEN}/cloudy_v2.bin")
    assert board == Requested("cloudy_v2.bin", "e831cd000001", TOKEN)
    assert requested("/firmwares/e831cd000001/cloudy_v2.bin") is None  # no token
    assert requested("/firmwares/e831cd000001/short/cloudy_v2.bin") is None


def test_cleanup_removes_idle_files_and_keeps_fresh_ones(served: Served) -> None:
    name, folder = served.info.filename, served.folder
    (folder / "stray.bin").write_bytes(b"x")
    used = datetime.now(UTC)
    assert materialise.touch(folder, name, used)
    assert served.server.cleanup(now=used + timedelta(minutes=29)) == ["stray.bin"]
    assert served.get(f"/firmwares/{name}").status == 200  # a download is a use
    last_used = materialise.served(folder)[name].last_used
    assert last_used >= used
    assert served.server.cleanup(now=last_used + timedelta(minutes=30)) == []
    assert served.server.cleanup(now=last_used + timedelta(minutes=31)) == [name]
    assert sorted(p.name for p in folder.iterdir()) == [".gitkeep", ".served.json"]
    assert served.get(f"/firmwares/{name}").status == 404
    materialise.materialise(served.library, served.info, folder)  # the next rollout
    assert served.get(f"/firmwares/{name}").body == IMAGE


def test_the_index_survives_a_restart(served: Served) -> None:
    name, folder = served.info.filename, served.folder
    used = materialise.served(folder)[name].last_used
    served.server.stop()
    again = FirmwareServer(folder, "127.0.0.1", 0, allowed=materialise.in_library(served.library))
    with again:
        assert request(again.port, "GET", f"/firmwares/{name}").body == IMAGE
        assert again.cleanup(now=used + timedelta(minutes=10)) == []
        assert again.cleanup(now=datetime.now(UTC) + timedelta(minutes=31)) == [name]
        assert request(again.port, "GET", f"/firmwares/{name}").status == 404
    assert not again.running


def test_materialise_refuses_a_damaged_file_and_repairs_a_changed_copy(served: Served) -> None:
    target = served.folder / served.info.filename
    target.write_bytes(b"tampered")
    assert materialise.materialise(served.library, served.info, served.folder) == target
    assert target.read_bytes() == IMAGE
    wrong = dataclasses.replace(served.info, sha256="0" * 64)
    with pytest.raises(StoreError, match="damaged"):
        materialise.materialise(served.library, wrong, served.folder)
    assert sorted(p.name for p in served.folder.iterdir()) == [
        ".gitkeep",
        ".served.json",
        served.info.filename,
    ]
    assert target.read_bytes() == IMAGE


def test_base_url_from_settings_and_defaults() -> None:
    settings = Settings.from_env({"FIRMWARE_BASE_URL": "http://10.0.0.5:8808/firmwares"})
    assert FirmwareServer.from_settings(settings).base_url == "http://10.0.0.5:8808/firmwares/"
    assert FirmwareServer(bind="0.0.0.0", port=9000).base_url == "http://127.0.0.1:9000/firmwares/"
    assert FirmwareServer(bind="10.1.2.3").base_url == "http://10.1.2.3:8808/firmwares/"


def test_stop_closes_idle_and_stalled_connections(served: Served) -> None:
    # 6.4 MB: more than the server's socket send buffer can hold (4 MB at most)
    big = served.library.add(IMAGE * 20, filename="b.bin", product="big", version="1", actor="al")
    materialise.materialise(served.library, big, served.folder)
    idle = socket.create_connection(("127.0.0.1", served.server.port), timeout=5)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and no autotuning
    stalled.settimeout(5)
    stalled.connect(("127.0.0.1", served.server.port))
    stalled.sendall(f"GET /firmwares/{big.filename} HTTP/1.1\r\n\r\n".encode())
    stalled.recv(100)  # the download started; read no more of it
    started = time.monotonic()
    served.server.stop()
    assert time.monotonic() - started < 3
    assert not served.server.running
    idle.close()
    stalled.close()
    [record] = served.server.downloads()
    assert (record.name, record.status, record.complete) == (big.filename, 200, False)
    assert record.bytes_sent < big.size


def test_the_server_cleans_the_folder_periodically(served: Served) -> None:
    quick = FirmwareServer(served.folder, "127.0.0.1", 0, cleanup_every=timedelta(seconds=0.1))
    with quick:
        (served.folder / "stray.bin").write_bytes(b"dropped in by hand")
        deadline = time.monotonic() + 3
        while (served.folder / "stray.bin").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (served.folder / "stray.bin").exists()
        assert (served.folder / served.info.filename).exists()  # fresh: kept
