"""Firmware library (technicians): upload .bin images, see, download and archive them."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from smib_core.auth import Permission, Principal
from smib_core.errors import SmibError
from smib_core.services.firmware import add_firmware, archive_firmware, library_table
from smib_core.services.local_time import local_times
from smib_core.store.firmware import FirmwareInfo, FirmwareLibrary
from smib_core.ui.plain import escape_markdown
from smib_core.ui.resources import get_db, time_column, time_zone
from smib_core.ui.session import PRINCIPAL_KEY, page_principal

_FLASH = "firmware_flash"

page_principal(Permission.MANAGE_FIRMWARE)
db = get_db()
library = FirmwareLibrary(db)


def act(change: Callable[[Principal | None], object], done: str) -> None:
    """Make the change as the signed-in person (the service checks the role), then reload."""
    try:
        change(st.session_state.get(PRINCIPAL_KEY))
    except SmibError as exc:
        st.error(escape_markdown(str(exc)))
        return
    st.session_state[_FLASH] = done
    st.rerun()


def label(info: FirmwareInfo) -> str:
    return f"{info.product} {info.version}" + (" (archived)" if info.archived else "")


st.title("Firmware")
st.caption(
    "The .bin images boards can be updated to. Boards download them by file name "
    "from the firmware server while an update runs."
)
if flash := st.session_state.pop(_FLASH, None):
    st.success(escape_markdown(flash))

with st.expander("Upload a firmware", expanded=False), st.form("upload", clear_on_submit=True):
    upload = st.file_uploader("Firmware image (.bin)", type=["bin"])
    left, right = st.columns(2)
    product = left.text_input("Product", placeholder="cloudy")
    version = right.text_input("Version", placeholder="v0.0.2")
    notes = st.text_area("Notes", placeholder="What changed in this version")
    if st.form_submit_button("Upload", type="primary"):
        if upload is None:
            st.error("Choose a .bin file first.")
        else:
            data, name = upload.getvalue(), upload.name
            fields = {"product": product, "version": version, "notes": notes}
            act(
                lambda who: add_firmware(db, who, data, filename=name, **fields),
                f"{product.strip()} {version.strip()} added to the library.",
            )

show_archived = st.toggle("Show archived firmware")
infos = library.list(include_archived=show_archived)
if not infos:
    st.info("The library is empty. Upload a .bin file above to start.")
    st.stop()

table = local_times(library_table(infos), time_zone(), "uploaded_at")
st.dataframe(
    table.drop(columns=["id"]),
    hide_index=True,
    width="stretch",
    column_config={
        "size": st.column_config.NumberColumn("Size (bytes)", format="localized"),
        "sha256": st.column_config.TextColumn("SHA-256", help="first 12 hex digits"),
        "uploaded_by": "Uploaded by",
        "uploaded_at": time_column("Uploaded", table["uploaded_at"]),
        "archived": st.column_config.CheckboxColumn("Archived"),
    },
)

chosen = st.selectbox("Firmware", infos, format_func=label)
if chosen is not None:
    name = escape_markdown(chosen.filename)
    st.caption(f"File {name} · {chosen.size:,} bytes · SHA-256 {chosen.sha256}")
    st.download_button(
        "Download",
        data=lambda: library.read(chosen.id),
        file_name=chosen.filename,
        mime="application/octet-stream",
        on_click="ignore",
    )
    if not chosen.archived:
        what = escape_markdown(label(chosen))
        sure = st.checkbox(f"Yes, archive {what}: it leaves the list and new updates")
        if st.button("Archive", disabled=not sure):
            act(lambda who: archive_firmware(db, who, chosen.id), f"{label(chosen)} archived.")
