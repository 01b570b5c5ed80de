"""The HTTP server boards download firmware from: `GET {base_url}{file name}`.

Contract: it serves `/firmwares/<name>` and `/firmwares/<relay>/<token>/<name>` and
nothing else, and only when `name` passes the one file-name rule, is materialised in the
folder and (when `allowed` is given) is a file of the library. `<relay>` is a relay id
(12 lowercase hex digits): a rollout gives each board its own `otaURL`
(`{base_url}{relay}/{token}/`), so the download log names the board that downloaded.
`<token>` is the secret the rollout gave that board: `board_token(relay, token)` says
whether it is (the store compares in constant time); a wrong or missing token, or no
`board_token` at all, is a 404 that records nothing, so nobody can download in a
board's name. The token is masked wherever a path is logged. The name
is percent-decoded once; a `/`, `\\`, `..` or NUL in it, a directory, a query or any
other path is a 404. Only GET and HEAD (405 otherwise), one
byte range at most (206 / 416). Every GET that starts sending becomes a `DownloadRecord`:
logged, kept in a bounded list and passed to `on_download`; a rollout reads them to see
which boards downloaded. Idle files are cleaned at start and every `cleanup_every`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote_to_bytes

from smib_core.errors import SmibError
from smib_core.firmware import materialise
from smib_core.firmware.names import is_firmware_file_name
from smib_core.protocol import mask_ota_token
from smib_core.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "/firmwares/"
_CHUNK = 64 * 1024
_RANGE_RE = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")
_UNSPECIFIED_HOSTS = ("", "0.0.0.0", "::")
_RELAY_RE = re.compile(r"[0-9a-f]{12}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")


@dataclass(frozen=True, slots=True)
class DownloadRecord:
    """One GET of a firmware file. `complete`: every byte asked for was sent."""

    at: datetime
    client: str
    name: str
    status: int
    bytes_sent: int
    size: int
    complete: bool
    relay: str | None = None  # from a /firmwares/<relay>/<token>/<name> request, token checked


class RangeNotSatisfiable(Exception):
    """The Range header asks for bytes the file does not have (HTTP 416)."""


@dataclass(frozen=True, slots=True)
class Requested:
    name: str
    relay: str | None = None
    token: str = ""


def requested(target: str) -> Requested | None:
    """What a request target asks for (the file, and the board when the path names one),
    or None when it must be refused."""
    if not target.startswith(PREFIX):
        return None
    raw = target[len(PREFIX) :]
    if not raw or "?" in raw or "#" in raw:
        return None
    relay, slash, rest = raw.partition("/")
    if not slash:
        name = _file_name(raw)
        return Requested(name) if name is not None else None
    token, slash, rest = rest.partition("/")
    if not slash or not _RELAY_RE.fullmatch(relay) or not _TOKEN_RE.fullmatch(token):
        return None
    name = _file_name(rest)
    return Requested(name, relay, token) if name is not None else None


def _file_name(raw: str) -> str | None:
    """A percent-encoded file name, decoded, or None when it is not a firmware file name."""
    try:
        name = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(bad in name for bad in ("/", "\\", "..", "\x00")):
        return None
    return name if is_firmware_file_name(name) else None


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte range asked for, None for the whole file.

    Supports one range: `bytes=a-b`, `bytes=a-`, `bytes=-n`. A header that is not a single
    valid range is ignored (whole file), as RFC 9110 allows.
    """
    if not header or not header.lower().startswith("bytes=") or "," in header:
        return None
    match = _RANGE_RE.fullmatch(header[6:])
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":
        suffix = _position(last, size)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    start = _position(first, size)
    if last and _position(last, size) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable
    return start, min(_position(last, size), size - 1) if last else size - 1


def _position(digits: str, size: int) -> int:
    """A byte position of a Range header, at most `size` (anything beyond the file is
    as good as its end); never `int()` of thousands of digits, which Python refuses."""
    digits = digits.lstrip("0") or "0"
    return size if len(digits) > len(str(size)) else min(int(digits), size)


