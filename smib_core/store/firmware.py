"""The firmware library: `.bin` files in GridFS, described by one document each.

Contract: `FirmwareLibrary(db)` stores each upload's bytes in the GridFS bucket
`firmware` and its description in the collection `firmware` (`_id` = the GridFS file
id, unique product+version, unique served file name). Callers get `FirmwareInfo`
dataclasses and bytes, never driver objects. A bad upload raises `InvalidInput` with a
sentence a technician can act on; a database failure raises `StoreError`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from bson import ObjectId
from bson.errors import InvalidId
from gridfs import GridFSBucket
from gridfs.errors import NoFile
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from smib_core.errors import InvalidInput, StoreError
from smib_core.firmware.names import firmware_file_name

log = logging.getLogger(__name__)

COLLECTION = "firmware"
BUCKET = "firmware"
MAX_FIRMWARE_BYTES = 16 * 1024 * 1024  # the largest ESP32 flash; no image is bigger
_PRODUCT_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}\Z")
_VERSION_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._+-]{0,39}\Z")


@dataclass(frozen=True, slots=True)
class FirmwareInfo:
    """One firmware of the library. `filename` is the name boards download it by."""

    id: str
    product: str
    version: str
    filename: str
    size: int
    sha256: str
    notes: str
    uploaded_at: datetime
    uploaded_by: str
    archived: bool
    original_name: str = ""


@contextmanager
def _database(action: str) -> Iterator[None]:
    """Turn a driver failure into a `StoreError` a user can read; the log gets the detail."""
    try:
        yield
    except PyMongoError as exc:
        log.warning("firmware library: %s failed: %s", action, exc)
        raise StoreError(f"the firmware library could not {action}; try again") from exc


class FirmwareLibrary:
    def __init__(self, db: Database[Any]) -> None:
        self._docs = db[COLLECTION]
        self._bucket = GridFSBucket(db, bucket_name=BUCKET)
        with _database("prepare its indexes"):
            self._docs.create_index([("product", ASCENDING), ("version", ASCENDING)], unique=True)
            self._docs.create_index("filename", unique=True)

    def add(
        self,
        data: bytes | str | os.PathLike[str],
        *,
        filename: str | None = None,
        product: str,
        version: str,
        notes: str = "",
        actor: str,
    ) -> FirmwareInfo:
        """Store a firmware. `data` is the bytes or a path; `filename` the uploaded name."""
        if not isinstance(data, bytes):
            path = Path(data)
            filename = filename or path.name
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
        original = _check_upload(data, filename)
        product, version = (
            _check_label("product", product, _PRODUCT_RE),
            _check_label("version", version, _VERSION_RE),
        )
        served = firmware_file_name(product, version)
        self._refuse_duplicate(product, version, served)
        sha256 = hashlib.sha256(data).hexdigest()
        now = _utc(datetime.now(UTC))  # to the millisecond, as MongoDB keeps it
        with _database("store the file"):
            file_id = self._bucket.upload_from_stream(
                served, data, metadata={"product": product, "version": version, "sha256": sha256}
            )
        doc = {
            "_id": file_id,
            "product": product,
            "version": version,
            "filename": served,
            "original_name": original,
            "size": len(data),
            "sha256": sha256,
            "notes": notes.strip(),
            "uploaded_at": now,
            "uploaded_by": actor,
            "archived": False,
        }
        try:
            self._docs.insert_one(doc)
        except DuplicateKeyError:
            self._discard(file_id)
            self._refuse_duplicate(product, version, served)  # lost a race with a twin
            raise InvalidInput(f"{product} version {version} is already in the library") from None
        except PyMongoError as exc:
            self._discard(file_id)
            log.warning("firmware library: recording %s failed: %s", served, exc)
            raise StoreError("the firmware library could not record the file; try again") from exc
        log.info("firmware %s %s added by %s (%d bytes)", product, version, actor, len(data))
        return _info(doc)

    def list(self, include_archived: bool = False) -> list[FirmwareInfo]:
        query: dict[str, Any] = {} if include_archived else {"archived": False}
        with _database("list firmware"):
            docs = self._docs.find(query).sort(
                [("product", ASCENDING), ("uploaded_at", DESCENDING)]
            )
            return [_info(doc) for doc in docs]

    def get(self, product: str, version: str) -> FirmwareInfo | None:
        with _database("look up a firmware"):
            doc = self._docs.find_one({"product": product.strip(), "version": version.strip()})
        return None if doc is None else _info(doc)

    def by_filename(self, name: str) -> FirmwareInfo | None:
        with _database("look up a firmware"):
            doc = self._docs.find_one({"filename": name})
        return None if doc is None else _info(doc)

    def by_id(self, firmware_id: str) -> FirmwareInfo | None:
        with _database("look up a firmware"):
            doc = self._docs.find_one({"_id": _object_id(firmware_id)})
        return None if doc is None else _info(doc)

    def open(self, firmware_id: str) -> BinaryIO:
        """A readable binary stream of the stored bytes; the caller closes it."""
        file_id = _object_id(firmware_id)
        with _database("read the file"):
            try:
                return cast(BinaryIO, self._bucket.open_download_stream(file_id))
            except NoFile:
                raise InvalidInput(f"no firmware file with id {firmware_id}") from None

    def read(self, firmware_id: str) -> bytes:
        """The stored bytes, checked against the recorded SHA-256."""
        info = self.by_id(firmware_id)
        if info is None:
            raise InvalidInput(f"no firmware with id {firmware_id}")
        with self.open(firmware_id) as stream, _database("read the file"):
            data = stream.read()
        if hashlib.sha256(data).hexdigest() != info.sha256:
            raise StoreError(f"the stored file of {info.product} {info.version} is damaged")
        return data

    def archive(self, firmware_id: str, actor: str = "system") -> FirmwareInfo:
        """Hide a firmware from the list and from new rollouts; its file is kept."""
        change = {"archived": True, "archived_at": _utc(datetime.now(UTC)), "archived_by": actor}
        with _database("archive a firmware"):
            doc = self._docs.find_one_and_update(
                {"_id": _object_id(firmware_id)},
                {"$set": change},
                return_document=ReturnDocument.AFTER,
            )
        if doc is None:
            raise InvalidInput(f"no firmware with id {firmware_id}")
        log.info("firmware %s %s archived by %s", doc["product"], doc["version"], actor)
        return _info(doc)

    def _discard(self, file_id: ObjectId) -> None:
        try:
            self._bucket.delete(file_id)
        except PyMongoError as exc:
            log.warning("firmware library: could not remove orphan file %s: %s", file_id, exc)

    def _refuse_duplicate(self, product: str, version: str, served: str) -> None:
        with _database("look up a firmware"):
            twin = self._docs.find_one(
                {"$or": [{"product": product, "version": version}, {"filename": served}]}
            )
        if twin is None:
            return
        state = " (archived)" if twin.get("archived") else ""
        if twin["product"] == product and twin["version"] == version:
            raise InvalidInput(f"{product} version {version} is already in the library{state}")
        raise InvalidInput(
            f"{product} version {version} would be served as {served}, the file name of "
            f"{twin['product']} version {twin['version']}{state}; choose another version text"
        )


def _check_upload(data: bytes, filename: str | None) -> str:
    name = (filename or "").strip()
    if not name.lower().endswith(".bin"):
        raise InvalidInput(f"{name or 'the file'} is not a firmware image: its name must end .bin")
    if not data:
        raise InvalidInput(f"{name} is empty")
    if len(data) > MAX_FIRMWARE_BYTES:
        raise InvalidInput(
            f"{name} is {len(data):,} bytes; a firmware image is at most "
            f"{MAX_FIRMWARE_BYTES:,} bytes"
        )
    return os.path.basename(name.replace("\\", "/"))


def _check_label(what: str, text: str, rule: re.Pattern[str]) -> str:
    text = text.strip() if isinstance(text, str) else ""
    if not rule.match(text):
        allowed = (
            "letters, digits, spaces, '.', '-' or '_'"
            if what == "product"
            else ("letters, digits, '.', '-', '_' or '+'")
        )
        raise InvalidInput(
            f"the {what} {text!r} is not valid: up to 40 characters, starting with a letter "
            f"or digit, then {allowed}"
        )
    return text


def _object_id(firmware_id: str) -> ObjectId:
    try:
        return ObjectId(firmware_id)
    except (InvalidId, TypeError):
        raise InvalidInput(f"no firmware with id {firmware_id!r}") from None


def _utc(value: datetime) -> datetime:
    """UTC to the millisecond: what a BSON datetime can hold."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _info(doc: Mapping[str, Any]) -> FirmwareInfo:
    return FirmwareInfo(
        id=str(doc["_id"]),
        product=doc["product"],
        version=doc["version"],
        filename=doc["filename"],
        size=int(doc["size"]),
        sha256=doc["sha256"],
        notes=doc.get("notes", ""),
        uploaded_at=_utc(doc["uploaded_at"]),
        uploaded_by=doc.get("uploaded_by", ""),
        archived=bool(doc.get("archived", False)),
        original_name=doc.get("original_name", ""),
    )
