"""Copy library firmware into the served folder, and remove it once idle.

Contract: `materialise` writes a library file into the folder under its served name
(temp file + rename, so a board never reads half a file), checks its SHA-256 and records
it in `.served.json` beside it. `touch` marks a download, `cleanup` removes files idle
longer than `max_idle` and every file the index does not know. The index lives in the
folder, so an app restart forgets nothing: the first cleanup after it removes what went
idle meanwhile. `.gitkeep` is never touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from smib_core.errors import InvalidInput, StoreError
from smib_core.firmware.names import is_firmware_file_name
from smib_core.store.firmware import FirmwareInfo, FirmwareLibrary

log = logging.getLogger(__name__)

DEFAULT_FOLDER = Path("firmwares")
MAX_IDLE = timedelta(minutes=30)
INDEX_NAME = ".served.json"
_KEEP = frozenset({".gitkeep", INDEX_NAME})
_PART_SUFFIX = ".part"
_CHUNK = 64 * 1024
_lock = threading.Lock()  # one writer of any index at a time in this process


@dataclass(frozen=True, slots=True)
class ServedFile:
    """A file of the served folder: what it should hash to and when it was last used."""

    name: str
    sha256: str
    size: int
    materialised_at: datetime
    last_used: datetime


def materialise(
    library: FirmwareLibrary,
    info: FirmwareInfo,
    folder: Path = DEFAULT_FOLDER,
    *,
    now: datetime | None = None,
) -> Path:
    """Make `info` downloadable from `folder`; returns its path. Idempotent and cheap."""
    if not is_firmware_file_name(info.filename):
        raise InvalidInput(f"{info.filename!r} cannot be served: not a safe firmware file name")
    now = _utc(now)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / info.filename
    known = served(folder).get(info.filename)
    if (
        known is not None
        and known.sha256 == info.sha256
        and _is_regular(target)
        and _sha256_of(target) == info.sha256
        and touch(folder, info.filename, now)  # False if a cleanup just removed it
    ):
        return target
    fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{info.filename}.", suffix=_PART_SUFFIX)
    temp = Path(temp_name)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, library.open(info.id) as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != info.sha256 or size != info.size:
            raise StoreError(
                f"the stored file of {info.product} {info.version} is damaged "
                "(its SHA-256 does not match); upload it again"
            )
        temp.chmod(0o644)
        with _lock:
            os.replace(temp, target)
            index = _load(folder)
            index[info.filename] = ServedFile(info.filename, info.sha256, size, now, now)
            _save(folder, index)
    finally:
        temp.unlink(missing_ok=True)
    log.info("firmware %s materialised in %s (%d bytes)", info.filename, folder, size)
    return target


def in_library(library: FirmwareLibrary) -> Callable[[str], bool]:
    """The server's `allowed` check: the name is a file of the library (archived or not)."""
    return lambda name: library.by_filename(name) is not None


def served(folder: Path = DEFAULT_FOLDER) -> dict[str, ServedFile]:
    """The index of the folder: every materialised file by name."""
    with _lock:
        return _load(folder)


def is_materialised(folder: Path, name: str) -> bool:
    """True when `name` is in the index and is a regular file (not a link) in the folder."""
    return name in served(folder) and _is_regular(folder / name)


def touch(folder: Path, name: str, now: datetime | None = None) -> bool:
    """Record a use of `name` (a download); False when it is not materialised."""
    with _lock:
        index = _load(folder)
        entry = index.get(name)
        if entry is None:
            return False
        index[name] = ServedFile(
            entry.name, entry.sha256, entry.size, entry.materialised_at, _utc(now)
        )
        _save(folder, index)
        return True


def cleanup(
    folder: Path = DEFAULT_FOLDER, max_idle: timedelta = MAX_IDLE, now: datetime | None = None
) -> list[str]:
    """Remove files idle longer than `max_idle` and files not in the index; their names."""
    now = _utc(now)
    if not folder.is_dir():
        return []
    removed: list[str] = []
    with _lock:
        index = _load(folder)
        for name, entry in list(index.items()):
            if now - entry.last_used > max_idle or not _is_regular(folder / name):
                del index[name]
        for path in folder.iterdir():
            if path.name in _KEEP or path.name in index:
                continue
            if path.is_dir() and not path.is_symlink():
                continue
            if path.name.endswith(_PART_SUFFIX) and not _older(path, now, max_idle):
                continue  # a materialise in progress
            path.unlink(missing_ok=True)
            removed.append(path.name)
        _save(folder, index)
    if removed:
        log.info("firmware folder %s: removed %s", folder, ", ".join(sorted(removed)))
    return sorted(removed)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now


def _is_regular(path: Path) -> bool:
    """A regular file, not a link: a link could point anywhere on the disk."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _older(path: Path, now: datetime, max_idle: timedelta) -> bool:
    try:
        mtime = datetime.fromtimestamp(path.lstat().st_mtime, UTC)
    except OSError:
        return False
    return now - mtime > max_idle


def _sha256_of(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _load(folder: Path) -> dict[str, ServedFile]:
    try:
        raw: Any = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
        return {
            name: ServedFile(
                name=name,
                sha256=str(entry["sha256"]),
                size=int(entry["size"]),
                materialised_at=datetime.fromisoformat(entry["materialised_at"]),
                last_used=datetime.fromisoformat(entry["last_used"]),
            )
            for name, entry in raw["files"].items()
            if is_firmware_file_name(name)
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("firmware folder %s: unreadable index (%s); starting afresh", folder, exc)
        return {}


def _save(folder: Path, index: dict[str, ServedFile]) -> None:
    files = {
        name: {
            **asdict(entry),
            "materialised_at": entry.materialised_at.isoformat(),
            "last_used": entry.last_used.isoformat(),
        }
        for name, entry in sorted(index.items())
    }
    for entry in files.values():
        del entry["name"]
    temp = folder / f"{INDEX_NAME}.{os.getpid()}{_PART_SUFFIX}"
    temp.write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")
    os.replace(temp, folder / INDEX_NAME)
