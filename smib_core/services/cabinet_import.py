"""Importing a machine list into the registry: every row checked first, then applied.

Contract:
- `plan_import` reads nothing but the registry and writes nothing. It checks every row
  (the store's own field checks, `store.registry.check_cabinet_fields`), matches it to
  an active cabinet and says what would change: `add`, `update` (with each changed
  field, before and after) or `unchanged`. Any bad row makes it raise `ImportRejected`,
  whose `problems` name each row (numbered as the spreadsheet shows it) and field.
- A row matches the active cabinet with its serial (when the row has one and a
  cabinet has it), else the one with its name (case ignored); a cabinet is never added
  twice. A name shared by two active cabinets, a row whose serial and name point at two
  different cabinets, and two rows for one cabinet (or one name, serial or relay) are
  refused. Cabinets missing from the file are left as they are (an import never retires).
- Columns missing from the file leave those fields as they are; an empty cell clears
  the field (an empty relay: the cabinet has no board), except an empty location or
  denomination, which keeps the cabinet's. A new cabinet needs a location and a
  denomination.
- Locations are matched by name (case ignored) or id. An unknown location is refused
  unless `create_locations` is given (then it is created, audited like any other): a
  typo ("Main flor") should not quietly become a new floor.
- A board may move between cabinets of the same file (a swap): its old cabinet is
  freed first; the relays after the import must be unique, which is checked up front.
- `import_cabinets` checks the role (refusals audited), plans, and unless `dry_run`
  applies the plan through the registry, whose writes audit each change
  (`location_add`, `cabinet_add`, `cabinet_edit`), then records one `cabinet_import`
  (file, counts). A rejected file is recorded as a failed `cabinet_import` and changes
  nothing. The page confirms the plan it previewed (`expected`): when the registry
  changed meanwhile, nothing is applied and the new plan must be looked at again.
  Applying is not one transaction: a process killed midway leaves part of the file
  applied, and importing the same file again completes it (rows already applied are
  `unchanged`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from smib_core.auth import Principal
from smib_core.errors import InvalidInput
from smib_core.services.cabinet_files import CabinetFile, FileRow, plain_cell, relay_cell
from smib_core.services.registry import acting_as
from smib_core.store.registry import Cabinet, Location, Registry, check_cabinet_fields

Action = Literal["add", "update", "unchanged"]
# The file's columns, in the order a change lists them, and the cabinet field each sets.
_FIELDS = ("name", "location", "relay", "denomination", "serial", "manufacturer", "game", "par")
_KEPT_WHEN_EMPTY = ("location", "denomination")
MAX_PROBLEMS_SHOWN = 20
PLAN_COLUMNS = ["row", "action", "cabinet", "changes"]


@dataclass(frozen=True, slots=True)
class RowProblem:
    row: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, {self.field}: {self.message}"


class ImportRejected(InvalidInput):
    """Some rows are bad: nothing was imported. `problems` names each row and field."""

    def __init__(self, problems: Iterable[RowProblem]) -> None:
        self.problems = tuple(problems)
        shown = "; ".join(str(p) for p in self.problems[:MAX_PROBLEMS_SHOWN])
        more = len(self.problems) - MAX_PROBLEMS_SHOWN
        extra = f"; and {more} more" if more > 0 else ""
        count = len({p.row for p in self.problems})
        rows = "1 row is bad" if count == 1 else f"{count} rows are bad"
        super().__init__(f"{rows}, nothing was imported: {shown}{extra}")


@dataclass(frozen=True, slots=True)
class CabinetChange:
    """What one row does. `values` are the fields to write, by the file's column names
    (location by name); `before` the old values of the changed fields (updates)."""

    row: int
    action: Action
    name: str
    cabinet_id: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    before: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """`denomination 0.01 -> 0.25; game '' -> 'Cleopatra'` (updates), the new
        cabinet's fields (adds), '' (unchanged)."""
        if self.action == "add":
            return "; ".join(f"{k} {_shown(v)}" for k, v in self.values.items() if _filled(v))
        return "; ".join(
            f"{k} {_shown(self.before.get(k))} -> {_shown(v)}" for k, v in self.values.items()
        )


