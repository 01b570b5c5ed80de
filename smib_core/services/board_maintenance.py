"""What a technician does to one board besides configuring it: restart, clear its stored
data (NVS), reset the meters of a non-SAS board.

Each goes through the guarded gateway (`BoardActions`: role checked, audited). A page
asks for confirmation first; what each clear erases is written here once, so every
dialog says the same. The seed shows a 15-second countdown after a restart, then
refreshes the board's data: `countdown` is that clock. No streamlit here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from smib_core import protocol, sas
from smib_core.errors import BusError, InvalidInput, RequestTimeout
from smib_core.protocol import NvsReply
from smib_core.services.actions import BoardActions, SendResult

RESTART_COUNTDOWN_S = 15.0

NVS_CLEARS: dict[sas.NvsClear, tuple[str, str]] = {
    sas.NvsClear.ALL: (
        "All stored SAS data",
        "all the SAS data the board keeps in its non-volatile storage (NVS): its stored "
        "meters, bill validator records and door records. The board then reports the "
        "machine's meters as reset (event 7A).",
    ),
    sas.NvsClear.METERS: (
        "Stored meters",
        "the meters the board keeps in its non-volatile storage. The board then reports "
        "the machine's meters as reset (event 7A); meter history in the console stays.",
    ),
    sas.NvsClear.BILL_VALIDATOR: (
        "Bill validator records",
        "the bill validator records the board keeps in its non-volatile storage.",
    ),
    sas.NvsClear.DOOR: (
        "Door records",
        "the door open/close records the board keeps in its non-volatile storage.",
    ),
}


def restart(actions: BoardActions, relay: str) -> SendResult:
    """Send `rst`: the board drops off MQTT and comes back some seconds later."""
    return actions.send_command([relay], protocol.restart())


def confirm_restart(
    actions: BoardActions,
    relay: str,
    sent: SendResult,
    sent_at: float,
    timeout_s: float = 60.0,
    grace_s: float = 2.0,
    read_timeout_s: float = 2.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Whether the board is back after the `rst` of `sent` (sent at `sent_at`): it must
    answer a `cfg app` read asked after send time + `grace_s` (boards announce nothing
    after a reboot), asked until `timeout_s` after the send. The restart's audit record
    settles: confirmed, or timed_out."""
    sleep(max(0.0, sent_at + grace_s - clock()))
    while True:
        try:
            actions.request(relay, protocol.config_read("app"), read_timeout_s)
        except (RequestTimeout, BusError):
            if clock() >= sent_at + timeout_s:
                break
            sleep(min(1.0, read_timeout_s))
            continue
        back = f"answered cfg app {clock() - sent_at:.1f} s after the rst"
        actions.settle(sent.audit_id, "confirmed", {"detail": back})
        return True
    why = f"did not answer cfg app within {timeout_s:g} s of the rst"
    actions.settle(sent.audit_id, "timed_out", {"detail": why})
    return False


def countdown(started_at: float, now: float, total_s: float = RESTART_COUNTDOWN_S) -> float:
    """Seconds left of the countdown after a restart (0 when it is over)."""
    return max(0.0, min(total_s, started_at + total_s - now))


@dataclass(frozen=True, slots=True)
class NvsOutcome:
    ok: bool
    message: str


def clear_nvs(
    actions: BoardActions, relay: str, kind: sas.NvsClear | str, timeout: float = 5.0
) -> NvsOutcome:
    """Send one NVS clear and wait for the board's answer (E10101 done, E10100 failed)."""
    command = protocol.nvs_clear(kind)
    what = NVS_CLEARS[sas.NvsClear(kind)][0].lower()
    try:
        reply = actions.request(relay, command, timeout)
    except RequestTimeout as exc:
        return NvsOutcome(False, f"Clearing {what} was sent but not confirmed: {exc}.")
    if isinstance(reply, NvsReply) and reply.ok:
        return NvsOutcome(True, f"The board cleared its {what}.")
    return NvsOutcome(False, f"The board answered that clearing {what} failed.")


def coms_mode(latest: Mapping[str, tuple[Mapping[str, Any], float]]) -> int | None:
    """The board's comms mode from its latest `coms` reply; None when not heard."""
    fields = latest.get("coms", ({}, 0.0))[0]
    mode = fields.get("comsMode")
    try:
        return int(mode) if mode is not None and not isinstance(mode, bool) else None
    except (TypeError, ValueError):
        return None


def meter_reset_refusal(mode: int | None) -> str | None:
    """Why a meter reset is not offered for this comms mode; None when it is allowed."""
    if mode is None:
        return "The board has not reported its comms mode yet: refresh its configuration."
    if mode == 0:
        return (
            "This is a SAS board (comms mode 0): its meters are the machine's own and "
            "cannot be reset from the board."
        )
    return None


def reset_meters(
    actions: BoardActions,
    relay: str,
    latest: Mapping[str, tuple[Mapping[str, Any], float]],
) -> SendResult:
    """Send `met_reset` to a non-SAS board; InvalidInput (nothing sent) on a SAS board or
    one whose comms mode is unknown. `latest` is the bus's `latest_config(relay)`."""
    refusal = meter_reset_refusal(coms_mode(latest))
    if refusal is not None:
        raise InvalidInput(refusal)
    sent = actions.send_command([relay], protocol.meter_reset())
    actions.settle(sent.audit_id, "not_confirmed", {"detail": MET_RESET_UNCONFIRMED})
    return sent


MET_RESET_UNCONFIRMED = (
    "sent; a board sends no reply to met_reset: its next meter reading shows the reset"
)
