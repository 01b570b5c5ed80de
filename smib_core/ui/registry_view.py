"""The registry page's pieces: the locations tab and the cabinets tab.

Everyone with the fleet permission sees the lists; the forms to add, change and retire
show only for a role that may manage the registry, and every change goes through
`services.registry`, which checks the role again before the store is touched.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import streamlit as st

from smib_core.auth import Permission, Principal, allowed
from smib_core.errors import InvalidInput
from smib_core.services import registry as service
from smib_core.services.cabinet_files import (
    FILE_COLUMNS,
    CabinetFile,
    export_cabinets,
    read_cabinet_file,
)
from smib_core.services.cabinet_import import ImportPlan, ImportRejected, import_cabinets
from smib_core.services.fleet import unassigned_boards
from smib_core.store.registry import Cabinet, Location, Registry
from smib_core.ui.feedback import act, fresh_key, sentence
from smib_core.ui.fleet_view import current_table, offline_after
from smib_core.ui.plain import escape_markdown

CABINET_COLUMNS: dict[str, Any] = {
    "name": "Cabinet",
    "location": "Location",
    "relay": st.column_config.TextColumn("Board (relayId)"),
    "denomination": st.column_config.NumberColumn("Denomination", format="%.2f"),
    "serial": "Serial number",
    "manufacturer": "Manufacturer",
    "game": "Game",
    "par": st.column_config.NumberColumn(
        "Par (%)", format="%.2f", help="The game's theoretical hold, % of coin in"
    ),
    "notes": "Notes",
    "retired": st.column_config.CheckboxColumn("Retired"),
    "updated_at": st.column_config.DatetimeColumn("Changed", format="distance"),
}


def may_change(principal: Principal) -> bool:
    return allowed(principal, Permission.MANAGE_REGISTRY)


def _confirmed(what: str, key: str) -> bool:
    """An explicit confirmation step before retiring."""
    sure = st.checkbox(f"Yes, retire {escape_markdown(what)}", key=f"sure_{key}")
    return st.button("Retire", key=f"retire_{key}", disabled=not sure, icon=":material/archive:")


def summary(registry: Registry) -> None:
    frame = registry.frame()
    places, cabinets, boardless = st.columns(3)
    places.metric("Locations", len(registry.locations()), border=True)
    cabinets.metric("Active cabinets", len(frame), border=True)
    boardless.metric(
        "Cabinets without a board",
        int(frame["relay"].isna().sum()),
        border=True,
        help="Give them a relayId, or adopt a board on the Fleet page",
    )


# --- locations -------------------------------------------------------------------------


def locations_tab(principal: Principal, registry: Registry) -> None:
    show_retired = st.toggle("Show retired locations", key="show_retired_locations")
    table = service.locations_table(registry, include_retired=show_retired)
    if table.empty:
        hint = "Add the first one below" if may_change(principal) else "A technician adds them"
        st.info(f"No location yet: a location is a floor, a room or a site. {hint}.")
    else:
        columns = ["name", "cabinets", "notes"] + (["retired"] if show_retired else [])
        listing, chart = st.columns([3, 2]) if len(table) > 1 else (st.container(), None)
        if chart is not None:
            chart.bar_chart(
                table,
                x="name",
                y="cabinets",
                x_label="",
                y_label="Cabinets",
                horizontal=True,
                color="#0f766e",
                height=60 + 36 * len(table),
            )
        listing.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_order=columns,
            column_config=CABINET_COLUMNS | {"name": "Location", "cabinets": "Active cabinets"},
        )
    if not may_change(principal):
        return
    adding = st.expander("Add a location", icon=":material/add:")
    with adding, st.form(fresh_key("add_location"), border=False):
        name = st.text_input("Name", placeholder="Main floor")
        notes = st.text_input("Notes", placeholder="Where it is, who looks after it")
        if st.form_submit_button("Add the location", type="primary"):
            act(
                lambda: service.add_location(registry, principal, name, notes),
                f"Location {name.strip()} added.",
                fresh="add_location",
            )
    active = registry.locations()
    if active:
        with st.expander("Change or retire a location", icon=":material/edit:"):
            edit_location(principal, registry, active)


def edit_location(principal: Principal, registry: Registry, active: list[Location]) -> None:
    location = st.selectbox("Location", active, format_func=lambda loc: loc.name)
    if location is None:
        return
    with st.form(f"edit_location_{location.id}", border=False):
        name = st.text_input("Name", location.name)
        notes = st.text_input("Notes", location.notes)
        if st.form_submit_button("Save", type="primary"):
            act(
                lambda: service.rename_location(registry, principal, location.id, name, notes),
                f"Location {name.strip()} saved.",
            )
    st.caption("Retiring keeps its history; move or retire its cabinets first.")
    if _confirmed(location.name, location.id):
        act(
            lambda: service.retire_location(registry, principal, location.id),
            f"Location {location.name} retired.",
        )


# --- cabinets --------------------------------------------------------------------------


def cabinets_tab(principal: Principal, registry: Registry) -> None:
    locations = registry.locations()
    names = {loc.id: loc.name for loc in locations}
    where, retired = st.columns([3, 2], vertical_alignment="bottom")
    place = where.selectbox(
        "Location",
        [None, *names],
        key="cabinets_where",
        format_func=lambda i: "All locations" if i is None else names[i],
    )
    show_retired = retired.toggle("Show retired cabinets", key="show_retired_cabinets")
    frame = registry.frame(include_retired=show_retired)
    if place is not None:
        frame = frame[frame["location_id"] == place]
    if frame.empty:
        st.info("No cabinet here yet. Add one below, or adopt a board on the Fleet page.")
    else:
        columns = [c for c in CABINET_COLUMNS if c != "retired" or show_retired]
        st.dataframe(
            frame,
            hide_index=True,
            width="stretch",
            column_order=columns,
            column_config=CABINET_COLUMNS,
        )
    if not may_change(principal):
        return
    if not locations:
        st.info("Add a location first (Locations tab): every cabinet stands somewhere.")
        return
    with st.expander("Add a cabinet", icon=":material/add:"):
        unassigned_hint()
        with st.form(fresh_key("add_cabinet"), border=False):
            values = cabinet_fields(locations, None, place)
            if st.form_submit_button("Add the cabinet", type="primary"):
                act(
                    lambda: service.add_cabinet(registry, principal, values),
                    f"Cabinet {values['name'].strip()} added.",
                    fresh="add_cabinet",
                )
    cabinets = registry.cabinets()
    if cabinets:
        with st.expander("Change or retire a cabinet", icon=":material/edit:"):
            edit_cabinet(principal, registry, locations, cabinets)


def edit_cabinet(
    principal: Principal, registry: Registry, locations: list[Location], cabinets: list[Cabinet]
) -> None:
    cabinet = st.selectbox("Cabinet", cabinets, format_func=cabinet_label)
    if cabinet is None:
        return
    with st.form(f"edit_cabinet_{cabinet.id}", border=False):
        values = cabinet_fields(locations, cabinet, cabinet.location_id)
        if st.form_submit_button("Save", type="primary"):
            act(
                lambda: service.update_cabinet(registry, principal, cabinet.id, values),
                f"Cabinet {values['name'].strip()} saved.",
            )
    st.caption("Retiring keeps the cabinet's history and frees its board for another cabinet.")
    if _confirmed(cabinet.name, cabinet.id):
        act(
            lambda: service.retire_cabinet(registry, principal, cabinet.id),
            f"Cabinet {cabinet.name} retired.",
        )


def cabinet_label(cabinet: Cabinet) -> str:
    return f"{cabinet.name} ({cabinet.relay})" if cabinet.relay else f"{cabinet.name} (no board)"


def cabinet_fields(
    locations: list[Location], current: Cabinet | None, location_id: str | None
) -> dict[str, Any]:
    """The cabinet form's inputs (inside a st.form), pre-filled from `current`."""
    ids = [loc.id for loc in locations]
    names = {loc.id: loc.name for loc in locations}
    left, right = st.columns(2)
    name = left.text_input("Cabinet name", current.name if current else "", placeholder="Buffalo 7")
    where = right.selectbox(
        "Location",
        ids,
        format_func=names.__getitem__,
        index=ids.index(location_id) if location_id in ids else 0,
    )
    relay = left.text_input(
        "Board (relayId)",
        (current.relay or "") if current else "",
        placeholder="e831cdfa8384",
        help="12 hex characters; leave empty while the cabinet has no board",
    )
    value = current.denomination if current else None
    choice = service.denomination_choice(value)
    choices = list(service.DENOMINATION_CHOICES)
    denom, other = right.columns(2)
    picked = denom.selectbox(
        "Denomination",
        choices,
        index=choices.index(choice),
        help="Money per credit: meters count credits",
    )
    typed = other.text_input(
        "Other denomination",
        f"{value:g}" if choice == service.OTHER and value else "",
        placeholder="when 'other'",
    )
    serial, maker, game, par = st.columns(4)
    return {
        "name": name,
        "location_id": where,
        "relay": relay.strip() or None,
        "denomination": service.chosen_denomination(picked, typed),
        "serial": serial.text_input("Serial number", current.serial if current else ""),
        "manufacturer": maker.text_input("Manufacturer", current.manufacturer if current else ""),
        "game": game.text_input("Game", current.game if current else ""),
        "par": par.number_input(
            "Par (%)",
            min_value=0.0,
            max_value=100.0,
            value=current.par if current else None,
            step=0.5,
            help="The game's theoretical hold, % of coin in; empty when not known",
        ),
        "notes": st.text_input("Notes", current.notes if current else ""),
    }