@dataclass(frozen=True, slots=True)
class ImportPlan:
    source: str
    changes: tuple[CabinetChange, ...]
    new_locations: tuple[str, ...] = ()

    def count(self, action: Action) -> int:
        return sum(1 for change in self.changes if change.action == action)

    def summary(self) -> str:
        """`2 added, 1 updated, 5 unchanged` (and the locations made)."""
        text = ", ".join(f"{self.count(a)} {_DONE[a]}" for a in _DONE)
        if self.new_locations:
            text += f"; new locations: {', '.join(self.new_locations)}"
        return text

    def table(self) -> pd.DataFrame:
        """One row per file row: its number, what happens, the cabinet and the changes."""
        rows = [
            {"row": c.row, "action": c.action, "cabinet": c.name, "changes": c.describe()}
            for c in self.changes
        ]
        return pd.DataFrame(rows, columns=PLAN_COLUMNS)


_DONE: dict[Action, str] = {"add": "added", "update": "updated", "unchanged": "unchanged"}


def _filled(value: object) -> bool:
    return value is not None and value != ""


def _shown(value: object) -> str:
    if value is None or value == "":
        return "(empty)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# --- planning ---------------------------------------------------------------------------


class _Places:
    """The registry's locations by lower-case name and id, and those the file adds."""

    def __init__(self, locations: Iterable[Location], create: bool) -> None:
        self.all = sorted(locations, key=lambda loc: loc.retired)  # active ones win a name
        self.by_key: dict[str, Location] = {}
        for loc in self.all:
            self.by_key.setdefault(loc.id, loc)
            self.by_key.setdefault(loc.name.lower(), loc)
        self.create = create
        self.new: dict[str, str] = {}  # lower-case name -> name as first written

    def name_of(self, location_id: str) -> str:
        found = self.by_key.get(location_id)
        return found.name if found else location_id

    def resolve(self, text: str) -> str:
        """The location's name as stored; InvalidInput when unknown, retired or new
        without `create`."""
        found = self.by_key.get(text) or self.by_key.get(text.lower())
        if found is not None:
            if found.retired:
                raise InvalidInput(f"the location {found.name!r} is retired")
            return found.name
        if not self.create:
            names = ", ".join(loc.name for loc in self.all if not loc.retired) or "none yet"
            raise InvalidInput(
                f"there is no location {text!r} (locations: {names}); add it first, or let "
                "the import create missing locations"
            )
        return self.new.setdefault(text.lower(), text)


class _Cabinets:
    """The active cabinets by serial, by lower-case name and by relay."""

    def __init__(self, cabinets: Iterable[Cabinet]) -> None:
        self.by_serial: dict[str, list[Cabinet]] = {}
        self.by_name: dict[str, list[Cabinet]] = {}
        self.relays: dict[str, Cabinet] = {}
        for cabinet in cabinets:
            if cabinet.serial:
                self.by_serial.setdefault(cabinet.serial.lower(), []).append(cabinet)
            self.by_name.setdefault(cabinet.name.lower(), []).append(cabinet)
            if cabinet.relay:
                self.relays[cabinet.relay] = cabinet

    def match(self, name: str, serial: str) -> Cabinet | None:
        """The cabinet a row means; InvalidInput (naming the field) when ambiguous."""
        by_serial = self.by_serial.get(serial.lower(), []) if serial else []
        by_name = self.by_name.get(name.lower(), [])
        if len(by_serial) > 1:
            raise _Problem("serial", f"{len(by_serial)} active cabinets have serial {serial!r}")
        if by_serial:
            found = by_serial[0]
            others = [c for c in by_name if c.id != found.id]
            if others:
                raise _Problem(
                    "name",
                    f"serial {serial!r} is cabinet {found.name!r}, but {others[0].name!r} is "
                    "another cabinet's name",
                )
            return found
        if len(by_name) > 1:
            raise _Problem(
                "name", f"{len(by_name)} active cabinets are named {name!r}: add their serial"
            )
        return by_name[0] if by_name else None


