"""The Templates tab of the batch page: list (masked), create, delete with confirmation."""

from __future__ import annotations

import streamlit as st

from smib_core import protocol
from smib_core.auth import Permission, Principal, allowed, require
from smib_core.protocol import FieldSpec
from smib_core.services.local_time import local_times
from smib_core.store.templates import TemplateStore
from smib_core.ui import resources
from smib_core.ui.feedback import act, fresh_key
from smib_core.ui.plain import escape_markdown


def writable_components() -> list[str]:
    return [comp for comp, specs in protocol.COMPONENTS.items() if specs]


def spec_label(spec: FieldSpec) -> str:
    return f"{spec.label} ({spec.name})"


def field_input(spec: FieldSpec, key: str, label: str | None = None) -> str:
    """A text box for one config field: hidden typing for secrets, the range as a hint."""
    hint = f"{spec.low}..{spec.high}" if spec.kind is int else ""
    return st.text_input(
        label or f"New value of {spec.name}",
        key=key,
        type="password" if spec.secret else "default",
        placeholder=hint,
        help=spec.help or None,
    )


def templates_section(principal: Principal) -> None:
    store = TemplateStore(resources.get_db(), resources.get_audit())
    st.subheader("Configuration templates")
    st.caption(
        "A template is a named partial configuration of one component (for example "
        "the WiFi channel and password of a floor), applied to many boards at once "
        "from Run a batch. Secrets are kept to be rolled out, and always shown "
        "masked."
    )
    frame = local_times(store.frame(), resources.time_zone(), "created_at")
    if frame.empty:
        st.info("No template yet. Create one below, then apply it from Run a batch.")
    else:
        st.dataframe(
            frame,
            hide_index=True,
            width="stretch",
            column_config={
                "name": "Name",
                "comp": "Component",
                "fields": st.column_config.TextColumn("Fields (secrets masked)", width="large"),
                "created_by": "Created by",
                "created_at": resources.time_column(
                    "Created", frame["created_at"], "YYYY-MM-DD HH:mm"
                ),
            },
        )
    if not allowed(principal, Permission.MANAGE_TEMPLATES):
        st.caption("Your role cannot change templates.")
        return
    _create_form(store, principal, expanded=frame.empty)
    if not frame.empty:
        _delete(store, principal, list(frame["name"]))


def _create_form(store: TemplateStore, principal: Principal, expanded: bool) -> None:
    with st.expander("Create a template", expanded=expanded, icon=":material/add:"):
        comp = st.selectbox("Component", writable_components(), key="template_comp")
        form = fresh_key("template_new")
        with st.form(form):
            name = st.text_input("Template name", max_chars=64, placeholder="Floor 2 WiFi")
            st.caption("Fill only the fields the template should set; empty ones are left out.")
            values = {
                spec.name: field_input(spec, f"{form}_{comp}_{spec.name}", spec_label(spec))
                for spec in protocol.COMPONENTS[comp]
            }
            submitted = st.form_submit_button("Save the template", type="primary")
    if submitted:
        fields = {k: v for k, v in values.items() if v.strip()}

        def save() -> None:
            require(principal, Permission.MANAGE_TEMPLATES)  # at the click, not the draw
            store.save(name, comp, fields, principal.name)

        act(save, f"Template {name.strip()!r} saved.", fresh="template_new")


def _delete(store: TemplateStore, principal: Principal, names: list[str]) -> None:
    with st.expander("Delete a template", icon=":material/delete:"):
        key = fresh_key("template_delete")
        name = str(st.selectbox("Template to delete", names, key=f"{key}_name"))
        sure = st.checkbox(
            f"Yes, delete the template {escape_markdown(repr(name))}", key=f"{key}_sure"
        )
        clicked = st.button("Delete", disabled=not sure, key=f"{key}_go")
    if clicked:

        def delete() -> None:
            require(principal, Permission.MANAGE_TEMPLATES)
            store.delete(name, principal.name)

        act(delete, f"Template {name!r} deleted.", fresh="template_delete")
