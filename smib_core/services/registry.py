"""Registry use cases for the pages: every change checked against the principal's role.

Contract: each function that changes the registry takes the signed-in principal and
calls `may_manage` (`auth.require(principal, Permission.MANAGE_REGISTRY)`) before it
touches the store, whatever the page showed, so a forged call is refused: the refusal
is audited as `refused` and raised (PermissionDenied), and nothing is stored. The store
validates (InvalidInput with a sentence a user can read) and audits the change itself.
Also here: the denomination presets the forms offer and the tables the pages show.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from smib_core.auth import Permission, Principal, require
from smib_core.errors import InvalidInput, PermissionDenied
from smib_core.protocol import normalize_relay_id
from smib_core.store.registry import Cabinet, Location, Registry, parse_denomination

log = logging.getLogger(__name__)

DENOMINATION_PRESETS = ("0.01", "0.02", "0.05", "0.10", "0.25", "0.50", "1.00")
OTHER = "other"
DENOMINATION_CHOICES = (*DENOMINATION_PRESETS, OTHER)
LOCATION_COLUMNS = ["name", "cabinets", "notes", "retired", "id"]


def may_manage(principal: Principal | None) -> Principal:
    """The principal when it may change the registry; PermissionDenied otherwise."""
    return require(principal, Permission.MANAGE_REGISTRY)


def acting_as(registry: Registry, principal: Principal | None, kind: str, detail: object) -> str:
    """The name to audit the change under, once the role is checked; refusals audited."""
    try:
        return may_manage(principal).name
    except PermissionDenied as exc:
        name = principal.name if principal is not None else "(not signed in)"
        registry.audit.record(name, kind, [], {"request": detail, "reason": str(exc)}, "refused")
        log.warning("%s by %s refused: %s", kind, name, exc)
        raise


# --- locations -----------------------------------------------------------------------


def add_location(
    registry: Registry, principal: Principal | None, name: str, notes: str = ""
) -> Location:
    actor = acting_as(registry, principal, "location_add", {"name": str(name)[:64]})
    return registry.add_location(name, actor, notes)


def rename_location(
    registry: Registry, principal: Principal | None, location_id: str, name: str, notes: str = ""
) -> None:
    actor = acting_as(registry, principal, "location_edit", {"id": location_id})
    registry.rename_location(location_id, name, actor, notes)


def retire_location(registry: Registry, principal: Principal | None, location_id: str) -> None:
    actor = acting_as(registry, principal, "location_retire", {"id": location_id})
    registry.retire_location(location_id, actor)


def locations_table(registry: Registry, include_retired: bool = False) -> pd.DataFrame:
    """One row per location with its number of active cabinets, by name."""
    counts = registry.frame()["location_id"].value_counts()
    rows = [
        {
            "name": loc.name,
            "cabinets": int(counts.get(loc.id, 0)),
            "notes": loc.notes,
            "retired": loc.retired,
            "id": loc.id,
        }
        for loc in registry.locations(include_retired=include_retired)
    ]
    return pd.DataFrame(rows, columns=LOCATION_COLUMNS)


# --- cabinets ------------------------------------------------------------------------


def add_cabinet(
    registry: Registry, principal: Principal | None, values: Mapping[str, Any]
) -> Cabinet:
    actor = acting_as(registry, principal, "cabinet_add", {"name": str(values.get("name"))[:64]})
    return registry.add_cabinet(values, actor)


def update_cabinet(
    registry: Registry, principal: Principal | None, cabinet_id: str, changes: Mapping[str, Any]
) -> Cabinet:
    actor = acting_as(registry, principal, "cabinet_edit", {"id": cabinet_id})
    return registry.update_cabinet(cabinet_id, changes, actor)


def retire_cabinet(registry: Registry, principal: Principal | None, cabinet_id: str) -> None:
    actor = acting_as(registry, principal, "cabinet_retire", {"id": cabinet_id})
    registry.retire_cabinet(cabinet_id, actor)


def adopt(
    registry: Registry,
    principal: Principal | None,
    relay: str,
    *,
    name: str,
    denomination: object,
    location_id: str | None = None,
    new_location: str = "",
) -> Cabinet:
    """Register an unassigned board as a new cabinet, in `location_id` or in the location
    named `new_location` (made when no active location has that name)."""
    actor = acting_as(registry, principal, "cabinet_add", {"relay": str(relay)[:32]})
    normalize_relay_id(relay)
    parse_denomination(denomination)  # refuse bad input before a location is made
    wanted = new_location.strip()
    if wanted:
        same = [loc for loc in registry.locations() if loc.name.lower() == wanted.lower()]
        location_id = same[0].id if same else registry.add_location(wanted, actor).id
    if not location_id:
        raise InvalidInput("choose a location or name a new one")
    return registry.adopt(relay, name, location_id, denomination, actor)


def next_cabinet_name(registry: Registry) -> str:
    """'Cabinet 007': one above the highest 'Cabinet NNN' in use, retired ones included."""
    numbers = [
        int(match.group(1))
        for cabinet in registry.cabinets(include_retired=True)
        if (match := re.fullmatch(r"Cabinet (\d+)", cabinet.name))
    ]
    return f"Cabinet {max(numbers, default=0) + 1:03d}"


# --- denominations -------------------------------------------------------------------


def denomination_choice(value: float | None) -> str:
    """The preset a stored denomination matches ('0.25'), else `OTHER`."""
    if value is None:
        return DENOMINATION_PRESETS[0]
    label = f"{value:.2f}"
    return label if label in DENOMINATION_PRESETS and float(label) == value else OTHER


def chosen_denomination(choice: str, other: object) -> object:
    """What the form means: the preset, or the typed value when `OTHER` was chosen."""
    return other if choice == OTHER else choice