class _Problem(InvalidInput):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def _cells(row: FileRow, columns: tuple[str, ...]) -> dict[str, Any]:
    """The row's values in the registry's terms, for the columns the file has."""
    out: dict[str, Any] = {}
    for name in columns:
        raw = row.cells.get(name)
        if name == "relay":
            out[name] = relay_cell(raw)
        elif name in ("denomination", "par"):
            out[name] = raw.strip() if isinstance(raw, str) else raw
        else:
            out[name] = plain_cell(raw)
    return out


def _current(cabinet: Cabinet, places: _Places) -> dict[str, Any]:
    return {
        "name": cabinet.name,
        "location": places.name_of(cabinet.location_id),
        "relay": cabinet.relay or "",
        "denomination": cabinet.denomination,
        "serial": cabinet.serial,
        "manufacturer": cabinet.manufacturer,
        "game": cabinet.game,
        "par": cabinet.par,
    }


def _checked_row(
    cells: Mapping[str, Any], current: Mapping[str, Any] | None, places: _Places
) -> dict[str, Any]:
    """The row's final field values (current ones where the file has no column), each
    checked; a `_Problem` names the first bad field."""
    if current is not None:  # an empty location or denomination keeps the cabinet's
        cells = {k: v for k, v in cells.items() if k not in _KEPT_WHEN_EMPTY or _filled(v)}
    merged = {**(current or {}), **cells}
    if current is None:
        for needed in ("location", "denomination"):
            if needed not in cells or not _filled(cells[needed]):
                raise _Problem(needed, f"a new cabinet needs a {needed}")
    try:
        location = places.resolve(str(merged.get("location") or ""))
    except InvalidInput as exc:
        raise _Problem("location", str(exc)) from None
    for name in _FIELDS:  # each field alone first, so the problem names the field
        if name == "location":
            continue
        try:
            check_cabinet_fields({"name": "x", "denomination": 1, name: merged.get(name)})
        except InvalidInput as exc:
            raise _Problem(name, str(exc)) from None
    checked = check_cabinet_fields(merged)
    values = {name: checked[name] for name in _FIELDS if name != "location"}
    values["relay"] = values["relay"] or ""
    values["location"] = location
    return {name: values[name] for name in _FIELDS}


def plan_import(
    registry: Registry, cabinet_file: CabinetFile, *, create_locations: bool = False
) -> ImportPlan:
    """What importing the file would change; ImportRejected when any row is bad."""
    places = _Places(registry.locations(include_retired=True), create_locations)
    active = _Cabinets(registry.cabinets())
    problems: list[RowProblem] = []
    changes: list[CabinetChange] = []
    claimed: dict[str, int] = {}  # cabinet id, "name:..", "serial:..", relay -> first row
    # relay -> the cabinet keeping it: those the file does not mention keep theirs
    final_relays = {relay: cabinet.id for relay, cabinet in active.relays.items()}

    def claim(key: str, row: int, field_name: str, what: str) -> None:
        if key in claimed:
            raise _Problem(field_name, f"{what} is in row {claimed[key]} already")
        claimed[key] = row

    for row in cabinet_file.rows:
        try:
            cells = _cells(row, cabinet_file.columns)
            name, serial = str(cells.get("name", "")), str(cells.get("serial", ""))
            if not name:
                raise _Problem("name", "name is required")
            cabinet = active.match(name, serial)
            current = _current(cabinet, places) if cabinet is not None else None
            values = _checked_row(cells, current, places)
            claim(f"name:{values['name'].lower()}", row.row, "name", f"the name {values['name']!r}")
            if values["serial"]:
                claim(f"serial:{values['serial'].lower()}", row.row, "serial", "this serial")
            if cabinet is not None:
                claim(cabinet.id, row.row, "name", f"cabinet {cabinet.name!r}")
                if current and current["relay"]:
                    final_relays.pop(current["relay"], None)
            if values["relay"]:
                claim(f"relay:{values['relay']}", row.row, "relay", f"board {values['relay']}")
            changes.append(_change(row.row, cabinet, current, values))
        except _Problem as exc:
            problems.append(RowProblem(row.row, exc.field, str(exc)))
    if not problems:
        problems = _relay_conflicts(changes, final_relays, registry)
    if problems:
        raise ImportRejected(problems)
    return ImportPlan(cabinet_file.source, tuple(changes), tuple(places.new.values()))


