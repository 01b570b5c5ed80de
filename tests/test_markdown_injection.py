"""Names, text a board reports and query parameters show up literally: a hostile cabinet
name rendered through AppTest reaches Markdown only escaped (no image, colour, maths or
link can start), and markdown-it (CommonMark) reads the escaped title back as the name."""

from __future__ import annotations

import re
from typing import Any

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from smib_core.store.registry import Cabinet, Location
from smib_core.ui import resources
from smib_core.ui.plain import escape_markdown
from tests.test_page_cabinet import FakeRegistry, open_page

HOSTILE = "![p](http://x/x.png) :red[x] $x^2$ http://a.b"
RELAY = "e831cdfa8384"


class HostileRegistry(FakeRegistry):
    def locations(self, include_retired: bool = False) -> list[Location]:
        return [Location("floor", HOSTILE)]


def _markdown_texts(app: AppTest) -> list[str]:
    """Every element value or label Streamlit renders as Markdown."""
    groups: list[Any] = [
        app.title,
        app.header,
        app.subheader,
        app.markdown,
        app.caption,
        app.info,
        app.error,
        app.warning,
        app.success,
        app.toast,
    ]
    texts = [str(e.value) for group in groups for e in group]
    texts += [str(w.label) for w in (*app.button, *app.checkbox, *app.metric)]
    texts += [f"{m.value} {m.delta}" for m in app.metric]  # Markdown too
    return texts


def _plain_in_markdown(texts: list[str]) -> None:
    """No Markdown construct of the hostile name survives once escaped characters
    (a backslash and the character after it) are taken out."""
    unescaped = re.sub(r"\\.", "", "\n".join(texts))
    for marker in ("![", "[p]", "](", ":red[", "$x", "http://"):
        assert marker not in unescaped, marker


def test_a_hostile_cabinet_name_shows_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    cabinet = Cabinet("c1", HOSTILE, "floor", RELAY, 0.01, manufacturer=HOSTILE, game=HOSTILE)
    app, _ = open_page(monkeypatch, HostileRegistry([cabinet]), cabinet="c1")
    assert not app.exception
    assert app.title[0].value == escape_markdown(HOSTILE)
    [inline] = [t for t in MarkdownIt("commonmark").parse(app.title[0].value) if t.children]
    assert [c.type for c in inline.children or []] == ["text"]
    assert inline.content.replace("\\", "") == HOSTILE.replace("\\", "")
    assert escape_markdown(HOSTILE) in app.caption[0].value
    _plain_in_markdown(_markdown_texts(app))


def test_a_hostile_query_parameter_shows_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = open_page(monkeypatch, FakeRegistry(), cabinet=HOSTILE)
    assert not app.exception
    assert "There is no active cabinet" in app.error[0].value
    _plain_in_markdown(_markdown_texts(app))


class ReportingBus:
    """A board that reports a hostile firmware name and version."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def relays_seen(self) -> dict[str, float]:
        return {RELAY: 0.0}

    def last_seen(self, relay: str) -> float | None:
        return None

    def latest_config(self, relay: str) -> dict[str, Any]:
        return {}

    def firmware(self, relay: str) -> tuple[str, str]:
        return HOSTILE, HOSTILE

    def send(self, relay: str, command: Any) -> None:
        self.sent.append(command)


def test_a_hostile_firmware_report_shows_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = open_page(monkeypatch, FakeRegistry(), relay=RELAY)
    bus = ReportingBus()
    monkeypatch.setattr(resources, "get_bus", lambda: bus)
    app.run()
    assert not app.exception
    firmware = next(m for m in app.metric if m.label == "Firmware")
    # Streamlit renders a metric's value and note as Markdown too.
    assert (firmware.value, firmware.delta) == (escape_markdown(HOSTILE),) * 2
    _plain_in_markdown(_markdown_texts(app))
