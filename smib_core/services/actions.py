"""The one guarded gateway through which the app and the CLI act on boards.

Contract: `BoardActions.send_command` and `.request` check, in this order, that the
principal's role allows the command's kind (`COMMAND_PERMISSIONS`), that the relay ids
and the command itself are valid (the command is rebuilt from its payload with the
protocol's builders, so a forged payload cannot pass as a milder kind), then write the
audit record (masked), publish, and set the record's outcome from what happened. A
refusal or invalid input is audited as `refused` and nothing is published.

No record stays `sent`: `request` settles its own (the reply judged, timed_out,
failed); after `send_command` (a board sends no reply to a write, `rst`, `ota_ud` or
`met_reset`) the caller settles it with `settle` once it has read back or given up, and
`services.audit_sweeper.AuditSweeper` settles what a process that died left open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from smib_core import protocol
from smib_core.auth import Permission, Principal, Role, require
from smib_core.errors import BusError, InvalidInput, PermissionDenied, RequestTimeout, SmibError
from smib_core.protocol import Command, ConfigReply, DeviceMessage, MeterReply, NvsReply
from smib_core.store.audit import AuditTrail, os_actor

log = logging.getLogger(__name__)


class CommandBus(Protocol):
    """What BoardActions needs of `smib_core.bus.DeviceBus`."""

    def send(self, relay: str, command: Command) -> object: ...

    def request(self, relay: str, command: Command, timeout: float = ...) -> DeviceMessage: ...


# What each command kind (protocol.COMMAND_KINDS) requires of the principal's role.
COMMAND_PERMISSIONS: dict[str, Permission] = {
    "config_read": Permission.VIEW_FLEET,
    "meters": Permission.VIEW_FLEET,
    "config_write": Permission.CONFIGURE_BOARD,
    "ota_url": Permission.CONFIGURE_BOARD,
    "restart": Permission.RESTART_BOARD,
    "meter_reset": Permission.NVS_CLEAR,
    "ota_start": Permission.OTA,
    **{kind: Permission.NVS_CLEAR for kind in protocol.COMMAND_KINDS if kind.startswith("nvs_")},
}


def permission_for(kind: str) -> Permission:
    try:
        return COMMAND_PERMISSIONS[kind]
    except KeyError:
        raise InvalidInput(f"unknown command kind {kind!r}") from None


def cli_principal() -> Principal:
    """The CLI acts with the host's credentials, as `cli:<os user>` in the audit trail."""
    return Principal(os_actor(), Role.ADMIN, "cli")


_SIMPLE: dict[str, Callable[[], Command]] = {
    "restart": protocol.restart,
    "meters": protocol.read_meters,
    "meter_reset": protocol.meter_reset,
}


def _rebuild(command: Command) -> Command:
    payload = dict(command.payload)
    kind = command.kind
    if kind in _SIMPLE:
        return _SIMPLE[kind]()
    if kind == "config_read":
        return protocol.config_read(payload.get("comp", ""))
    if kind == "config_write":
        fields = {k: v for k, v in payload.items() if k not in ("typ", "comp")}
        return protocol.config_write(payload.get("comp", ""), fields)
    if kind == "ota_url":
        return protocol.set_ota_url(payload.get("otaURL", ""))
    if kind == "ota_start":
        return protocol.ota_start(payload.get("bin", ""))
    if kind.startswith("nvs_clear_"):
        return protocol.nvs_clear(kind.removeprefix("nvs_clear_"))
    raise InvalidInput(f"unknown command kind {kind!r}")


def check_command(command: Command) -> Command:
    """The command when its payload is exactly what the protocol builds for its kind."""
    rebuilt = _rebuild(command)
    same = (dict(rebuilt.payload), rebuilt.reply_typ, rebuilt.reply_comp) == (
        dict(command.payload),
        command.reply_typ,
        command.reply_comp,
    )
    if not same:
        raise InvalidInput(f"this '{command.kind}' command's payload does not match its kind")
    return command


def _relays(relays: Sequence[str]) -> list[str]:
    if isinstance(relays, str):
        relays = [relays]
    checked = list(dict.fromkeys(protocol.normalize_relay_id(r) for r in relays))
    if not checked:
        raise InvalidInput("choose at least one board")
    return checked


@dataclass(frozen=True, slots=True)
class SendResult:
    """How a send ended: which boards got the command and why the others did not."""

    audit_id: str
    sent: tuple[str, ...]
    failed: Mapping[str, str] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return "failed" if self.failed else "sent"


