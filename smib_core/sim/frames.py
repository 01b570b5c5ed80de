"""What a simulated board reads and writes on the wire: pure, stdlib only, no I/O.

Contract: `parse_meter_request` turns the `pyd` of a meter command into a
`MeterRequest`, or None when a machine would ignore the poll (bad hex, CRC, length,
command or BCD); `encode` is the one JSON encoding of a device message; `malformed`
spoils a message the ways PROTOCOL.md says the server must survive; `EPISODES` are
the SAS exception sequences a machine emits (door opened ... door closed).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smib_core import sas
from smib_core.errors import FrameError


@dataclass(frozen=True, slots=True)
class MeterRequest:
    """A decoded 6F/AF poll: `addr 6F|AF length game(BCD) code(LE) x n crc`."""

    address: int
    command: int
    game: int
    codes: tuple[str, ...]


def parse_meter_request(pyd: object) -> MeterRequest | None:
    """The poll in a `{"typ":"cmd","pyd":...}` command; None when it is not a valid one."""
    if not isinstance(pyd, str):
        return None
    try:
        frame = sas.parse_hex(pyd)
    except FrameError:
        return None
    if len(frame) < 7 or frame[1] not in sas.METER_COMMANDS or sas.crc16_kermit(frame):
        return None
    body = frame[3:-2]
    if frame[2] != len(body) or len(body) % 2:
        return None
    try:
        game = sas.bcd_decode(body[:2])
    except FrameError:
        return None
    codes = tuple(
        f"{int.from_bytes(body[i : i + 2], 'little'):04X}" for i in range(2, len(body), 2)
    )
    return MeterRequest(frame[0], frame[1], game, codes)


def encode(message: Mapping[str, Any]) -> bytes:
    """A device message as the board publishes it: compact JSON, `rly` first."""
    return json.dumps(dict(message), separators=(",", ":")).encode()


MALFORMED_KINDS = ("not_json", "missing_rly", "bad_crc")


def malformed(message: Mapping[str, Any], rng: random.Random) -> bytes:
    """`message` spoiled one of three ways: cut short (not JSON), without `rly`, or (for a
    meter reply) with a `pyd` whose CRC no longer matches."""
    kinds = list(MALFORMED_KINDS)
    pyd = message.get("pyd")
    if message.get("typ") != "rsp" or not isinstance(pyd, str) or len(pyd) < 4:
        kinds.remove("bad_crc")
    kind = rng.choice(kinds)
    if kind == "not_json":
        text = encode(message)
        return text[: max(1, len(text) // 2)]
    if kind == "missing_rly":
        return encode({k: v for k, v in message.items() if k != "rly"})
    hex_pyd = str(pyd)
    last = "0" if hex_pyd[-1] != "0" else "1"
    return encode({**message, "pyd": hex_pyd[:-1] + last})


_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)", re.IGNORECASE)


def version_after_update(bin_name: str, current: str) -> str:
    """The version a board runs after flashing `bin_name`: the one the name carries
    (`cloudy_v1.5.0.bin` -> `v1.5.0`), else `current` with its patch number bumped."""
    named = _VERSION_RE.search(bin_name)
    if named:
        return "v{}.{}.{}".format(*(int(part) for part in named.groups()))
    running = _VERSION_RE.search(current)
    if running:
        major, minor, patch = (int(part) for part in running.groups())
        return f"v{major}.{minor}.{patch + 1}"
    return "v0.0.1"


# An episode is a sequence of (SAS exception code, seconds after the previous one, as a
# (low, high) range); a board emits one episode at a time, with its weight as odds.
Episode = tuple[tuple[str, tuple[float, float]], ...]
_NOW = (0.0, 0.0)
EPISODES: tuple[tuple[float, Episode], ...] = (
    (45, (("7E", _NOW), ("7F", (2.0, 6.0)))),  # game started / ended
    (20, (("4F", _NOW),)),  # bill accepted
    (8, (("11", _NOW), ("12", (5.0, 30.0)))),  # slot door opened / closed
    (8, (("66", _NOW), ("3D", (1.0, 3.0)))),  # cash-out button, ticket printed
    (4, (("84", _NOW), ("85", (10.0, 60.0)))),  # operator menu entered / exited
    (4, (("13", _NOW), ("14", (10.0, 40.0)))),  # drop door opened / closed
    (3, (("51", _NOW), ("52", (30.0, 120.0)))),  # handpay pending / reset
    (2, (("28", _NOW),)),  # bill jam
)


def pick_episode(rng: random.Random) -> list[tuple[str, float]]:
    """One episode with its delays drawn: (code, seconds from now) in order."""
    weights = [weight for weight, _ in EPISODES]
    episode = rng.choices([steps for _, steps in EPISODES], weights=weights)[0]
    at, timed = 0.0, []
    for code, (low, high) in episode:
        at += rng.uniform(low, high) if high else 0.0
        timed.append((code, at))
    return timed
