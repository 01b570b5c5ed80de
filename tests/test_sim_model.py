"""The simulator's pure parts: the meter model, the wire helpers and one board's answers."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from smib_core import protocol, sas
from smib_core.errors import InvalidInput
from smib_core.protocol import Topics
from smib_core.sim import frames
from smib_core.sim.board import Board, Download, Faults, Firmware, Send, Wake, make_boards
from smib_core.sim.meters import Machine, history

T0 = 1_700_000_000.0


def check_invariants(values: dict[str, int]) -> None:
    assert values["0022"] == values["0001"] + values["0002"]
    assert 0 <= values["0006"] <= values["0005"]
    assert values["0007"] == values["0005"] - values["0006"]
    assert 0 <= values["0003"] <= values["0004"]
    credits = values["0024"] + values["0001"] - values["0000"] - values["0004"]
    assert values["000C"] == credits >= 0


def test_jackpots_are_hand_paid_not_credited_and_the_two_wins_reconcile() -> None:
    """SAS: a jackpot is counted in 0002 and 0022, paid by an attendant; it never goes
    through the credit meter, so 0003 (hand paid cancelled credits) never holds it."""
    machine = Machine.from_seed(11, history_days=0)
    jackpot_intervals = 0
    previous = machine.values()
    for _, values in history(machine, T0, steps=20_000):
        moved = {code: values[code] - previous[code] for code in values}
        net_win = moved["0024"] - moved["0004"] - moved["0002"]
        meter_win = moved["0000"] - moved["0022"]
        assert net_win - meter_win == moved["000C"]  # credits left on the machine
        jackpot_intervals += moved["0002"] > 0
        previous = values
    assert jackpot_intervals > 0  # (a jackpot credited then cancelled breaks the identity)


def test_a_progressive_moves_only_0002_and_0022() -> None:
    machine = Machine.from_seed(5)
    before = machine.values()
    after = machine.award_jackpot(10_000_000)  # $100,000 on a 1-cent machine
    moved = {code: after[code] - before[code] for code in after}
    assert moved["0002"] == moved["0022"] == 10_000_000
    assert all(v == 0 for code, v in moved.items() if code not in ("0002", "0022"))
    check_invariants(after)


# --- meter model ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_history_keeps_the_invariants_and_never_falls(seed: int) -> None:
    machine = Machine.from_seed(seed)
    previous: dict[str, int] | None = None
    for _, values in history(machine, T0, steps=2_000):
        check_invariants(values)
        if previous is not None:
            for code, value in values.items():
                if code != "000C":  # current credits go up and down
                    assert value >= previous[code], code
        previous = values
    assert previous is not None


def test_machines_play_and_lose_like_slot_machines() -> None:
    machine = Machine.from_seed(3, history_days=0)
    assert set(machine.values().values()) == {0}
    values = machine.advance(30 * 86_400)
    check_invariants(values)
    assert values["0005"] > 10_000
    hold = (values["0000"] - values["0022"]) / values["0000"]
    assert 0.0 < hold < 0.2  # the house keeps a few percent of coin in
    assert values["0024"] > 0 and values["0004"] > 0


def test_long_and_short_durations_both_work() -> None:
    machine = Machine.from_seed(4)
    before = machine.values()
    assert machine.advance(0) == before
    check_invariants(machine.advance(1.0))
    check_invariants(machine.advance(365 * 86_400))
    assert machine.values()["0005"] > before["0005"]


def test_same_seed_same_values_different_seed_different_values() -> None:
    def run(seed: int) -> list[dict[str, int]]:
        return [values for _, values in history(Machine.from_seed(seed), T0, steps=100)]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_a_90_day_history_has_one_snapshot_every_5_minutes() -> None:
    machine = Machine.from_seed(5)
    snapshots = list(history(machine, T0, steps=288 * 90))
    assert len(snapshots) == 288 * 90
    assert snapshots[-1][0] == T0 + (288 * 90 - 1) * 300


def test_nights_are_quieter_than_evenings() -> None:
    machine = Machine.from_seed(6)
    assert machine.occupancy(300, 5 * 3600) < machine.occupancy(300, 22 * 3600)
    assert machine.occupancy(86_400, 5 * 3600) == machine.profile.occupancy


def test_reset_clears_every_meter() -> None:
    machine = Machine.from_seed(7)
    machine.reset()
    assert set(machine.values().values()) == {0}
    check_invariants(machine.advance(3600))


def test_sas_meters_follow_the_requested_codes_and_wrap_to_the_bcd_width() -> None:
    machine = Machine.from_seed(8)
    codes = ("0024", "0000", "1234")
    meters = machine.sas_meters(codes)
    assert [m.code for m in meters] == list(codes)
    size = machine.profile.meter_size
    assert size in (4, 5)
    assert meters[0].size == meters[1].size == size
    assert meters[2] == sas.Meter("1234", 0, None)  # not kept by the machine
    machine.meters.coin_in = 10 ** (2 * size) + 42
    assert machine.sas_meters(["0000"])[0].value == 42  # a rollover, as a real meter


# --- wire helpers ---------------------------------------------------------------------


def test_the_standard_request_decodes() -> None:
    request = frames.parse_meter_request(sas.STANDARD_METER_REQUEST_HEX)
    assert request == frames.MeterRequest(1, 0x6F, 0, sas.STANDARD_METER_CODES)


@pytest.mark.parametrize(
    "pyd",
    [
        None,
        "",
        "XYZ",
        sas.STANDARD_METER_REQUEST_HEX[:-2] + "00",  # bad CRC
        sas.STANDARD_METER_REQUEST_HEX[:-6],  # cut short
        sas.build_meter_request(command=0xAF).hex()[:4] + "FF",  # garbage
    ],
)
def test_polls_a_machine_would_ignore_decode_to_none(pyd: object) -> None:
    assert frames.parse_meter_request(pyd) is None


@pytest.mark.parametrize(
    ("bin_name", "current", "expected"),
    [
        ("cloudy_v1.5.0.bin", "v1.4.2", "v1.5.0"),
        ("cloudy_2.0.10.bin", "v1.4.2", "v2.0.10"),
        ("cloudy.bin", "v1.4.2", "v1.4.3"),
        ("cloudy.bin", "weird", "v0.0.1"),
    ],
)
def test_version_after_update(bin_name: str, current: str, expected: str) -> None:
    assert frames.version_after_update(bin_name, current) == expected


def test_malformed_messages_are_what_the_server_must_survive() -> None:
    import random

    rng = random.Random(1)
    reply = {"rly": "e831cdfa8384", "typ": "rsp", "sta": "", "pyd": "01" * 10}
    seen = set()
    for _ in range(60):
        spoiled = frames.malformed(reply, rng)
        try:
            obj = json.loads(spoiled)
        except ValueError:
            seen.add("not_json")
            continue
        seen.add("missing_rly" if "rly" not in obj else "bad_crc")
        assert obj != reply
    assert seen == set(frames.MALFORMED_KINDS)


def test_faults_refuse_impossible_rates() -> None:
    with pytest.raises(InvalidInput):
        Faults(drop_rate=1.5)
    with pytest.raises(InvalidInput):
        Faults(reply_delay_s=-1)


# --- one board ------------------------------------------------------------------------

TOPICS = Topics()


def fresh_board(**kwargs: Any) -> Board:
    board = make_boards(1, seed=42, **kwargs)[0]
    board.power_on(T0)
    return board


def sends(effects: list[Any]) -> list[dict[str, Any]]:
    assert all(isinstance(e, Send) for e in effects)
    return [json.loads(e.payload) for e in effects]


def test_ids_are_stable_unique_and_valid() -> None:
    ids = [b.relay for b in make_boards(300, seed=9)]
    assert ids == [b.relay for b in make_boards(300, seed=9)]
    assert ids != [b.relay for b in make_boards(300, seed=10)]
    assert len(set(ids)) == 300 and all(protocol.is_relay_id(r) for r in ids)
    assert ids[:5] == [b.relay for b in make_boards(5, seed=9, non_sas=2)]
    assert sum(b.coms_mode != 0 for b in make_boards(10, seed=9, non_sas=3)) == 3


def test_config_read_and_partial_write() -> None:
    board = fresh_board()
    [reply] = sends(board.handle({"typ": "cfg", "comp": "coms"}, T0))
    assert reply["rly"] == board.relay and reply["comp"] == "coms"
    assert set(reply) - {"rly", "typ", "comp"} == {s.name for s in protocol.COMPONENTS["coms"]}
    write = {"typ": "cfg", "comp": "coms", "comsRateMs": 250, "bogus": 1, "comsRTE": "x"}
    assert board.handle(write, T0) == []  # strict: a write is not answered
    [reply] = sends(board.handle({"typ": "cfg", "comp": "coms"}, T0))
    assert reply["comsRateMs"] == 250 and "bogus" not in reply
    assert reply["comsRTE"] == 1  # wrong type: not applied
    assert board.handle({"typ": "cfg", "comp": "app", "version": "v9.9.9"}, T0) == []
    [app] = sends(board.handle({"typ": "cfg", "comp": "app"}, T0))
    assert app["firmware"] == "cloudy" and app["version"] == board.version != "v9.9.9"
    assert board.handle({"typ": "cfg", "comp": "nope"}, T0) == []


def test_ack_writes_firmware_answers_a_write_with_the_component() -> None:
    board = fresh_board(firmware=Firmware(ack_writes=True))
    [reply] = sends(board.handle({"typ": "cfg", "comp": "coms", "comsRateMs": 250}, T0))
    assert reply["comp"] == "coms" and reply["comsRateMs"] == 250


def test_strict_board_answers_nothing_to_rst_ota_ud_and_met_reset() -> None:
    board = fresh_board(non_sas=1)
    assert [
        e
        for e in board.handle({"typ": "cmd", "cmd": "met_reset"}, T0)
        if json.loads(getattr(e, "payload", b"{}")).get("typ") != "exp"
    ] == []
    effects = board.handle({"typ": "ota_ud", "bin": "cloudy_v2.0.0.bin"}, T0)
    assert not any(isinstance(e, Send) for e in effects)
    board = fresh_board()
    assert not any(isinstance(e, Send) for e in board.handle({"typ": "rst"}, T0))


def test_duplicates_and_reordering_change_delivery_not_content() -> None:
    board = fresh_board(firmware=Firmware(duplicate_rate=1.0))
    first, second = board.handle({"typ": "cfg", "comp": "app"}, T0)
    assert isinstance(first, Send) and isinstance(second, Send)
    assert first.payload == second.payload and second.delay >= first.delay
    board = fresh_board(firmware=Firmware(reorder_rate=1.0, reorder_delay_s=2.0))
    delays = [e.delay for _ in range(50) for e in board.handle({"typ": "cfg", "comp": "app"}, T0)]
    assert all(0.0 <= d <= 2.0 for d in delays) and max(delays) > 0.5


def test_ota_keeps_version_and_forged_ota() -> None:
    board = fresh_board(firmware=Firmware(ota_keeps_version=True))
    old = board.version
    [download] = board.handle({"typ": "ota_ud", "bin": "cloudy_v2.0.0.bin"}, T0)
    [wake] = board.ota_finished(download.epoch, True, T0)
    assert board.boot(wake.epoch, T0 + 5) == [] and board.version == old
    board = fresh_board(firmware=Firmware(forges_ota=True))
    [wake] = board.handle({"typ": "ota_ud", "bin": "cloudy_v2.0.0.bin"}, T0)  # no Download
    assert isinstance(wake, Wake)
    board.boot(wake.epoch, T0 + 5)
    assert board.version == "v2.0.0"


def test_meter_reply_decodes_and_advances() -> None:
    board = fresh_board()
    [first] = sends(board.handle(protocol.read_meters().payload, T0))
    [second] = sends(board.handle(protocol.read_meters().payload, T0 + 3600))
    assert first["typ"] == "rsp" and first["sta"] == ""
    one, two = (sas.decode_meter_reply(r["pyd"]).values() for r in (first, second))
    assert list(one) == list(sas.STANDARD_METER_CODES)
    assert two["0005"] > one["0005"] and two["0000"] > one["0000"]
    check_invariants({**two, "0007": two["0005"] - two["0006"]})


def test_meter_reply_for_another_game_and_a_bad_poll() -> None:
    board = fresh_board()
    pyd = sas.build_meter_request(["0000", "0005"], address=3, game=7).hex()
    [reply] = sends(board.handle({"typ": "cmd", "sta": "", "pyd": pyd}, T0))
    reading = sas.decode_meter_reply(reply["pyd"])
    assert (reading.address, reading.game) == (3, 7)
    assert all(m.value is None for m in reading.meters)
    [bad] = sends(board.handle({"typ": "cmd", "sta": "", "pyd": "016F00"}, T0))
    assert bad["pyd"] == "-1"


def test_nvs_clear_and_meter_reset() -> None:
    board = fresh_board(non_sas=0)
    nvs = protocol.nvs_clear("meters").payload
    srsp, event = sends(board.handle(nvs, T0))
    assert srsp == {"rly": board.relay, "typ": "srsp", "sta": "162", "pyd": "E10101"}
    assert event["pyd"] == "7A" and board.machine.values()["0000"] == 0
    [failed] = sends(board.handle({"typ": "sun", "sta": "162", "pyd": "E1010200"}, T0))
    assert failed["pyd"] == "E10100"
    board.machine.advance(86_400)
    assert board.handle(protocol.meter_reset().payload, T0) == []  # SAS: ignored
    assert board.machine.values()["0000"] > 0
    non_sas = fresh_board(non_sas=1)
    non_sas.machine.advance(86_400)
    assert sends(non_sas.handle(protocol.meter_reset().payload, T0))[0]["pyd"] == "7A"
    assert non_sas.machine.values()["0000"] == 0


def test_restart_is_quiet_until_boot_then_answers_but_announces_nothing() -> None:
    board = fresh_board()
    [wake] = board.handle({"typ": "rst"}, T0)
    assert isinstance(wake, Wake) and wake.delay == board.reboot_s
    assert board.handle({"typ": "cfg", "comp": "app"}, T0) == []
    assert board.event(T0) == []
    assert board.boot(wake.epoch - 1, T0) == []  # stale
    assert board.boot(wake.epoch, T0 + 5) == []  # strict: nothing unprompted
    [back] = sends(board.handle({"typ": "cfg", "comp": "app"}, T0 + 5))
    assert back["comp"] == "app" and back["version"] == board.version


def test_announce_on_boot_firmware_announces() -> None:
    board = make_boards(1, seed=42, firmware=Firmware(announce_on_boot=True))[0]
    [hello] = sends(board.power_on(T0))
    assert hello["comp"] == "app"
    [wake] = board.handle({"typ": "rst"}, T0)
    [hello] = sends(board.boot(wake.epoch, T0 + 5))
    assert hello["comp"] == "app" and hello["version"] == board.version


def test_ota_success_and_failure() -> None:
    board = fresh_board()
    old = board.version
    [download] = board.handle({"typ": "ota_ud", "bin": "cloudy_v2.0.0.bin"}, T0)
    assert isinstance(download, Download)
    assert download.url == board.config["ota"]["otaURL"] + "cloudy_v2.0.0.bin"
    [wake] = board.ota_finished(download.epoch, False, T0)
    assert isinstance(wake, Wake)
    board.boot(wake.epoch, T0)
    [hello] = sends(board.handle({"typ": "cfg", "comp": "app"}, T0))
    assert hello["version"] == old
    [download] = board.handle({"typ": "ota_ud", "bin": "cloudy_v2.0.0.bin"}, T0)
    [wake] = board.ota_finished(download.epoch, True, T0)
    assert isinstance(wake, Wake)
    board.boot(wake.epoch, T0)
    [hello] = sends(board.handle({"typ": "cfg", "comp": "app"}, T0))
    assert hello["version"] == board.version == "v2.0.0"


def test_offline_board_is_silent_and_answers_again_when_back() -> None:
    board = fresh_board()
    assert board.set_online(False) == []
    assert board.handle({"typ": "cfg", "comp": "app"}, T0) == []
    assert board.set_online(True) == []
    [hello] = sends(board.handle({"typ": "cfg", "comp": "app"}, T0))
    assert hello["comp"] == "app"


def test_fault_injection_on_one_board() -> None:
    board = fresh_board(faults=Faults(error_rate=1.0, reply_delay_s=0.2, jitter_s=0.1))
    [reply] = board.handle(protocol.read_meters().payload, T0)
    assert isinstance(reply, Send) and 0.2 <= reply.delay <= 0.3
    assert json.loads(reply.payload)["pyd"] == "-1"
    board.faults = Faults(drop_rate=1.0)
    assert board.handle(protocol.read_meters().payload, T0) == []


def test_events_are_sas_exception_codes() -> None:
    board = fresh_board()
    codes = []
    for _ in range(200):
        for effect in board.event(T0):
            assert isinstance(effect, Send) and effect.topic == TOPICS.sub
            message = json.loads(effect.payload)
            assert message["typ"] == "exp" and message["rly"] == board.relay
            codes.append(message["pyd"])
    assert set(codes) <= set(sas.EVENT_CODES)
    assert {"7E", "7F", "4F", "11", "12"} <= set(codes)


def test_scheduler_runs_callbacks_in_time_order_and_stops() -> None:
    from smib_core.sim.scheduler import Scheduler

    ran: list[str] = []
    done = threading.Event()

    def late() -> None:
        ran.append("late")
        done.set()

    def broken() -> None:
        raise RuntimeError("logged, does not stop the others")

    scheduler = Scheduler()
    scheduler.start()
    scheduler.call_later(0.10, late)
    scheduler.call_later(0.02, lambda: ran.append("early"))
    scheduler.call_later(0.0, broken)
    assert done.wait(2)
    scheduler.call_later(60, lambda: ran.append("never"))
    assert scheduler.pending() == 1
    scheduler.stop()
    scheduler.call_later(0, lambda: ran.append("after stop"))
    assert ran == ["early", "late"] and scheduler.pending() == 0


def test_the_model_modules_do_no_io() -> None:
    """meters, frames and board import no network, database or UI library."""
    import subprocess
    import sys

    code = (
        "import sys, smib_core.sim.board, smib_core.sim.meters, smib_core.sim.frames\n"
        "bad = ('paho', 'socket', 'urllib.request', 'pymongo', 'streamlit', 'threading')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad or m in bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
