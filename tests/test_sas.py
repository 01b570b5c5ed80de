"""SAS 6F/AF codec: known answers, the shared vectors, round trips, cut and padded frames.

Pure tests in h11's style: bytes in, values out, no network. The vectors are a copy of
`../shared/sas/vectors.json` kept in `tests/data` so CI needs nothing outside the repo.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from smib_core import sas
from smib_core.errors import DeviceError, FrameError, InvalidInput

DATA = Path(__file__).parent / "data" / "sas_vectors.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "sas" / "vectors.json"
SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "000_fb4b163ed6ff0e07.txt"
VECTORS: dict[str, Any] = json.loads(DATA.read_text(encoding="utf-8"))
VALID: list[dict[str, Any]] = VECTORS["valid"]
INVALID: list[dict[str, Any]] = VECTORS["invalid"]

# The seed's "Get Meters Command" pyd, byte for byte.
SEED_PYD = "016F16000000000100040003002200240002000C0005000600E180"
NVS_FRAMES = {
    sas.NvsClear.ALL: "E101015B2C",
    sas.NvsClear.METERS: "E1010269B7",
    sas.NvsClear.BILL_VALIDATOR: "E10103783E",
    sas.NvsClear.DOOR: "E101040C81",
}


def _names(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


# --- the vectors file --------------------------------------------------------------------


@pytest.mark.skipif(not SHARED.exists(), reason="../shared is not checked out here")
def test_vectors_copy_equals_shared_file() -> None:
    assert DATA.read_bytes() == SHARED.read_bytes()


def test_vectors_cover_every_check() -> None:
    reasons = {v["reason"] for v in INVALID}
    assert reasons == {"crc", "length", "size", "bcd", "hex", "command", "device_error"}
    assert len(VALID) >= 9


# --- CRC-16/KERMIT known answers -----------------------------------------------------


def test_crc_of_0101_is_5108_on_the_wire() -> None:
    assert sas.crc_wire(bytes.fromhex("0101")) == bytes.fromhex("5108")
    assert sas.crc16_kermit(bytes.fromhex("0101")) == 0x0851


def test_crc_of_ascii_check_string_is_8921_on_the_wire() -> None:
    assert sas.crc_wire(b"123456789") == bytes.fromhex("8921")
    assert sas.crc16_kermit(b"123456789") == 0x2189


@pytest.mark.parametrize("check", VECTORS["crc_checks"])
def test_crc_checks_from_vectors(check: dict[str, str]) -> None:
    data = (
        check["input_ascii"].encode() if "input_ascii" in check else bytes.fromhex(check["input"])
    )
    assert sas.crc_wire(data).hex().upper() == check["wire"]


def test_crc_of_empty_input_is_zero() -> None:
    assert sas.crc16_kermit(b"") == 0


def test_standard_request_ends_in_e180_and_checks_to_zero() -> None:
    frame = sas.build_meter_request()
    assert frame[-2:] == bytes.fromhex("E180")
    assert sas.crc16_kermit(frame) == 0
    assert sas.crc_wire(frame[:-2]) == frame[-2:]


@pytest.mark.parametrize("vector", VALID, ids=_names(VALID))
def test_every_valid_frame_checks_to_zero(vector: dict[str, Any]) -> None:
    assert sas.crc16_kermit(bytes.fromhex(vector["hex"])) == 0


# --- the meter request ---------------------------------------------------------------


def test_standard_request_equals_seed_pyd_byte_for_byte() -> None:
    assert sas.build_meter_request() == bytes.fromhex(SEED_PYD)
    assert sas.STANDARD_METER_REQUEST_HEX == SEED_PYD == VECTORS["request_standard"]


@pytest.mark.skipif(not SEED.exists(), reason="../shared is not checked out here")
def test_seed_still_shows_the_same_pyd() -> None:
    assert f'"pyd": "{SEED_PYD}"' in SEED.read_text(encoding="utf-8")


def test_standard_request_layout() -> None:
    frame = sas.build_meter_request()
    assert frame[0] == 1 and frame[1] == 0x6F
    assert frame[2] == len(frame) - 5  # bytes after the length byte, up to the CRC
    assert frame[3:5] == b"\x00\x00"  # game 0000, BCD
    codes = [f"{int.from_bytes(frame[i : i + 2], 'little'):04X}" for i in range(5, 25, 2)]
    assert tuple(codes) == sas.STANDARD_METER_CODES


def test_request_for_other_address_game_and_af() -> None:
    frame = sas.build_meter_request(["000C"], address=0x12, game=1234, command=0xAF)
    assert frame[:-2] == bytes.fromhex("12AF0412340C00")
    assert sas.crc16_kermit(frame) == 0


@pytest.mark.parametrize(
    ("codes", "kwargs"),
    [
        (["0000"], {"address": 256}),
        (["0000"], {"address": -1}),
        (["0000"], {"game": 10000}),
        (["0000"], {"game": -1}),
        (["0000"], {"command": 0x1A}),
        (["000"], {}),
        (["00000"], {}),
        (["00G0"], {}),
        (["0000"] * 127, {}),
    ],
)
def test_request_misuse_raises_invalid_input(codes: list[str], kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidInput):
        sas.build_meter_request(codes, **kwargs)


# --- the shared vectors --------------------------------------------------------------


@pytest.mark.parametrize("vector", VALID, ids=_names(VALID))
def test_valid_vector_decodes_exactly(vector: dict[str, Any]) -> None:
    reading = sas.decode_meter_reply(vector["hex"])
    assert reading.address == vector["address"]
    assert reading.command == vector["command"]
    assert reading.game == vector["game"]
    got = [{"code": m.code, "size": m.size, "value": m.value} for m in reading.meters]
    assert got == vector["meters"]


@pytest.mark.parametrize("vector", VALID, ids=_names(VALID))
def test_valid_vector_decodes_the_same_from_bytes_lowercase_and_padded(
    vector: dict[str, Any],
) -> None:
    expected = sas.decode_meter_reply(vector["hex"])
    assert sas.decode_meter_reply(bytes.fromhex(vector["hex"])) == expected
    assert sas.decode_meter_reply(vector["hex"].lower()) == expected
    assert sas.decode_meter_reply(f"  {vector['hex']}\n") == expected


@pytest.mark.parametrize("vector", VALID, ids=_names(VALID))
def test_valid_vector_reencodes_to_the_same_frame(vector: dict[str, Any]) -> None:
    reading = sas.decode_meter_reply(vector["hex"])
    frame = sas.encode_meter_reply(
        reading.meters,
        address=reading.address,
        game=reading.game,
        command=int(reading.command, 16),
    )
    assert frame.hex().upper() == vector["hex"]


@pytest.mark.parametrize("vector", INVALID, ids=_names(INVALID))
def test_invalid_vector_is_refused_with_its_reason(vector: dict[str, Any]) -> None:
    with pytest.raises((FrameError, DeviceError)) as info:
        sas.decode_meter_reply(vector["hex"])
    error = info.value
    assert isinstance(error, FrameError | DeviceError)
    assert error.check == vector["reason"]
    assert str(error)


def test_device_error_for_minus_one_with_whitespace() -> None:
    with pytest.raises(DeviceError) as info:
        sas.decode_meter_reply(" -1\n")
    assert info.value.check == "device_error"


def test_values_and_json_of_a_reading() -> None:
    vector = next(v for v in VALID if "size 0" in v["name"])
    reading = sas.decode_meter_reply(vector["hex"])
    assert reading.values() == {"0000": 1234, "0024": 55}  # the size-0 meter is left out
    assert reading.to_json() == {
        "address": 1,
        "command": "6F",
        "game": 0,
        "meters": [
            {"code": "0000", "name": "Total coin in (handle)", "size": 4, "value": 1234},
            {
                "code": "0022",
                "name": "Total won credits (coin out + jackpot)",
                "size": 0,
                "value": None,
            },
            {"code": "0024", "name": "Total drop", "size": 4, "value": 55},
        ],
    }


def test_unrequested_codes_get_a_name() -> None:
    assert sas.meter_spec("000b").name == "Credits from bills accepted"
    assert sas.meter_spec("0040").unit is sas.Unit.BILLS
    assert sas.meter_spec("00A0").unit is sas.Unit.CENTS
    assert sas.meter_spec("1234").name == "Meter 1234"
    assert sas.meter_spec("1234").unit is sas.Unit.UNKNOWN


def test_event_names() -> None:
    assert sas.event_name("11") == "Slot door opened"
    assert sas.event_name("1a") == "Cashbox door closed"
    assert sas.event_name("ee") == "Exception EE"


# --- encode -> decode round trips ----------------------------------------------------


def _random_meters(rng: random.Random, sizes: list[int]) -> list[sas.Meter]:
    meters = []
    for size in sizes:
        code = f"{rng.randrange(0x10000):04X}"
        value = None if size == 0 else rng.randrange(10 ** (2 * size))
        meters.append(sas.Meter(code, size, value))
    return meters


@pytest.mark.parametrize("size", [0, 4, 5, 9])
@pytest.mark.parametrize(
    ("command", "game", "address"), [(0x6F, 0, 1), (0xAF, 3, 0x12), (0x6F, 9999, 127)]
)
def test_encode_decode_round_trip(size: int, command: int, game: int, address: int) -> None:
    rng = random.Random(size * 1000 + game)
    meters = _random_meters(rng, [size] * 5)
    frame = sas.encode_meter_reply(meters, address=address, game=game, command=command)
    reading = sas.decode_meter_reply(frame)
    assert reading == sas.MeterReading(address, f"{command:02X}", game, tuple(meters))
    assert sas.decode_meter_reply(frame.hex()) == reading


def test_encode_decode_round_trip_mixed_sizes_and_extremes() -> None:
    meters = [
        sas.Meter("0000", 4, 99_999_999),
        sas.Meter("0001", 9, 10**18 - 1),
        sas.Meter("0002", 5, 0),
        sas.Meter("0022", 0, None),
        sas.Meter("FFFF", 1, 7),
    ]
    reading = sas.decode_meter_reply(sas.encode_meter_reply(meters, game=42, command=0xAF))
    assert reading.meters == tuple(meters)
    assert reading.game == 42 and reading.command == "AF"


def test_encode_with_no_meters_is_a_valid_empty_reply() -> None:
    frame = sas.encode_meter_reply([])
    assert sas.decode_meter_reply(frame) == sas.MeterReading(1, "6F", 0, ())


@pytest.mark.parametrize(
    "meter",
    [sas.Meter("0000", 4, 100_000_000), sas.Meter("0000", 4, -1), sas.Meter("000", 4, 1)],
)
def test_encode_misuse_raises_invalid_input(meter: sas.Meter) -> None:
    with pytest.raises(InvalidInput):
        sas.encode_meter_reply([meter])


def test_bcd_encode_and_decode() -> None:
    assert sas.bcd_encode(1234, 2) == b"\x12\x34"
    assert sas.bcd_encode(5, 3) == b"\x00\x00\x05"
    assert sas.bcd_decode(b"\x98\x76\x54") == 987654
    assert sas.bcd_decode(b"") == 0
    for bad in (b"\x0a", b"\xa0", b"\x12\xff"):
        with pytest.raises(FrameError) as info:
            sas.bcd_decode(bad)
        assert info.value.check == "bcd"


# --- each reader: whole, cut short, trailing garbage ---------------------------------

TRAILING = ["00", "0000", "FF", "DEADBEEF", "6F", "0000000000"]


@pytest.mark.parametrize("vector", VALID, ids=_names(VALID))
def test_every_prefix_of_a_valid_frame_raises_frame_error(vector: dict[str, Any]) -> None:
    text = vector["hex"]
    for cut in range(len(text)):
        with pytest.raises(FrameError):
            sas.decode_meter_reply(text[:cut])
    frame = bytes.fromhex(text)
    for cut in range(len(frame)):
        with pytest.raises(FrameError):
            sas.decode_meter_reply(frame[:cut])


@pytest.mark.parametrize("vector", VALID, ids=_names(VALID))
@pytest.mark.parametrize("garbage", TRAILING)
def test_trailing_garbage_after_a_valid_frame_raises(vector: dict[str, Any], garbage: str) -> None:
    with pytest.raises(FrameError):
        sas.decode_meter_reply(vector["hex"] + garbage)
    with pytest.raises(FrameError):
        sas.decode_meter_reply(bytes.fromhex(vector["hex"] + garbage))


def test_trailing_zero_bytes_keep_the_crc_but_fail_the_length() -> None:
    """A whole frame checks to 0, and so does it with 00 00 after it: length catches it."""
    text = VALID[0]["hex"] + "0000"
    assert sas.crc16_kermit(bytes.fromhex(text)) == 0
    with pytest.raises(FrameError) as info:
        sas.decode_meter_reply(text)
    assert info.value.check == "length"


@pytest.mark.parametrize("garbage", [" x", "zz", "0", "\x00", "-1"])
def test_trailing_non_hex_raises_hex(garbage: str) -> None:
    with pytest.raises(FrameError) as info:
        sas.decode_meter_reply(VALID[0]["hex"] + garbage)
    assert info.value.check == "hex"


def test_parse_hex_whole_cut_and_padded() -> None:
    text = VALID[-1]["hex"]
    assert sas.parse_hex(text) == bytes.fromhex(text)
    for cut in range(len(text)):
        if cut % 2 or cut == 0:
            with pytest.raises(FrameError):
                sas.parse_hex(text[:cut])
        else:
            assert sas.parse_hex(text[:cut]) == bytes.fromhex(text[:cut])
    for garbage in ("g", "0g", " 0 0", "\u0660\u0661"):  # the last: Arabic-Indic digits
        with pytest.raises(FrameError) as info:
            sas.parse_hex(text + garbage)
        assert info.value.check == "hex"


@pytest.mark.parametrize("value", [None, 1, b"016F", ["01"]])
def test_parse_hex_refuses_non_text(value: object) -> None:
    with pytest.raises(FrameError) as info:
        sas.parse_hex(value)  # type: ignore[arg-type]
    assert info.value.check == "hex"


def test_every_single_byte_corruption_raises_frame_error_only() -> None:
    """Flip each byte of a frame to several values: a FrameError or a valid reading, never
    another exception (a flip can only pass if it keeps CRC, length and sizes coherent)."""
    frame = bytes.fromhex(VALID[4]["hex"])
    for i in range(len(frame)):
        for value in (0x00, 0x0A, 0x99, 0xFF, frame[i] ^ 0x01):
            mutated = frame[:i] + bytes([value]) + frame[i + 1 :]
            try:
                sas.decode_meter_reply(mutated)
            except FrameError:
                pass
            else:
                assert mutated == frame


def test_random_bytes_never_raise_anything_but_frame_error() -> None:
    rng = random.Random(0x6F)
    for _ in range(2000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        if rng.random() < 0.5 and len(data) >= 3:
            data = bytes([data[0], rng.choice([0x6F, 0xAF]), (len(data) - 5) & 0xFF]) + data[3:]
            data = data[:-2] + sas.crc_wire(data[:-2]) if len(data) > 2 else data
        try:
            reading = sas.decode_meter_reply(data if rng.random() < 0.5 else data.hex())
        except FrameError:
            continue
        assert isinstance(reading, sas.MeterReading)


# --- NVS clear (`sun`) frames ----------------------------------------------------------


@pytest.mark.parametrize(("kind", "frame"), NVS_FRAMES.items(), ids=[k.value for k in NVS_FRAMES])
def test_nvs_clear_frames(kind: sas.NvsClear, frame: str) -> None:
    assert sas.build_nvs_clear(kind) == frame
    assert sas.nvs_kind_of(frame) is kind
    assert sas.nvs_kind_of(f" {frame.lower()} ") is kind
    body = bytes.fromhex(frame)
    assert sas.crc16_kermit(body[:3]).to_bytes(2, "big") == body[3:]  # CRC high byte first


@pytest.mark.parametrize("frame", ["", "E10105", "E101015B2D", "E101015B2C00", "-1"])
def test_nvs_kind_of_unknown_frames(frame: str) -> None:
    assert sas.nvs_kind_of(frame) is None


def _kermit_bitwise(data: bytes) -> int:
    """CRC-16/KERMIT straight from its definition: reflected 0x1021, init 0, no xor out."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def test_crc_equals_the_bitwise_definition_on_random_data() -> None:
    rng = random.Random(16)
    for length in [0, 1, 2, 3, *range(4, 300, 7)]:
        data = bytes(rng.randrange(256) for _ in range(length))
        assert sas.crc16_kermit(data) == _kermit_bitwise(data)
