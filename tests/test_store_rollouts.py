"""The rollout store on the embedded database: the plan, controls, board progress, downloads."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from smib_core.auth import Principal, Role
from smib_core.errors import InvalidInput, PermissionDenied
from smib_core.firmware.server import DownloadRecord
from smib_core.store.audit import AuditTrail
from smib_core.store.downloads import DownloadLog
from smib_core.store.firmware import FirmwareInfo, FirmwareLibrary
from smib_core.store.rollouts import RolloutStore

pytestmark = pytest.mark.integration

TECH = Principal("tina", Role.TECHNICIAN)
RELAYS = [f"e831cd00000{i}" for i in range(7)]
A, B = RELAYS[:2]


@pytest.fixture
def firmware(mongo_db: Any) -> FirmwareInfo:
    return FirmwareLibrary(mongo_db).add(
        b"\xe9" * 64, filename="a.bin", product="cloudy", version="v2.0.0", actor="test"
    )


def create(db: Any, firmware: FirmwareInfo, **kw: Any) -> Any:
    relays = kw.pop("relays", RELAYS)
    args: dict[str, Any] = {
        "batch_size": 3,
        "min_success_pct": 80,
        "timeout_s": 60,
        "principal": TECH,
        **kw,
    }
    return RolloutStore(db).create(firmware, relays, **args)


def test_create_plans_batches_and_audits(mongo_db: Any, firmware: FirmwareInfo) -> None:
    store = RolloutStore(mongo_db)
    rollout = create(mongo_db, firmware, relays=[*RELAYS, RELAYS[0].upper()])
    assert rollout.state == "pending" and rollout.batches == 3
    assert rollout.relays == tuple(RELAYS), "ids normalised, duplicates dropped, order kept"
    assert (rollout.version, rollout.filename) == ("v2.0.0", firmware.filename)
    assert rollout.principal == TECH
    again = store.get(rollout.id)
    assert again == rollout
    assert isinstance(again.created_at, float) and abs(again.created_at - time.time()) < 5
    boards = store.boards(rollout.id)
    assert [(b.relay, b.batch, b.state) for b in boards] == [
        (r, i // 3, "queued") for i, r in enumerate(RELAYS)
    ]
    audit = AuditTrail(mongo_db).query(kind="rollout_start")
    assert audit["actor"].tolist() == ["tina"] and audit["outcome"].tolist() == ["ok"]
    assert store.recent()[0].id == rollout.id


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"relays": []}, "at least one board"),
        ({"relays": ["not-a-relay"]}, "relay"),
        ({"batch_size": 0}, "batch size"),
        ({"min_success_pct": 101}, "minimum success"),
        ({"timeout_s": "soon"}, "timeout"),
    ],
)
def test_bad_plans_are_refused(
    mongo_db: Any, firmware: FirmwareInfo, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        create(mongo_db, firmware, **change)
    assert RolloutStore(mongo_db).recent() == []


def test_archived_firmware_and_roles_without_ota_are_refused(
    mongo_db: Any, firmware: FirmwareInfo
) -> None:
    with pytest.raises(PermissionDenied):
        create(mongo_db, firmware, principal=Principal("mia", Role.MANAGER))
    refused = AuditTrail(mongo_db).query(kind="rollout_start")
    assert refused["outcome"].tolist() == ["refused"] and refused["actor"].tolist() == ["mia"]
    archived = FirmwareLibrary(mongo_db).archive(firmware.id)
    with pytest.raises(InvalidInput, match="archived"):
        create(mongo_db, archived)
    assert RolloutStore(mongo_db).recent() == []


def test_pause_resume_cancel(mongo_db: Any, firmware: FirmwareInfo) -> None:
    store = RolloutStore(mongo_db)
    rollout = create(mongo_db, firmware)
    assert store.pause(rollout.id, TECH).state == "paused"
    with pytest.raises(InvalidInput, match="cannot be paused"):
        store.pause(rollout.id, TECH)
    with pytest.raises(PermissionDenied):
        store.resume(rollout.id, Principal("ann", Role.ANALYST))
    assert store.resume(rollout.id, TECH).state == "running"
    first = store.boards(rollout.id)[0]
    store.update_board(first, "command_sent", command_at=time.time())
    cancelled = store.cancel(rollout.id, TECH)
    assert cancelled.state == "cancelled" and cancelled.finished_at is not None
    assert cancelled.reason == "cancelled by tina"
    states = [b.state for b in store.boards(rollout.id)]
    assert states == ["command_sent"] + ["not_started"] * 6
    assert store.boards(rollout.id)[1].reason == "the rollout was cancelled by tina"
    assert [r.id for r in store.to_drive()] == [rollout.id], "its updating board is followed"
    with pytest.raises(InvalidInput):
        store.resume(rollout.id, TECH)
    with pytest.raises(InvalidInput, match="no rollout"):
        store.pause("nope", TECH)
    kinds = AuditTrail(mongo_db).query(person="tina")["kind"].tolist()
    assert kinds[:3] == ["rollout_cancel", "rollout_resume", "rollout_pause"]


def test_board_progress_keeps_a_time_per_state(mongo_db: Any, firmware: FirmwareInfo) -> None:
    store = RolloutStore(mongo_db)
    rollout = create(mongo_db, firmware)
    board = store.boards(rollout.id)[0]
    board = store.update_board(board, "url_set", "", previous_version="v1.4.2")
    board = store.update_board(board, "failed", "device kept version v1.4.2")
    stored = store.boards(rollout.id)[0]
    assert stored.times == pytest.approx(board.times, abs=1e-3)
    assert stored.state == "failed" and stored.previous_version == "v1.4.2"
    assert stored.times["queued"] <= stored.times["url_set"] <= stored.times["failed"]
    with pytest.raises(InvalidInput):
        store.update_board(board, "exploded")
    assert store.set_state(rollout.id, ("pending",), "running")
    assert not store.set_state(rollout.id, ("pending",), "running"), "only from the given states"


def test_download_log(mongo_db: Any) -> None:
    log = DownloadLog(mongo_db)
    before = time.time()
    for name, complete, relay in (
        ("a.bin", True, "e831cd000001"),
        ("b.bin", True, None),
        ("a.bin", False, None),
    ):
        at = datetime.now(UTC)
        log.record(DownloadRecord(at, "10.0.0.9", name, 200, 5, 10, complete, relay))
    found = log.since("a.bin", before)
    assert [(d.name, d.client, d.complete, d.relay) for d in found] == [
        ("a.bin", "10.0.0.9", True, "e831cd000001"),
        ("a.bin", "10.0.0.9", False, None),
    ]
    assert found[0].at <= found[1].at
    assert DownloadLog(mongo_db).since("a.bin", time.time() + 1) == []


def test_ota_tokens_are_per_board_secret_and_valid_only_while_updating(
    mongo_db: Any, firmware: FirmwareInfo
) -> None:
    rollout = create(mongo_db, firmware, relays=[A, B])
    store = RolloutStore(mongo_db)
    a, b = store.boards(rollout.id)
    a, token_a = store.ota_token(a)
    assert store.ota_token(a)[1] == token_a  # made once, kept
    _, token_b = store.ota_token(b)
    assert len(token_a) == 32 and token_a != token_b
    assert store.ota_token_ok(A, token_a) and store.ota_token_ok(B, token_b)
    assert not store.ota_token_ok(A, token_b)  # another board's token
    assert not store.ota_token_ok(A, "") and not store.ota_token_ok(A, token_a[:-1])
    store.update_board(a, "failed", "done")
    assert not store.ota_token_ok(A, token_a)  # its update is over


def test_ota_start_records_settle_with_the_boards_outcome(
    mongo_db: Any, firmware: FirmwareInfo
) -> None:
    rollout = create(mongo_db, firmware, relays=[A, B])
    store, audit = RolloutStore(mongo_db), AuditTrail(mongo_db)
    ids = [audit.record("tina", "ota_start", [r], {"bin": "x.bin"}, "sent") for r in (A, B)]
    a, b = store.boards(rollout.id)
    a = store.update_board(a, "command_sent", command_at=time.time(), ota_audit_id=ids[0])
    b = store.update_board(b, "command_sent", command_at=time.time(), ota_audit_id=ids[1])
    store.update_board(store.update_board(a, "downloaded"), "confirmed", "")
    store.update_board(b, "not_started", "the rollout was cancelled")
    outcomes = {r: audit.query(relay=r, kind="ota_start")["outcome"].iloc[0] for r in (A, B)}
    assert outcomes == {A: "confirmed", B: "cancelled"}
