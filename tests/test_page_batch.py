"""The batch page: empty data, a bad value refused, a location restart after confirmation
(stored, carried out by a BatchWorker, followed from the database), cancel, templates."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from smib_core.auth import Principal, Role
from smib_core.errors import RequestTimeout
from smib_core.protocol import Command, ConfigReply, DeviceMessage
from smib_core.services.batch import BatchTimings, BatchWorker
from smib_core.settings import Settings
from smib_core.store.audit import AuditTrail
from smib_core.store.batches import Batch, BatchStore
from smib_core.store.registry import Registry
from smib_core.store.templates import TemplateStore
from smib_core.ui import resources
from smib_core.ui.plain import escape_markdown

pytestmark = pytest.mark.integration

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "batch.py")
TECH = Principal("tina", Role.TECHNICIAN)
R1, R2 = "e831cd000001", "e831cd000002"


FAST = BatchTimings(offline_after_s=60, restart_grace_s=0.2, probe_every_s=0.1, poll_s=0.1)


@dataclass
class FakeBus:
    """Boards that are always heard and come back at once after a restart: a `cfg` read
    is answered (no reply to a write or `rst`, as a strict board)."""

    heard: set[str] = field(default_factory=set)
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    connected: bool = True

    def relays_seen(self) -> dict[str, float]:
        return dict.fromkeys(self.heard, time.time())

    def last_seen(self, relay: str) -> float | None:
        return time.time() if relay in self.heard else None

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]:
        return {"app": ({"version": "v1"}, time.time())} if self.sent else {}

    def send(self, relay: str, command: Command) -> None:
        self.sent.append((relay, dict(command.payload)))

    def answers(self, relay: str) -> bool:
        return relay in self.heard

    def request(self, relay: str, command: Command, timeout: float = 5.0) -> DeviceMessage:
        if command.reply_typ != "cfg" or not self.answers(relay):
            raise RequestTimeout(f"board {relay} did not answer")
        fields = {"firmware": "cloudy", "version": "v1"}
        return ConfigReply(relay, "cfg", "smib/config", str(command.reply_comp), fields)


def run_worker(mongo_db: Any, bus: FakeBus) -> BatchWorker:
    worker = BatchWorker(mongo_db, bus, AuditTrail(mongo_db), Settings(), timings=FAST)
    worker.start()
    return worker


def latest(mongo_db: Any) -> Batch:
    return BatchStore(mongo_db).recent()[0]


def wait_finished(mongo_db: Any, batch_id: str, timeout: float = 20) -> Batch:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = BatchStore(mongo_db).get(batch_id)
        if batch is not None and batch.finished:
            return batch
        time.sleep(0.05)
    raise AssertionError("the batch did not finish")


def page(mongo_db: Any, monkeypatch: pytest.MonkeyPatch, bus: FakeBus) -> AppTest:
    audit = AuditTrail(mongo_db)
    store = BatchStore(mongo_db)
    monkeypatch.setattr(resources, "get_db", lambda: mongo_db)
    monkeypatch.setattr(resources, "get_audit", lambda: audit)
    monkeypatch.setattr(resources, "get_registry", lambda: Registry(mongo_db, audit))
    monkeypatch.setattr(resources, "get_bus", lambda: bus)
    monkeypatch.setattr(resources, "get_settings", lambda: Settings(offline_after_s=60))
    monkeypatch.setattr(resources, "get_batch_store", lambda: store)
    # The page runs alone, without app.py's gate: its principal stands as given.
    monkeypatch.setattr(resources, "account_check", lambda: lambda p: p)
    app = AppTest.from_file(PAGE, default_timeout=20)
    app.session_state["principal"] = TECH
    return app.run()


def save_template(app: AppTest, name: str, **fields: str) -> None:
    """Fill the Templates tab's form (component net) and submit it."""
    next(t for t in app.text_input if t.label == "Template name").input(name)
    for field_name, value in fields.items():
        app.text_input(key=f"template_new_0_net_{field_name}").input(value)
    next(b for b in app.button if b.label == "Save the template").click().run()