def unassigned_hint() -> None:
    """Boards heard that no cabinet claims, to copy into the relayId field."""
    stray = unassigned_boards(current_table(offline_after()))
    if not stray.empty:
        relays = ", ".join(f"`{r}`" for r in stray["relay"].head(12))
        st.caption(f"Boards heard but not in any cabinet: {relays}")


# --- import and export ---------------------------------------------------------------

MIME = {
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
PLAN_COLUMNS: dict[str, Any] = {
    "row": st.column_config.NumberColumn("Row", help="As the spreadsheet numbers it"),
    "action": "Change",
    "cabinet": "Cabinet",
    "changes": "What changes",
}


def files_tab(principal: Principal, registry: Registry) -> None:
    st.markdown("##### Export the cabinets")
    excel, text = st.columns(2)  # two buttons: a format picker's rerun would reset the tabs
    for column, fmt, label in ((excel, "xlsx", "Excel"), (text, "csv", "CSV")):
        column.download_button(
            f"Download the cabinets ({label})",
            data=partial(_exported, registry, principal.name, fmt),
            file_name=f"cabinets.{fmt}",
            mime=MIME[fmt],
            icon=":material/download:",
            on_click="ignore",
            width="stretch",
        )
    if not may_change(principal):
        return
    st.markdown("##### Import a machine list")
    st.caption(
        f"A .csv or .xlsx file whose first row names its columns: {', '.join(FILE_COLUMNS)} "
        "(only name is required). Rows update the cabinet with the same serial, else the "
        "same name; other rows add cabinets. Missing columns change nothing; nothing is "
        "written until you confirm, and nothing at all if one row is bad."
    )
    upload = st.file_uploader("Machine list", type=["csv", "xlsx"], key=fresh_key("cabinet_upload"))
    create = st.checkbox(
        "Create the locations the file names that do not exist yet", key="import_new_locations"
    )
    if upload is None:
        return
    try:
        cabinet_file = read_cabinet_file(upload.getvalue(), upload.name)
        plan = import_cabinets(
            registry, principal, cabinet_file, create_locations=create, dry_run=True
        )
    except ImportRejected as exc:
        st.error(f"{len({p.row for p in exc.problems})} row(s) are bad: nothing will be imported.")
        problems = [{"row": p.row, "field": p.field, "problem": p.message} for p in exc.problems]
        st.dataframe(problems, hide_index=True, width="stretch")
        return
    except InvalidInput as exc:
        st.error(sentence(str(exc)))
        return
    preview(principal, registry, cabinet_file, plan, create)


def _exported(registry: Registry, actor: str, fmt: str) -> bytes:
    """The download's bytes, made (and audited) when the button is clicked."""
    return export_cabinets(registry, actor, fmt)[0]


def preview(
    principal: Principal,
    registry: Registry,
    cabinet_file: CabinetFile,
    plan: ImportPlan,
    create: bool,
) -> None:
    """The changes the file would make, and the button that makes them."""
    st.markdown(f"**{cabinet_file.source}**, once imported: {plan.summary()}")
    st.dataframe(plan.table(), hide_index=True, width="stretch", column_config=PLAN_COLUMNS)
    changes = plan.count("add") + plan.count("update") + len(plan.new_locations)
    if st.button(
        "Import these changes",
        type="primary",
        disabled=changes == 0,
        icon=":material/upload:",
        help=None if changes else "The registry already matches the file",
    ):
        with st.spinner(f"Importing {changes} changes…"):  # about 9 s for 1,000 cabinets
            act(
                lambda: import_cabinets(
                    registry, principal, cabinet_file, create_locations=create, expected=plan
                ),
                f"Imported {cabinet_file.source}: {plan.summary()}.",
                fresh="cabinet_upload",
            )
