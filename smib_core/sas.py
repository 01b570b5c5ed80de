"""SAS long poll 6F/AF codec: pure, stdlib only, no I/O.

Contract: text or bytes go in, frozen dataclasses come out, and the reverse. A frame
that fails a check raises `FrameError` whose `check` names it (hex, command, crc,
length, size, bcd); the board's `"-1"` raises `DeviceError`. Nothing here logs,
sleeps or touches a socket.

Request (server -> machine), all binary fields low byte first, BCD high byte first::

    +------+----+--------+-----------+-------------------+---------+
    | addr | 6F | length | game(BCD) | code(LE) x n      | crc(LE) |
    |  1   | 1  |   1    |     2     |      2 x n        |    2    |
    +------+----+--------+-----------+-------------------+---------+

Reply (machine -> server)::

    +------+-------+--------+-----------+--------------------------------+---------+
    | addr | 6F|AF | length | game(BCD) | code(LE) size value(BCD) x n   | crc(LE) |
    +------+-------+--------+-----------+--------------------------------+---------+

`length` counts the bytes after itself up to the CRC. The CRC is CRC-16/KERMIT over
every byte from the address to the last data byte; a whole frame checks to 0.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from smib_core.errors import DeviceError, FrameError, InvalidInput

# --- CRC-16/KERMIT -------------------------------------------------------------------


def _reflect(value: int, bits: int) -> int:
    return int(f"{value:0{bits}b}"[::-1], 2)


_REFLECT_BYTE = bytes(_reflect(b, 8) for b in range(256))


def crc16_kermit(data: bytes) -> int:
    """CRC-16/KERMIT (poly 0x1021 reflected, init 0, no final xor).

    KERMIT is CRC-16/XMODEM (`binascii.crc_hqx`, same poly, not reflected, init 0) with
    every input byte and the result bit-reflected; `crc_hqx` runs in C, several times
    faster than a table loop in Python on the bus's hot path. Tests check it against
    the bitwise definition.
    """
    return _reflect(binascii.crc_hqx(data.translate(_REFLECT_BYTE), 0), 16)


def crc_wire(data: bytes) -> bytes:
    """The CRC as SAS sends it: low byte first."""
    return crc16_kermit(data).to_bytes(2, "little")


# --- meter and event tables ----------------------------------------------------------


class Unit(StrEnum):
    CREDITS = "credits"
    COUNT = "count"
    CENTS = "cents"
    BILLS = "bills"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class MeterSpec:
    code: str
    name: str
    unit: Unit


def _spec(code: str, name: str, unit: Unit) -> tuple[str, MeterSpec]:
    return code, MeterSpec(code, name, unit)


METER_CODES: dict[str, MeterSpec] = dict(
    [
        _spec("0000", "Total coin in (handle)", Unit.CREDITS),
        _spec("0001", "Total coin out", Unit.CREDITS),
        _spec("0002", "Total jackpot", Unit.CREDITS),
        _spec("0003", "Total hand paid cancelled credits", Unit.CREDITS),
        _spec("0004", "Total cancelled credits", Unit.CREDITS),
        _spec("0005", "Games played", Unit.COUNT),
        _spec("0006", "Games won", Unit.COUNT),
        _spec("0007", "Games lost", Unit.COUNT),
        _spec("000B", "Credits from bills accepted", Unit.CREDITS),
        _spec("000C", "Current credits", Unit.CREDITS),
        _spec("000D", "Total SAS cashable ticket in", Unit.CENTS),
        _spec("000E", "Total SAS cashable ticket out", Unit.CENTS),
        _spec("000F", "Total SAS restricted ticket in", Unit.CENTS),
        _spec("0010", "Total SAS restricted ticket out", Unit.CENTS),
        _spec("001E", "Machine paid external bonus", Unit.CREDITS),
        _spec("0022", "Total won credits (coin out + jackpot)", Unit.CREDITS),
        _spec("0024", "Total drop", Unit.CREDITS),
        _spec("003E", "Bills in stacker", Unit.BILLS),
        _spec("003F", "Value of bills in stacker", Unit.CREDITS),
    ]
)

STANDARD_METER_CODES: tuple[str, ...] = (
    "0000",
    "0001",
    "0004",
    "0003",
    "0022",
    "0024",
    "0002",
    "000C",
    "0005",
    "0006",
)


def meter_spec(code: str) -> MeterSpec:
    """The spec of a meter code; codes we do not name still decode, as 'Meter XXXX'."""
    code = code.upper()
    if code in METER_CODES:
        return METER_CODES[code]
    value = int(code, 16)
    if 0x40 <= value <= 0x57:
        return MeterSpec(code, f"Bills accepted, denomination slot {value - 0x40}", Unit.BILLS)
    if 0xA0 <= value <= 0xBD:
        return MeterSpec(code, f"AFT transfer meter {code}", Unit.CENTS)
    return MeterSpec(code, f"Meter {code}", Unit.UNKNOWN)


EVENT_CODES: dict[str, str] = {
    "11": "Slot door opened",
    "12": "Slot door closed",
    "13": "Drop door opened",
    "14": "Drop door closed",
    "15": "Card cage opened",
    "16": "Card cage closed",
    "17": "AC power applied",
    "18": "AC power lost",
    "19": "Cashbox door opened",
    "1A": "Cashbox door closed",
    "1B": "Cashbox removed",
    "1C": "Cashbox installed",
    "20": "General tilt",
    "27": "Cashbox full",
    "28": "Bill jam",
    "29": "Bill acceptor failure",
    "3D": "Cash-out ticket printed",
    "4F": "Bill accepted",
    "51": "Handpay pending",
    "52": "Handpay reset",
    "66": "Cash-out button pressed",
    "7A": "Soft meters reset",
    "7E": "Game started",
    "7F": "Game ended",
    "84": "Operator menu entered",
    "85": "Operator menu exited",
}


def event_name(code: str) -> str:
    return EVENT_CODES.get(code.upper(), f"Exception {code.upper()}")


# --- decoded values ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Meter:
    code: str
    size: int
    value: int | None  # None when the machine does not support the meter (size 0)

    @property
    def spec(self) -> MeterSpec:
        return meter_spec(self.code)

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "name": self.spec.name, "size": self.size, "value": self.value}


@dataclass(frozen=True, slots=True)
class MeterReading:
    address: int
    command: str  # "6F" or "AF"
    game: int
    meters: tuple[Meter, ...]

    def values(self) -> dict[str, int]:
        """Supported meters by code (a code seen twice keeps its last value)."""
        return {m.code: m.value for m in self.meters if m.value is not None}

    def to_json(self) -> dict[str, object]:
        return {
            "address": self.address,
            "command": self.command,
            "game": self.game,
            "meters": [m.to_json() for m in self.meters],
        }


# --- encoding ------------------------------------------------------------------------

_HEX_RE = re.compile(r"\A(?:[0-9A-Fa-f]{2})+\Z")
_CODE_RE = re.compile(r"\A[0-9A-Fa-f]{4}\Z")
METER_COMMANDS = {0x6F: "6F", 0xAF: "AF"}


def bcd_encode(value: int, size: int) -> bytes:
    """Packed BCD, high byte first, exactly `size` bytes."""
    if value < 0:
        raise InvalidInput("a BCD value cannot be negative")
    digits = f"{value:0{size * 2}d}"
    if len(digits) > size * 2:
        raise InvalidInput(f"{value} does not fit in {size} BCD bytes")
    return bytes.fromhex(digits)


def _code_bytes(code: str) -> bytes:
    if not _CODE_RE.match(code):
        raise InvalidInput(f"meter code {code!r} is not four hex digits")
    return int(code, 16).to_bytes(2, "little")


def _check_header(address: int, game: int, command: int) -> None:
    if not 0 <= address <= 0xFF:
        raise InvalidInput("a SAS address is one byte")
    if not 0 <= game <= 9999:
        raise InvalidInput("a game number is 0..9999")
    if command not in METER_COMMANDS:
        raise InvalidInput("meter commands are 6F and AF")


def build_meter_request(
    codes: Sequence[str] = STANDARD_METER_CODES,
    *,
    address: int = 1,
    game: int = 0,
    command: int = 0x6F,
) -> bytes:
    """The 6F/AF request frame asking for `codes` of `game`, CRC included."""
    _check_header(address, game, command)
    body = bcd_encode(game, 2) + b"".join(_code_bytes(c) for c in codes)
    if len(body) > 0xFF:
        raise InvalidInput("too many meter codes for one request")
    frame = bytes([address, command, len(body)]) + body
    return frame + crc_wire(frame)


def encode_meter_reply(
    meters: Iterable[Meter], *, address: int = 1, game: int = 0, command: int = 0x6F
) -> bytes:
    """A 6F/AF reply frame as a machine sends it (used by the simulator and tests)."""
    _check_header(address, game, command)
    body = bytearray(bcd_encode(game, 2))
    for meter in meters:
        body += _code_bytes(meter.code) + bytes([meter.size])
        if meter.size:
            body += bcd_encode(meter.value or 0, meter.size)
    if len(body) > 0xFF:
        raise InvalidInput("too many meters for one reply")
    frame = bytes([address, command, len(body)]) + bytes(body)
    return frame + crc_wire(frame)


STANDARD_METER_REQUEST_HEX = build_meter_request().hex().upper()


# --- decoding ------------------------------------------------------------------------

DEVICE_ERROR_PAYLOAD = "-1"
_MIN_REPLY = 7  # addr, command, length, game(2), crc(2)


def parse_hex(text: str) -> bytes:
    """Hex text to bytes; odd length, empty or non-hex raise FrameError('hex')."""
    if not isinstance(text, str):
        raise FrameError("hex", "the payload is not a hex string")
    stripped = text.strip()
    if not stripped:
        raise FrameError("hex", "the frame is empty")
    if len(stripped) % 2:
        raise FrameError("hex", f"odd number of hex digits ({len(stripped)})")
    if not _HEX_RE.match(stripped):
        raise FrameError("hex", "the frame contains characters that are not hex digits")
    return bytes.fromhex(stripped)


def bcd_decode(data: bytes) -> int:
    """Packed BCD, high byte first. A nibble above 9 shows as a-f in hex: refuse it."""
    digits = data.hex()
    if not digits:
        return 0
    if not digits.isdigit():
        bad = next(b for b in data if b >> 4 > 9 or b & 0x0F > 9)
        raise FrameError("bcd", f"BCD byte {bad:02X} has a nibble above 9")
    return int(digits)


def _meter_layout(frame: bytes, digits: str, data_end: int) -> list[tuple[str, int, int]]:
    """Walk the meters by their size bytes: (code, value start, value end) each.

    The structure is checked before any value is decoded, so a size that runs past the
    end is reported as `size` rather than as the BCD garbage it would otherwise read.
    `digits` is the frame in hex: a code (two bytes, low first) is read from it directly.
    """
    layout: list[tuple[str, int, int]] = []
    pos = 5
    while pos < data_end:
        if pos + 3 > data_end:
            raise FrameError("size", f"a meter header at byte {pos} runs past the end")
        code = (digits[2 * pos + 2 : 2 * pos + 4] + digits[2 * pos : 2 * pos + 2]).upper()
        start = pos + 3
        pos = start + frame[pos + 2]
        if pos > data_end:
            raise FrameError("size", f"meter {code} of size {frame[start - 1]} runs past the end")
        layout.append((code, start, pos))
    return layout


def decode_meter_reply(payload: str | bytes) -> MeterReading:
    """Decode a 6F/AF reply given as the board's hex text (or raw bytes).

    Meters are parsed by their size byte and kept in frame order; codes the request did
    not ask for are accepted. Raises DeviceError for "-1", FrameError otherwise.
    """
    if isinstance(payload, str):
        if payload.strip() == DEVICE_ERROR_PAYLOAD:
            raise DeviceError()
        frame = parse_hex(payload)
    else:
        frame = bytes(payload)
    if len(frame) < _MIN_REPLY:
        raise FrameError("length", f"a reply is at least {_MIN_REPLY} bytes, got {len(frame)}")
    if frame[1] not in METER_COMMANDS:
        raise FrameError("command", f"command byte {frame[1]:02X} is not 6F or AF")
    if crc16_kermit(frame) != 0:
        expected = crc_wire(frame[:-2]).hex().upper()
        raise FrameError("crc", f"CRC {frame[-2:].hex().upper()} does not match {expected}")
    data_end = len(frame) - 2
    if frame[2] != data_end - 3:
        raise FrameError("length", f"length byte says {frame[2]}, frame holds {data_end - 3}")
    digits = frame.hex()  # one conversion; codes and values are then slices of it
    layout = _meter_layout(frame, digits, data_end)
    game = bcd_decode(frame[3:5])
    meters = []
    for code, start, end in layout:
        text = digits[2 * start : 2 * end]
        if text and not text.isdigit():
            bcd_decode(frame[start:end])  # raises FrameError naming the bad byte
        meters.append(Meter(code, end - start, int(text) if text else None))
    return MeterReading(frame[0], METER_COMMANDS[frame[1]], game, tuple(meters))


# --- NVS clear (`sun`) frames ---------------------------------------------------------


class NvsClear(StrEnum):
    ALL = "all"
    METERS = "meters"
    BILL_VALIDATOR = "bill_validator"
    DOOR = "door"


_NVS_SELECTOR = {NvsClear.ALL: 1, NvsClear.METERS: 2, NvsClear.BILL_VALIDATOR: 3, NvsClear.DOOR: 4}
NVS_STATUS = "162"
NVS_OK = "E10101"
NVS_FAILED = "E10100"


def build_nvs_clear(kind: NvsClear) -> str:
    """The `sun` frame: E1 01 selector, CRC-16/KERMIT high byte first (unlike 6F)."""
    body = bytes([0xE1, 0x01, _NVS_SELECTOR[kind]])
    return (body + crc16_kermit(body).to_bytes(2, "big")).hex().upper()


def nvs_kind_of(frame_hex: str) -> NvsClear | None:
    """Which clear a `sun` frame asks for, or None when it is not one of ours."""
    for kind in NvsClear:
        if build_nvs_clear(kind) == frame_hex.strip().upper():
            return kind
    return None
