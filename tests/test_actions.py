"""The guarded gateway to the boards: role checks, validation, audit, then publish."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from smib_core import protocol
from smib_core.auth import Principal, Role
from smib_core.errors import BusError, InvalidInput, PermissionDenied, RequestTimeout
from smib_core.protocol import Command, ConfigReply, DeviceMessage, NvsReply
from smib_core.services.actions import (
    COMMAND_PERMISSIONS,
    BoardActions,
    check_command,
    cli_principal,
    judge_reply,
)
from smib_core.store.audit import AuditTrail

R1, R2 = "e831cdfa8384", "a0b1c2d3e4f5"
TECH = Principal("tom", Role.TECHNICIAN)
ANALYST = Principal("ann", Role.ANALYST)
MANAGER = Principal("max", Role.MANAGER)


@dataclass
class FakeBus:
    """Records every publish; answers requests with `reply` or raises `error`."""

    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    reply: DeviceMessage | None = None
    error: Exception | None = None
    offline: set[str] = field(default_factory=set)

    def send(self, relay: str, command: Command) -> None:
        if relay in self.offline:
            raise BusError(f"not connected: not sent to board {relay}")
        self.published.append((relay, dict(command.payload)))

    def request(self, relay: str, command: Command, timeout: float = 5.0) -> DeviceMessage:
        self.send(relay, command)
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


def test_every_command_kind_has_a_permission() -> None:
    assert set(COMMAND_PERMISSIONS) == set(protocol.COMMAND_KINDS)


def test_check_command_accepts_what_the_protocol_builds() -> None:
    for command in (
        protocol.restart(),
        protocol.read_meters(),
        protocol.config_read("net"),
        protocol.config_write("coms", {"comsAddr": 3}),
        protocol.ota_start("a.bin"),
        protocol.set_ota_url("http://fw:8808/"),
        protocol.nvs_clear("all"),
        protocol.meter_reset(),
    ):
        assert check_command(command) is command


@pytest.mark.parametrize(
    "forged",
    [
        Command("config_read", {"typ": "rst"}, "cfg", "net"),  # a restart posing as a read
        Command("meters", {"typ": "ota_ud", "bin": "x.bin"}, "rsp"),
        Command("config_write", {"typ": "cfg", "comp": "coms", "comsAddr": 999}, "cfg", "coms"),
        Command("launch", {"typ": "rst"}),
    ],
)
def test_check_command_refuses_forged_payloads(forged: Command) -> None:
    with pytest.raises(InvalidInput):
        check_command(forged)


@pytest.mark.integration
def test_analysts_forged_restart_is_refused_audited_and_not_published(mongo_db: Any) -> None:
    bus, audit = FakeBus(), AuditTrail(mongo_db)
    with pytest.raises(PermissionDenied, match="analyst role does not allow you to restart"):
        BoardActions(bus, audit, ANALYST).send_command([R1, R2], protocol.restart())
    with pytest.raises(PermissionDenied):
        BoardActions(bus, audit, None).send_command([R1], protocol.restart())
    assert bus.published == []
    rows = audit.query()
    assert list(rows["actor"]) == ["anonymous", "ann"]
    assert set(rows["outcome"]) == {"refused"} and set(rows["kind"]) == {"restart"}
    assert rows.iloc[1]["relays"] == f"{R1}, {R2}"


@pytest.mark.integration
def test_a_manager_may_read_but_not_configure(mongo_db: Any) -> None:
    bus, audit = FakeBus(), AuditTrail(mongo_db)
    actions = BoardActions(bus, audit, MANAGER)
    write = protocol.config_write("net", {"netStaPwd": "wifi-secret-1"})
    with pytest.raises(PermissionDenied):
        actions.request(R1, write)
    bus.reply = ConfigReply(R1, "cfg", "smib/config", component="net", fields={"netMode": 1})
    assert actions.request(R1, protocol.config_read("net")) is bus.reply
    assert [relay for relay, _ in bus.published] == [R1]
    rows = audit.query()
    assert list(zip(rows["kind"], rows["outcome"], strict=True)) == [
        ("config_read", "confirmed"),
        ("config_write", "refused"),
    ]
    assert "wifi-secret-1" not in repr(list(mongo_db["audit"].find({})))


@pytest.mark.integration
def test_a_technicians_restart_is_sent_and_audited(mongo_db: Any) -> None:
    bus, audit = FakeBus(), AuditTrail(mongo_db)
    result = BoardActions(bus, audit, TECH).send_command([R1, R2.upper(), R1], protocol.restart())
    assert bus.published == [(R1, {"typ": "rst"}), (R2, {"typ": "rst"})]
    assert result.sent == (R1, R2) and result.outcome == "sent"
    row = audit.query().iloc[0]
    assert (row["actor"], row["kind"], row["relays"], row["outcome"], row["id"]) == (
        "tom",
        "restart",
        f"{R1}, {R2}",
        "sent",
        result.audit_id,
    )


@pytest.mark.integration
def test_invalid_relays_are_refused_before_anything_is_published(mongo_db: Any) -> None:
    bus, audit = FakeBus(), AuditTrail(mongo_db)
    actions = BoardActions(bus, audit, TECH)
    with pytest.raises(InvalidInput):
        actions.send_command([R1, "not-a-relay"], protocol.restart())
    with pytest.raises(InvalidInput, match="at least one board"):
        actions.send_command([], protocol.restart())
    assert bus.published == []
    assert set(audit.query()["outcome"]) == {"refused"}


@pytest.mark.integration
def test_partial_and_total_send_failures(mongo_db: Any) -> None:
    bus, audit = FakeBus(offline={R2}), AuditTrail(mongo_db)
    actions = BoardActions(bus, audit, TECH)
    result = actions.send_command([R1, R2], protocol.restart())
    assert result.sent == (R1,) and list(result.failed) == [R2] and result.outcome == "failed"
    with pytest.raises(BusError):
        actions.send_command([R2], protocol.restart())
    assert list(audit.query()["outcome"]) == ["failed", "failed"]


@pytest.mark.integration
def test_request_outcomes_timeout_and_nvs_not_confirmed(mongo_db: Any) -> None:
    bus, audit = FakeBus(), AuditTrail(mongo_db)
    actions = BoardActions(bus, audit, TECH)
    bus.error = RequestTimeout(f"board {R1} did not answer")
    with pytest.raises(RequestTimeout):
        actions.request(R1, protocol.config_read("coms"), timeout=0.1)
    bus.error = None
    bus.reply = NvsReply(R1, "srsp", "sas/gy/server", pyd="FF")
    actions.request(R1, protocol.nvs_clear("all"))
    with pytest.raises(InvalidInput, match="send it instead"):
        actions.request(R1, protocol.restart())
    rows = audit.query()
    assert list(zip(rows["kind"], rows["outcome"], strict=True)) == [
        ("nvs_clear_all", "not_confirmed"),
        ("config_read", "timed_out"),
    ]
    assert "did not answer" in rows.iloc[1]["result"]


def test_judge_reply_compares_written_fields() -> None:
    write = protocol.config_write("coms", {"comsAddr": 3, "comsRateMs": 200})
    same = ConfigReply(R1, "cfg", "t", component="coms", fields={"comsAddr": 3, "comsRateMs": 200})
    other = ConfigReply(R1, "cfg", "t", component="coms", fields={"comsAddr": 4, "comsRateMs": 200})
    assert judge_reply(write, same) == ("confirmed", {})
    assert judge_reply(write, other) == ("not_confirmed", {"differ": ["comsAddr"]})
    wifi = protocol.config_write("net", {"netStaPwd": "secret-password"})
    assert judge_reply(wifi, ConfigReply(R1, "cfg", "t", component="net"))[0] == "confirmed"


def test_cli_principal_is_the_os_user() -> None:
    principal = cli_principal()
    assert principal.name.startswith("cli:") and principal.source == "cli"
