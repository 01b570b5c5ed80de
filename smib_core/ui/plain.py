"""Text from a person or a board, shown literally wherever Streamlit renders Markdown.

`st.markdown`, `st.caption`, `st.title`, `st.info`/`error`/`success`/`warning`, toasts,
and the labels of widgets, metrics, tabs and expanders all read their text as Markdown
(with Streamlit's extras: `:red[...]` colours, `:material/...:` icons, `$...$` maths,
bare links). A cabinet named `![p](http://host/x.png)` would make every viewer's browser
fetch the attacker's URL. So every name, every value a board reports, every echoed query
parameter and every error message that may quote input goes through `escape_markdown`
before it joins Markdown. (Plain contexts need nothing and must not get it: dataframe
cells, `st.text`, `st.code`, select box options, metric values and deltas.)
"""

from __future__ import annotations

import re

# Every character that can open Markdown (CommonMark, GFM, Streamlit's extras) inside a
# line. Left alone, because nothing starts with them once these are escaped: . , ; ? ' "
# ( ) / % (a link's "(url)" needs a "]" before it).
_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#+\-!|~:$^=&@])")
_BREAKS = re.compile(r"[\r\n\t\f\v]+")
_WWW_DOT = re.compile(r"(?i)(?<=\bwww)\.")  # GFM makes "www.x.y" a link
_LIST_START = re.compile(r"^(\s*\d+)([.)])")  # "1. x" at the start of a block


def escape_markdown(text: object) -> str:
    """`text` as Markdown that shows exactly `text` on one line: a backslash before
    every character that could start a link, image, emphasis, code, colour, icon,
    maths, HTML, heading, list or bare link (CommonMark lets any ASCII punctuation be
    escaped so), and line breaks as spaces."""
    one_line = _BREAKS.sub(" ", str(text))
    escaped = _SPECIAL.sub(r"\\\1", one_line)
    return _LIST_START.sub(r"\1\\\2", _WWW_DOT.sub(r"\\.", escaped))
