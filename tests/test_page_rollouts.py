"""The Rollouts page (AppTest, embedded database, a fake bus): empty state, a rollout's
detail and its controls, the role check."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from smib_core.auth import Principal, Role
from smib_core.settings import Settings
from smib_core.store.audit import AuditTrail
from smib_core.store.firmware import FirmwareLibrary
from smib_core.store.registry import Registry
from smib_core.store.rollouts import RolloutStore
from smib_core.ui import resources
from tests.servers import free_port

pytestmark = pytest.mark.integration

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "rollouts.py")
TECH = Principal("tina", Role.TECHNICIAN)
RELAYS = ["e831cd000001", "e831cd000002", "e831cd000003"]


class FakeBus:
    def relays_seen(self) -> dict[str, float]:
        return {}

    def firmware(self, relay: str) -> tuple[str, str] | None:
        return None

    def last_seen(self, relay: str) -> float | None:
        return None

    def latest_config(self, relay: str) -> dict[str, tuple[Mapping[str, Any], float]]:
        return {}


def page(mongo_db: Any, monkeypatch: pytest.MonkeyPatch, who: Principal) -> AppTest:
    monkeypatch.setattr(resources, "get_db", lambda: mongo_db)
    monkeypatch.setattr(resources, "get_audit", lambda: AuditTrail(mongo_db))
    monkeypatch.setattr(resources, "get_registry", lambda: Registry(mongo_db))
    monkeypatch.setattr(resources, "get_bus", FakeBus)
    monkeypatch.setattr(resources, "get_settings", lambda: Settings(firmware_port=free_port()))
    # The page runs alone, without app.py's gate: its principal stands as given.
    monkeypatch.setattr(resources, "account_check", lambda: lambda p: p)
    app = AppTest.from_file(PAGE, default_timeout=20)
    app.session_state["principal"] = who
    return app.run()


def test_empty_library_and_no_rollout(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = page(mongo_db, monkeypatch, TECH)
    assert not app.exception
    infos = " ".join(i.value for i in app.info)
    assert "The firmware library is empty" in infos and "No rollout yet" in infos
    warnings = " ".join(w.value for w in app.warning)
    assert "No firmware server answers" in warnings and "No rollout runner is alive" in warnings


def test_a_rollout_shows_batches_and_boards_and_can_be_paused(
    mongo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    firmware = FirmwareLibrary(mongo_db).add(
        b"\xe9" * 64, filename="a.bin", product="cloudy", version="v2.0.0", actor="test"
    )
    store = RolloutStore(mongo_db)
    rollout = store.create(
        firmware, RELAYS, batch_size=2, min_success_pct=80, timeout_s=60, principal=TECH
    )
    first = store.boards(rollout.id)[0]
    store.update_board(first, "confirmed", "", previous_version="v1.4.2", version="v2.0.0")
    app = page(mongo_db, monkeypatch, TECH)
    assert not app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Confirmed"] == "1" and metrics["Waiting"] == "2"
    bars = [p.proto.text for p in app.get("progress")]
    assert bars == [
        "Batch 1 · 1 of 2 confirmed · updating",
        "Batch 2 · 0 of 1 confirmed · waiting",
    ]
    boards = app.dataframe[1].value
    assert boards["relay"].tolist() == RELAYS
    assert boards["state"].tolist() == ["confirmed", "queued", "queued"]
    next(b for b in app.button if b.label == "Pause").click().run()
    assert not app.exception
    assert store.get(rollout.id).state == "paused"
    assert "Rollout paused" in app.success[0].value
    assert any(b.label == "Resume" for b in app.button)


def test_a_role_without_ota_sees_nothing(mongo_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = page(mongo_db, monkeypatch, Principal("mia", Role.MANAGER))
    assert "does not allow" in app.error[0].value
    assert not app.dataframe and not app.button
