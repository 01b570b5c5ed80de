"""Firmware library use cases for the page and the CLI: guarded, audited, tabulated.

Contract: `add_firmware` and `archive_firmware` check the principal (`may_manage`, the
one place that decides who changes the library), act on the library, and write one
audit record (`firmware_add` / `firmware_archive`, outcome `ok`; a refused principal is
recorded as `refused`). `library_table` turns the library into the page's DataFrame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd
from pymongo.database import Database

from smib_core.auth import Permission, Principal, require
from smib_core.errors import PermissionDenied
from smib_core.store.audit import AuditTrail
from smib_core.store.firmware import FirmwareInfo, FirmwareLibrary

TABLE_COLUMNS = [
    "product",
    "version",
    "file",
    "size",
    "sha256",
    "uploaded_by",
    "uploaded_at",
    "archived",
    "notes",
    "id",
]


def may_manage(principal: Principal | None) -> Principal:
    """The principal when it may change the firmware library; PermissionDenied otherwise."""
    return require(principal, Permission.MANAGE_FIRMWARE)


def add_firmware(
    db: Database[Any],
    principal: Principal | None,
    data: bytes | str | os.PathLike[str],
    *,
    filename: str | None = None,
    product: str,
    version: str,
    notes: str = "",
) -> FirmwareInfo:
    actor = _guard(db, principal, "firmware_add", {"product": product, "version": version})
    info = FirmwareLibrary(db).add(
        data, filename=filename, product=product, version=version, notes=notes, actor=actor
    )
    _audit(db, actor, "firmware_add", info)
    return info


def archive_firmware(
    db: Database[Any], principal: Principal | None, firmware_id: str
) -> FirmwareInfo:
    actor = _guard(db, principal, "firmware_archive", {"id": firmware_id})
    info = FirmwareLibrary(db).archive(firmware_id, actor=actor)
    _audit(db, actor, "firmware_archive", info)
    return info


def library_table(infos: Sequence[FirmwareInfo]) -> pd.DataFrame:
    """One row per firmware, newest first within a product; `sha256` shortened to 12."""
    rows = [
        {
            "product": i.product,
            "version": i.version,
            "file": i.filename,
            "size": i.size,
            "sha256": i.sha256[:12],
            "uploaded_by": i.uploaded_by,
            "uploaded_at": i.uploaded_at,
            "archived": i.archived,
            "notes": i.notes,
            "id": i.id,
        }
        for i in infos
    ]
    frame = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    frame["uploaded_at"] = pd.to_datetime(frame["uploaded_at"], utc=True)
    return frame


def _guard(
    db: Database[Any], principal: Principal | None, kind: str, detail: dict[str, str]
) -> str:
    try:
        return may_manage(principal).name
    except PermissionDenied:
        name = principal.name if principal is not None else "(not signed in)"
        AuditTrail(db).record(name, kind, [], detail, "refused")
        raise


def _audit(db: Database[Any], actor: str, kind: str, info: FirmwareInfo) -> None:
    detail = {
        "product": info.product,
        "version": info.version,
        "file": info.filename,
        "size": info.size,
        "sha256": info.sha256,
        "id": info.id,
    }
    AuditTrail(db).record(actor, kind, [], detail, "ok")