def test_empty_data_says_what_to_do(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = page(mongo_db, monkeypatch, FakeBus())
    assert not app.exception
    infos = [i.value for i in app.info]
    assert any("No location is registered yet" in text for text in infos)
    assert any("No template yet: create one in the Templates tab" in text for text in infos)
    assert any("No template yet. Create one below" in text for text in infos)
    assert not [b for b in app.button if b.label == "Review the batch"]


def test_bad_value_refused_and_nothing_sent(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = FakeBus(heard={R1})
    app = page(mongo_db, monkeypatch, bus)
    app.radio[0].set_value("Board by board").run()
    app.multiselect[0].set_value([R1]).run()
    app.radio[1].set_value("Change one field").run()
    app.selectbox[0].set_value("net").run()
    field_box = next(s for s in app.selectbox if s.label == "Field")
    field_box.set_value(next(o for o in field_box.options if "netStaChan" in o)).run()
    next(t for t in app.text_input if t.label == "New value of netStaChan").input("99").run()
    assert not app.exception
    assert "must be 1..14" in app.error[0].value
    assert not [b for b in app.button if b.label == "Review the batch"]
    assert bus.sent == []


def test_location_restart_after_confirmation(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(mongo_db)
    floor = registry.add_location("Main floor", actor="setup")
    for n, relay in enumerate((R1, R2)):
        registry.adopt(relay, f"Lucky {n}", floor.id, "0.01", actor="setup")
    bus = FakeBus(heard={R1, R2})
    app = page(mongo_db, monkeypatch, bus)
    app.radio[1].set_value("Restart").run()
    next(b for b in app.button if b.label == "Review the batch").click().run()
    assert any("Confirm: restart 2 boards" in m.value for m in app.markdown)
    assert list(app.dataframe[0].value["cabinet"]) == ["Lucky 0", "Lucky 1"]
    assert bus.sent == []
    next(b for b in app.button if b.label.startswith("Confirm and start")).click().run()
    assert not app.exception
    batch = latest(mongo_db)
    assert batch.state == "queued" and bus.sent == [], "submitting only stores the batch"
    assert any("Waiting for a worker" in w.value for w in app.warning)
    worker = run_worker(mongo_db, bus)
    try:
        wait_finished(mongo_db, batch.id)
    finally:
        worker.stop()
    app.run()
    assert sorted(relay for relay, _ in bus.sent) == [R1, R2]
    assert "All 2 boards confirmed." in app.success[0].value
    outcome = app.dataframe[0].value
    assert list(outcome["state"]) == ["confirmed", "confirmed"]
    next(b for b in app.button if b.label == "Start a new batch").click().run()
    recent = next(e for e in app.expander if e.label == "Recent batches (1)")
    listed = recent.dataframe[0].value
    assert list(listed["batch"]) == [batch.id] and listed["outcome"][0] == "2 confirmed"


@dataclass
class SlowBus(FakeBus):
    """Boards that are quiet (answer nothing) for `back_after_s` after their restart was
    sent."""

    back_after_s: float = 5.0  # time for the test to click Cancel, even on a busy machine
    restarted: dict[str, float] = field(default_factory=dict)

    def last_seen(self, relay: str) -> float | None:
        sent = self.restarted.get(relay)
        if sent is not None and time.time() < sent + self.back_after_s:
            return sent
        return super().last_seen(relay)

    def answers(self, relay: str) -> bool:
        sent = self.restarted.get(relay)
        if sent is not None and time.time() < sent + self.back_after_s:
            return False
        return super().answers(relay)

    def send(self, relay: str, command: Command) -> None:
        super().send(relay, command)
        self.restarted[relay] = time.time()


def test_cancel_a_running_batch(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    relays = [f"e831cd0000{n:02x}" for n in range(1, 11)]  # 8 in flight, 2 waiting their turn
    registry = Registry(mongo_db)
    floor = registry.add_location("Main floor", actor="setup")
    for n, relay in enumerate(relays):
        registry.adopt(relay, f"Lucky {n}", floor.id, "0.01", actor="setup")
    bus = SlowBus(heard=set(relays))
    app = page(mongo_db, monkeypatch, bus)
    app.radio[1].set_value("Restart").run()
    next(b for b in app.button if b.label == "Review the batch").click().run()
    next(b for b in app.button if b.label.startswith("Confirm and start")).click().run()
    batch = latest(mongo_db)
    worker = run_worker(mongo_db, bus)
    try:
        deadline = time.monotonic() + 10
        while len(bus.sent) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(bus.sent) == 8
        next(b for b in app.button if b.label == "Cancel the boards not started yet").click().run()
        assert not app.exception
        assert BatchStore(mongo_db).get(batch.id).cancel_requested_by == "tina"  # type: ignore[union-attr]
        assert any("Cancelled by tina" in i.value for i in app.info)
        wait_finished(mongo_db, batch.id, timeout=30)
    finally:
        worker.stop()
    app.run()
    assert len(bus.sent) == 8, "the two boards still waiting were sent nothing"
    cancelled = "Cancelled by tina: 8 of 10 boards confirmed, 2 not sent anything."
    assert cancelled in app.warning[0].value
    states = list(app.dataframe[0].value["state"])
    assert states.count("confirmed") == 8 and states.count("cancelled") == 2


def test_template_created_listed_masked_then_deleted(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = page(mongo_db, monkeypatch, FakeBus())
    save_template(app, "Floor 2 WiFi", netStaChan="6", netStaPwd="s3cret-wifi")
    assert not app.exception
    assert "Template 'Floor 2 WiFi' saved." in app.success[0].value
    listed = app.dataframe[0].value
    assert list(listed["name"]) == ["Floor 2 WiFi"]
    assert "s3cret" not in listed.to_csv() and "••••••" in listed["fields"].iloc[0]
    assert TemplateStore(mongo_db).get("floor 2 wifi").fields["netStaPwd"] == "s3cret-wifi"

    delete = next(b for b in app.button if b.label == "Delete")
    assert delete.disabled
    app.checkbox(key="template_delete_0_sure").check().run()
    next(b for b in app.button if b.label == "Delete").click().run()
    assert "Template 'Floor 2 WiFi' deleted." in app.success[0].value
    assert TemplateStore(mongo_db).list() == []


def test_invalid_template_keeps_what_was_typed(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = page(mongo_db, monkeypatch, FakeBus())
    save_template(app, "Bad channel", netStaChan="42")
    assert "must be 1..14" in app.error[0].value
    assert app.text_input(key="template_new_0_net_netStaChan").value == "42"
    assert TemplateStore(mongo_db).list() == []


def test_template_confirmation_shows_the_change_masked(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    TemplateStore(mongo_db).save("wifi", "net", {"netStaPwd": "s3cret-wifi"}, actor="tina")
    bus = FakeBus(heard={R1, R2})
    app = page(mongo_db, monkeypatch, bus)
    app.radio[0].set_value("Board by board").run()
    app.multiselect[0].set_value([R1, R2]).run()
    next(b for b in app.button if b.label == "Review the batch").click().run()
    shown = " ".join(m.value for m in app.markdown) + " ".join(c.value for c in app.caption)
    assert escape_markdown("set net: netStaPwd=••••••") in shown  # shown literally
    assert "from template wifi" in shown
    assert "s3cret" not in shown
    assert bus.sent == []
    next(b for b in app.button if b.label == "Cancel").click().run()
    assert [b for b in app.button if b.label == "Review the batch"]
