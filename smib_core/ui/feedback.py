"""Make a change for the signed-in person and say how it went, across the rerun after it.

`act` runs the change (a service function that checks the role itself); a refusal or
bad input shows its sentence with `st.error` where the form is, and the form keeps what
was typed. On success the page reruns, `show_flash` shows what was done once, at the
top, and a form keyed with `fresh_key(name)` comes back empty.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from smib_core.errors import SmibError
from smib_core.ui.plain import escape_markdown

FLASH_KEY = "flash"


def act(change: Callable[[], object], done: str, *, fresh: str | None = None) -> None:
    try:
        change()
    except SmibError as exc:
        st.error(escape_markdown(sentence(str(exc))))
        return
    st.session_state[FLASH_KEY] = done
    if fresh is not None:
        st.session_state[_generation(fresh)] = st.session_state.get(_generation(fresh), 0) + 1
    st.rerun()


def fresh_key(name: str) -> str:
    """A form key that changes after each success of `act(..., fresh=name)`."""
    return f"{name}_{st.session_state.get(_generation(name), 0)}"


def _generation(name: str) -> str:
    return f"{name}__generation"


def show_flash() -> None:
    if done := st.session_state.pop(FLASH_KEY, None):
        st.success(escape_markdown(done))  # sentences that quote names


def sentence(text: str) -> str:
    """'there is no location' -> 'There is no location.' (store errors are fragments)."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else f"{text}."
