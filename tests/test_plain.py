"""Untrusted text escaped for Markdown renders as exactly that text and nothing else.

markdown-it-py (CommonMark, the reader Streamlit's own renderer follows) is an independent
reader: the escaped text parses into one paragraph of plain text equal to the original.
Streamlit's extras (colours, icons, maths, bare links) need their marker characters
unescaped, which the last test checks."""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from smib_core.ui.plain import escape_markdown

HOSTILE = [
    "![p](http://x/x.png) :red[x] $x^2$ http://a.b",
    "[click](javascript:alert(1)) <img src=x onerror=alert(1)> **bold** _it_",
    "# heading\n- item\n> quote",
    ":material/delete: :smile: `code` ~~gone~~ www.example.com a@b.example",
    "C:\\path\\ \\*not\\*",
    "1. first",
    "2) second &amp; &#x3A; | a | b |",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_text_renders_as_plain_text(text: str) -> None:
    md = MarkdownIt("commonmark").enable(["strikethrough"])
    tokens = md.parse(escape_markdown(text))
    assert [t.type for t in tokens] == ["paragraph_open", "inline", "paragraph_close"]
    inline = tokens[1].children or []
    assert [t.type for t in inline] == ["text"] * len(inline)
    assert "".join(t.content for t in inline) == " ".join(text.split())


def test_streamlit_extras_lose_their_markers() -> None:
    escaped = escape_markdown(":red[x] $x^2$ :material/warning: http://a.b www.a.b")
    assert escaped == r"\:red\[x\] \$x\^2\$ \:material/warning\: http\://a.b www\.a.b"
    assert (
        escape_markdown("Cabinet 001, floor 2 (VIP). 'Ok'?") == "Cabinet 001, floor 2 (VIP). 'Ok'?"
    )