class BoardActions:
    """Acts on boards for one principal; every call is checked and audited."""

    def __init__(
        self,
        bus: CommandBus,
        audit: AuditTrail,
        principal: Principal | None,
        *,
        recheck: Callable[[Principal], Principal | None] | None = None,
    ) -> None:
        """`recheck` (for a person's session: `store.accounts.refreshed_principal`) is
        asked before every action for the principal as the database knows it now; None
        there (account disabled, identity unmapped) refuses the action."""
        self._bus = bus
        self._audit = audit
        self.principal = principal
        self._recheck = recheck

    @property
    def actor(self) -> str:
        return self.principal.name if self.principal is not None else "anonymous"

    def send_command(
        self,
        relays: Sequence[str],
        command: Command,
        context: Mapping[str, Any] | None = None,
    ) -> SendResult:
        """Publish to each board. Raises BusError when no board got it; a partial send
        returns a result whose `failed` names the boards that did not. `context` is kept
        (masked) in the audit record beside the command, e.g. a config change's before
        and after values."""
        targets = self._admit(relays, command)
        detail = {**(context or {}), "command": command.masked()}
        audit_id = self._audit.record(self.actor, command.kind, targets, detail, "sent")
        sent: list[str] = []
        failed: dict[str, str] = {}
        for relay in targets:
            try:
                self._bus.send(relay, command)
                sent.append(relay)
            except SmibError as exc:
                failed[relay] = str(exc)
        if failed:
            self._audit.update_outcome(audit_id, "failed", {"failed": failed, "sent": sent})
            log.warning(
                "%s by %s: not sent to %d of %d boards",
                command.kind,
                self.actor,
                len(failed),
                len(targets),
            )
        if not sent:
            raise BusError(next(iter(failed.values())))
        return SendResult(audit_id, tuple(sent), failed)

    def request(self, relay: str, command: Command, timeout: float = 5.0) -> DeviceMessage:
        """Publish to one board and return its reply; the audit outcome says whether the
        reply confirmed the command. RequestTimeout and BusError are audited and raised."""
        target = self._admit([relay], command)
        if command.reply_typ is None:
            raise InvalidInput(f"a board does not answer '{command.kind}': send it instead")
        audit_id = self._audit.record(
            self.actor, command.kind, target, {"command": command.masked()}, "sent"
        )
        try:
            reply = self._bus.request(target[0], command, timeout)
        except RequestTimeout as exc:
            self._audit.update_outcome(audit_id, "timed_out", {"error": str(exc)})
            raise
        except Exception as exc:
            self._audit.update_outcome(audit_id, "failed", {"error": str(exc)[:500]})
            raise
        outcome, extra = judge_reply(command, reply)
        self._audit.update_outcome(audit_id, outcome, extra)
        return reply

    def settle(self, audit_id: str, outcome: str, extra: Mapping[str, Any] | None = None) -> None:
        """Record how a sent command ended once it is known (e.g. a config write that a
        read-back confirmed); `extra` is stored masked."""
        self._audit.update_outcome(audit_id, outcome, extra)

    def _admit(self, relays: Sequence[str], command: Command) -> list[str]:
        """Permission, then validity; a refusal is audited and raised."""
        given = [str(r)[:32] for r in ([relays] if isinstance(relays, str) else relays)]
        try:
            require(self._current(), permission_for(command.kind))
            targets = _relays(relays)
            check_command(command)
        except (PermissionDenied, InvalidInput) as exc:
            detail = {"command": command.masked(), "reason": str(exc)}
            self._audit.record(self.actor, command.kind, given, detail, "refused")
            log.warning("%s by %s refused: %s", command.kind, self.actor, exc)
            raise
        return targets

    def _current(self) -> Principal | None:
        if self._recheck is None or self.principal is None:
            return self.principal
        current = self._recheck(self.principal)
        if current is None:
            raise PermissionDenied(
                "This account was disabled or its role removed: sign in again or ask an "
                "administrator."
            )
        return current


def compared_fields(command: Command) -> dict[str, Any]:
    """What reading a config write back compares: the written fields, secrets left out."""
    secrets = protocol.secret_fields()
    return {
        k: v for k, v in command.payload.items() if k not in ("typ", "comp") and k not in secrets
    }


def judge_reply(command: Command, reply: DeviceMessage) -> tuple[str, dict[str, Any]]:
    """The audit outcome a reply gives its command, with details worth keeping."""
    if isinstance(reply, MeterReply) and reply.failure is not None:
        return "failed", {"failure": reply.failure, "check": reply.failure_check}
    if isinstance(reply, NvsReply) and not reply.ok:
        return "not_confirmed", {"reply": reply.pyd[:64]}
    if isinstance(reply, ConfigReply) and command.kind in ("config_write", "ota_url"):
        written = compared_fields(command)
        differ = sorted(
            k for k, v in written.items() if k not in reply.fields or str(reply.fields[k]) != str(v)
        )
        if differ:
            return "not_confirmed", {"differ": differ}
    return "confirmed", {}
