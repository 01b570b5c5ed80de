"""What a technician does to one board besides configuring it: restart, clear its stored
data (NVS), reset the meters of a non-SAS board.

Each goes through the guarded gateway (`BoardActions`: role checked, audited). A page
asks for confirmation first; what each clear erases is written here once, so every
dialog says the same. A restart is confirmed by `restart_and_confirm`: `rst` (which a
board does not answer), then `readback.await_back` until the board answers a question
again; the restart's audit record is settled with that outcome. The seed's 15-second
countdown (`countdown`) is what the page shows meanwhile. No streamlit here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smib_core import protocol, sas
from smib_core.errors import InvalidInput, RequestTimeout
from smib_core.protocol import NvsReply
from smib_core.services.actions import BoardActions, SendResult
from smib_core.services.readback import ReadBack, ReadBackTimings, await_back

RESTART_COUNTDOWN_S = 15.0
RESTART_TIMEOUT_S = 60.0  # a board not back after this long is reported timed out

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


@dataclass(frozen=True, slots=True)
class RestartOutcome:
    relay: str
    audit_id: str
    back: ReadBack

    @property
    def ok(self) -> bool:
        return self.back.confirmed

    @property
    def message(self) -> str:
        if self.ok:
            return f"Restart done: board {self.relay} is back and answering."
        return f"Restart sent, but board {self.relay} is not back: {self.back.reason}."


def restart_and_confirm(
    actions: BoardActions,
    relay: str,
    timeout: float = RESTART_TIMEOUT_S,
    timings: ReadBackTimings | None = None,
) -> RestartOutcome:
    """`rst`, then wait until the board answers again; the audit record says which.
    Raises BusError (audited as failed) when the command could not be sent."""
    relay = protocol.normalize_relay_id(relay)
    sent_at = time.time()
    sent = restart(actions, relay)
    return confirm_restart(actions, relay, sent, sent_at, timeout, timings)


def confirm_restart(
    actions: BoardActions,
    relay: str,
    sent: SendResult,
    sent_at: float,
    timeout: float = RESTART_TIMEOUT_S,
    timings: ReadBackTimings | None = None,
) -> RestartOutcome:
    """The second half of `restart_and_confirm`, for a page that sends `rst` itself (so a
    refusal shows at once) and follows the board on a thread."""
    back = await_back(actions, relay, sent_at, timeout, timings)
    settle_restart(actions, sent, back)
    return RestartOutcome(relay, sent.audit_id, back)


def settle_restart(actions: BoardActions, sent: SendResult, back: ReadBack) -> None:
    """The restart's audit record takes the read-back's outcome (confirmed / timed_out)."""
    detail = {"detail": back.reason or f"answered cfg app ({back.answers} answer(s))"}
    actions.settle(sent.audit_id, back.outcome, detail)


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