class FirmwareServer:
    """Serve the materialised firmware of `folder` on `bind`:`port` from a named thread."""

    def __init__(
        self,
        folder: Path = materialise.DEFAULT_FOLDER,
        bind: str = "127.0.0.1",
        port: int = 8808,
        *,
        allowed: Callable[[str], bool] | None = None,
        on_download: Callable[[DownloadRecord], None] | None = None,
        board_token: Callable[[str, str], bool] | None = None,
        base_url: str | None = None,
        max_idle: timedelta = materialise.MAX_IDLE,
        cleanup_every: timedelta = timedelta(minutes=1),
        log_size: int = 1000,
    ) -> None:
        self.folder = folder
        self.bind = bind
        self.allowed = allowed
        self.on_download = on_download
        self.board_token = board_token
        self.max_idle = max_idle
        self._port = port
        self._base_url = base_url
        self._cleanup_every_s = cleanup_every.total_seconds()
        self._next_cleanup = 0.0
        self._log: deque[DownloadRecord] = deque(maxlen=log_size)
        self._log_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        folder: Path = materialise.DEFAULT_FOLDER,
        allowed: Callable[[str], bool] | None = None,
        on_download: Callable[[DownloadRecord], None] | None = None,
        board_token: Callable[[str, str], bool] | None = None,
    ) -> FirmwareServer:
        """FIRMWARE_BIND, FIRMWARE_PORT and FIRMWARE_BASE_URL from the settings."""
        return cls(
            folder,
            settings.firmware_bind,
            settings.firmware_port,
            allowed=allowed,
            on_download=on_download,
            board_token=board_token,
            base_url=settings.firmware_base_url,
        )

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose when configured as 0)."""
        return int(self._httpd.server_address[1]) if self._httpd else self._port

    @property
    def base_url(self) -> str:
        """The `otaURL` boards are given: FIRMWARE_BASE_URL, else built from bind and port."""
        if self._base_url:
            return self._base_url if self._base_url.endswith("/") else f"{self._base_url}/"
        host = "127.0.0.1" if self.bind in _UNSPECIFIED_HOSTS else self.bind
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{PREFIX}"

    def start(self) -> None:
        if self.running:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cleanup()  # files that went idle while the app was down
        try:
            self._httpd = _HTTPServer(self)
        except OSError as exc:
            raise SmibError(
                f"the firmware server cannot listen on {self.bind}:{self._port}: "
                f"{exc.strerror or exc}"
            ) from exc
        self.stopping.clear()
        self._next_cleanup = time.monotonic() + self._cleanup_every_s
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="firmware-server",
            daemon=True,
        )
        self._thread.start()
        if self.board_token is None:
            log.warning(
                "firmware server without an OTA token check: it refuses every per-board "
                "URL, so rollouts cannot download (build it with services.rollout."
                "firmware_server)"
            )
        if self.bind in _UNSPECIFIED_HOSTS and not self._base_url:
            log.warning("firmware server listens on all addresses; set FIRMWARE_BASE_URL")
        log.info(
            "firmware server on %s:%d serves %s as %s",
            self.bind,
            self.port,
            self.folder,
            self.base_url,
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, abort downloads in progress and join every thread it started."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        deadline = time.monotonic() + timeout
        thread.join(timeout)
        for conn in httpd.close_connections():
            conn.join(max(0.0, deadline - time.monotonic()))
        self._httpd = self._thread = None
        self._port = int(httpd.server_address[1])

    def __enter__(self) -> FirmwareServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def downloads(self) -> list[DownloadRecord]:
        """The most recent downloads, oldest first."""
        with self._log_lock:
            return list(self._log)

    def cleanup(self, now: datetime | None = None) -> list[str]:
        return materialise.cleanup(self.folder, self.max_idle, now)

    def _periodic(self) -> None:
        if time.monotonic() < self._next_cleanup:
            return
        self._next_cleanup = time.monotonic() + self._cleanup_every_s
        try:
            self.cleanup()
        except Exception:  # the server must outlive a failed cleanup
            log.exception("firmware folder cleanup failed")

    def _record(self, record: DownloadRecord) -> None:
        with self._log_lock:
            self._log.append(record)
        log.info(
            "firmware download %s by %s: status %d, %d of %d bytes%s",
            record.name,
            record.client,
            record.status,
            record.bytes_sent,
            record.size,
            "" if record.complete else " (incomplete)",
        )
        if self.on_download is not None:
            try:
                self.on_download(record)
            except Exception:
                log.exception("firmware download callback failed")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: FirmwareServer) -> None:
        self.owner = owner
        self.address_family = socket.AF_INET6 if ":" in owner.bind else socket.AF_INET
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._connections_lock = threading.Lock()
        super().__init__((owner.bind, owner.port), _Handler)

    def service_actions(self) -> None:
        self.owner._periodic()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"firmware-download-{client_address[0]}",
            daemon=True,
        )
        with self._connections_lock:
            self._connections = {t: s for t, s in self._connections.items() if t.is_alive()}
            self._connections[thread] = request
        thread.start()

    def close_connections(self) -> list[threading.Thread]:
        """Shut every open connection (a board idle or mid-download); their threads."""
        with self._connections_lock:
            open_now = dict(self._connections)
        for sock in open_now.values():
            with contextlib.suppress(OSError):  # already closed by its thread
                sock.shutdown(socket.SHUT_RDWR)
        return list(open_now)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "SMIB-firmware/1"
    sys_version = ""
    timeout = 30  # a stalled board must not hold a thread for ever

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.command not in ("GET", "HEAD"):
            self._plain(405, "only GET and HEAD are allowed", {"Allow": "GET, HEAD"})
            return False
        return True

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        shown = tuple(mask_ota_token(a) if isinstance(a, str) else a for a in args)
        log.debug("firmware http %s: " + format, self.client_address[0], *shown)

    def _serve(self, send_body: bool) -> None:
        owner = self.server.owner
        asked = requested(self.path)
        if asked is None or not materialise.is_materialised(owner.folder, asked.name):
            return self._refuse()
        name = asked.name
        if asked.relay is not None and not self._token_ok(asked.relay, asked.token):
            return self._refuse()
        if owner.allowed is not None:
            try:
                allowed = owner.allowed(name)
            except Exception:
                log.exception("firmware server: cannot check %s against the library", name)
                return self._plain(503, "the firmware library cannot be reached")
            if not allowed:
                return self._refuse()
        try:
            fd = os.open(owner.folder / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return self._refuse()
        with os.fdopen(fd, "rb") as stream:
            info = os.fstat(stream.fileno())
            size = info.st_size
            if not stat.S_ISREG(info.st_mode):
                return self._refuse()
            try:
                wanted = byte_range(self.headers.get("Range"), size)
            except RangeNotSatisfiable:
                unsatisfiable = {"Content-Range": f"bytes */{size}"}
                return self._plain(416, "range not satisfiable", unsatisfiable)
            first, last = wanted if wanted is not None else (0, size - 1)
            length = last - first + 1
            status = 200 if wanted is None else 206
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Cache-Control", "no-store")
            if wanted is not None:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self._end_headers_and_close()
            if not send_body:
                return None
            materialise.touch(owner.folder, name)
            sent = self._copy(stream, first, length)
        owner._record(
            DownloadRecord(
                datetime.now(UTC),
                self.client_address[0],
                name,
                status,
                sent,
                size,
                sent == length,
                asked.relay,
            )
        )
        return None

    def _token_ok(self, relay: str, token: str) -> bool:
        check = self.server.owner.board_token
        if check is None:
            return False
        try:
            return bool(check(relay, token))
        except Exception:
            log.exception("firmware server: cannot check board %s's OTA token", relay)
            return False

    def _copy(self, stream: BinaryIO, first: int, length: int) -> int:
        stream.seek(first)
        sent = 0
        try:
            while sent < length and not self.server.owner.stopping.is_set():
                chunk = stream.read(min(_CHUNK, length - sent))
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError as exc:  # the board went away or stalled
            log.info("firmware download to %s cut short: %s", self.client_address[0], exc)
        return sent

    def _refuse(self) -> None:
        log.info(
            "firmware server refused %s %r from %s",
            self.command,
            mask_ota_token(self.path[:200]),
            self.client_address[0],
        )
        self._plain(404, "not found")

    def _plain(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        body = f"{text}\n".encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self._end_headers_and_close()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _end_headers_and_close(self) -> None:
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