def _change(
    row: int, cabinet: Cabinet | None, current: Mapping[str, Any] | None, values: dict[str, Any]
) -> CabinetChange:
    if cabinet is None or current is None:
        return CabinetChange(row, "add", values["name"], None, values)
    changed = {k: v for k, v in values.items() if not _same(current[k], v)}
    if not changed:
        return CabinetChange(row, "unchanged", cabinet.name, cabinet.id)
    before = {k: current[k] for k in changed}
    return CabinetChange(row, "update", values["name"], cabinet.id, changed, before)


def _same(before: object, after: object) -> bool:
    if isinstance(before, str) and isinstance(after, str):
        return before == after
    return before == after or (before in (None, "") and after in (None, ""))


def _relay_conflicts(
    changes: list[CabinetChange], final_relays: dict[str, str], registry: Registry
) -> list[RowProblem]:
    """Relays the file gives that an active cabinet outside the file keeps."""
    problems = []
    for change in changes:
        relay = change.values.get("relay") if change.action != "unchanged" else None
        holder_id = final_relays.get(relay) if relay else None
        if holder_id is not None and holder_id != change.cabinet_id:
            holder = registry.cabinet(holder_id)
            problems.append(
                RowProblem(
                    change.row,
                    "relay",
                    f"board {relay} belongs to cabinet {holder.name!r}, which this file does "
                    "not change: retire it or give it another board first",
                )
            )
    return problems


# --- applying ---------------------------------------------------------------------------


def import_cabinets(
    registry: Registry,
    principal: Principal | None,
    cabinet_file: CabinetFile,
    *,
    create_locations: bool = False,
    dry_run: bool = False,
    expected: ImportPlan | None = None,
) -> ImportPlan:
    """Plan the import and, unless `dry_run`, apply it; returns the plan applied."""
    actor = acting_as(registry, principal, "cabinet_import", {"file": cabinet_file.source})
    try:
        plan = plan_import(registry, cabinet_file, create_locations=create_locations)
    except ImportRejected as exc:
        if not dry_run:
            detail = {"file": cabinet_file.source, "problems": [str(p) for p in exc.problems[:50]]}
            registry.audit.record(actor, "cabinet_import", [], detail, "failed")
        raise
    if dry_run:
        return plan
    if expected is not None and plan != expected:
        raise InvalidInput(
            "the registry changed since this preview: look at the new preview and confirm again"
        )
    apply_plan(registry, plan, actor)
    return plan


def apply_plan(
    registry: Registry,
    plan: ImportPlan,
    actor: str,
    *,
    after_each: Callable[[], None] | None = None,
) -> None:
    """Write a checked plan: new locations, boards moving out of their old cabinet, then
    each row; every write audited by the registry, then the import as a whole."""
    for name in plan.new_locations:
        registry.add_location(name, actor)
    location_ids = {loc.name.lower(): loc.id for loc in registry.locations()}
    wanted = {c.values.get("relay") for c in plan.changes if c.action != "unchanged"} - {"", None}
    for change in plan.changes:  # a board moving to another row's cabinet is freed first
        if change.action == "update" and change.before.get("relay") in wanted:
            registry.update_cabinet(str(change.cabinet_id), {"relay": None}, actor)
    for change in plan.changes:
        if change.action == "unchanged":
            continue
        values = _store_values(change.values, location_ids)
        if change.action == "add":
            registry.add_cabinet(values, actor)
        else:
            registry.update_cabinet(str(change.cabinet_id), values, actor)
        if after_each is not None:
            after_each()
    detail = {
        "file": plan.source,
        "added": plan.count("add"),
        "updated": plan.count("update"),
        "unchanged": plan.count("unchanged"),
        "new_locations": list(plan.new_locations),
    }
    registry.audit.record(actor, "cabinet_import", [], detail, "ok")


def _store_values(values: Mapping[str, Any], location_ids: Mapping[str, str]) -> dict[str, Any]:
    out = {k: v for k, v in values.items() if k != "location"}
    if "location" in values:
        out["location_id"] = location_ids[str(values["location"]).lower()]
    if "relay" in out:
        out["relay"] = out["relay"] or None
    return out
