"""Configuration templates: named partial configs of one component, to apply to many boards.

Contract: a template is `{name, comp, fields}` where `fields` passed
`protocol.validate_config(comp, fields)` when it was saved, so applying it can never
publish a value the protocol refuses. Names are unique regardless of case. A template
may hold a secret (a WiFi password to roll out): it is stored as given, because it has
to reach the boards, but `Template.masked()` and `TemplateStore.frame()` (what lists and
pages show) hide it, and the audit trail only ever sees the masked fields. Every change
is audited (`template_save`, `template_delete`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from smib_core.errors import InvalidInput
from smib_core.protocol import mask_secrets, validate_config
from smib_core.store.audit import AuditTrail
from smib_core.store.documents import as_utc, utc_now

MAX_NAME = 64
TEMPLATE_COLUMNS = ["name", "comp", "fields", "created_by", "created_at"]


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    comp: str
    fields: Mapping[str, int | str] = field(repr=False)  # secrets in clear: show masked()
    created_by: str = ""
    created_at: datetime | None = None

    def masked(self) -> dict[str, Any]:
        """The fields safe to show or log."""
        return mask_secrets(self.fields)

    def describe(self) -> str:
        """`net: netStaChan=6, netStaPwd=••••••`, secrets masked."""
        shown = ", ".join(f"{k}={v}" for k, v in self.masked().items())
        return f"{self.comp}: {shown}"


def check_name(value: object) -> str:
    """A template name: 1..64 printable characters, surrounding spaces removed."""
    name = value.strip() if isinstance(value, str) else ""
    if not name:
        raise InvalidInput("give the template a name")
    if len(name) > MAX_NAME or any(ord(ch) < 32 for ch in name):
        raise InvalidInput(f"a template name is at most {MAX_NAME} printable characters")
    return name


class TemplateStore:
    """Templates in the `templates` collection, keyed by their lower-case name."""

    def __init__(self, db: Database[Any], audit: AuditTrail | None = None) -> None:
        self._col = db["templates"]
        self._audit = audit if audit is not None else AuditTrail(db)

    def save(self, name: str, comp: str, fields: Mapping[str, object], actor: str) -> Template:
        """Store a new template; InvalidInput for a bad or taken name or a refused field."""
        name = check_name(name)
        typed = validate_config(comp, fields)
        key = name.lower()
        if self._col.find_one({"_id": key}) is not None:
            raise InvalidInput(f"a template named {name!r} exists already: choose another name")
        doc = {
            "_id": key,
            "name": name,
            "comp": comp,
            "fields": dict(typed),
            "created_by": str(actor)[:256],
            "created_at": utc_now(),
        }
        try:
            self._col.insert_one(doc)
        except DuplicateKeyError:  # saved by someone else in between
            raise InvalidInput(f"a template named {name!r} exists already") from None
        template = _template(doc)
        detail = {"name": name, "comp": comp, "fields": template.masked()}
        self._audit.record(actor, "template_save", [], detail, "ok")
        return template

    def get(self, name: str) -> Template:
        """The template (secrets in clear, to apply it); InvalidInput when there is none."""
        doc = self._col.find_one({"_id": check_name(name).lower()})
        if doc is None:
            raise InvalidInput(f"there is no template named {name.strip()!r}")
        return _template(doc)

    def list(self) -> list[Template]:
        """Every template, by name. Show them with `masked()` or `frame()`."""
        docs = sorted(self._col.find({}), key=lambda d: str(d["_id"]))
        return [_template(d) for d in docs]

    def frame(self) -> pd.DataFrame:
        """The templates for a table: one row each, fields as masked JSON text."""
        rows = [
            {
                "name": t.name,
                "comp": t.comp,
                "fields": json.dumps(t.masked(), ensure_ascii=False),
                "created_by": t.created_by,
                "created_at": t.created_at,
            }
            for t in self.list()
        ]
        return pd.DataFrame(rows, columns=TEMPLATE_COLUMNS)

    def delete(self, name: str, actor: str) -> None:
        template = self.get(name)
        self._col.delete_one({"_id": template.name.lower()})
        detail = {"name": template.name, "comp": template.comp, "fields": template.masked()}
        self._audit.record(actor, "template_delete", [], detail, "ok")


def _template(doc: Mapping[str, Any]) -> Template:
    created = doc.get("created_at")
    return Template(
        name=str(doc["name"]),
        comp=str(doc["comp"]),
        fields=dict(doc.get("fields", {})),
        created_by=str(doc.get("created_by", "")),
        created_at=as_utc(created) if isinstance(created, datetime) else None,
    )
