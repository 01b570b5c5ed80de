"""One root exception, a few meaningful kinds.

`InvalidInput` is misuse by our own side (a user typed a bad relay id or value): nothing
is published. `FrameError` is bad bytes from a peer (a board or a slot machine). The
message of every error is a sentence a user can read; secrets never appear in it.
"""

from __future__ import annotations


class SmibError(Exception):
    """Root of every error SMIB Console raises on purpose."""


class InvalidInput(SmibError, ValueError):
    """A value from a user or caller is not acceptable; nothing was sent."""


class FrameError(SmibError):
    """A SAS frame from a machine failed a check.

    `check` names the failed check: one of crc, length, size, bcd, hex, command.
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


class DeviceError(SmibError):
    """The board answered `"-1"`: it could not read the machine."""

    check = "device_error"

    def __init__(self, message: str = "the board could not read the machine (-1)") -> None:
        super().__init__(message)


class BusError(SmibError):
    """The MQTT link is not usable (not connected, publish refused)."""


class RequestTimeout(BusError):
    """A board did not answer a request in time."""


class StoreError(SmibError):
    """The database refused or could not be reached."""


class PermissionDenied(SmibError):
    """The signed-in person's role does not allow this action."""
