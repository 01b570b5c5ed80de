"""`smib sim --relays N [--seed S] [firmware variants] [faults...]`: run a simulated fleet
until Ctrl-C.

The boards are strict by default, as PROTOCOL.md says: no reply to a config write,
`rst`, `ota_ud` or `met_reset`, nothing unprompted after a boot. `--ack-writes`,
`--announce-on-boot`, `--duplicate-rate`, `--reorder-rate`, `--reboot-s` and
`--ota-keeps-version` give them what some real firmware does. The boards talk to the
broker at MQTT_URI, or to the data folder's embedded broker when MQTT_URI is unset, on
the topics the settings name.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading

from smib_core.errors import InvalidInput
from smib_core.settings import Settings
from smib_core.sim.board import Faults, Firmware
from smib_core.sim.faults import Replayer
from smib_core.sim.fleet import Fleet

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sim", help="run simulated SMIB boards against the broker")
    p.add_argument(
        "--relays",
        type=int,
        default=None,
        metavar="N",
        help="number of boards (default SMIB_SIM_RELAYS, 20)",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same relay ids (default 0)")
    p.add_argument(
        "--non-sas",
        type=int,
        default=0,
        metavar="N",
        help="how many boards are non-SAS (comsMode 1)",
    )
    p.add_argument(
        "--events-per-minute",
        type=float,
        default=1.0,
        metavar="R",
        help="events per board per minute, on average (default 1)",
    )
    p.add_argument(
        "--reboot-s",
        type=float,
        default=5.0,
        metavar="S",
        help="how long a restart or OTA keeps a board quiet (default 5)",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="machines play X times faster than real time (default 1)",
    )
    p.add_argument(
        "--ota-url",
        default=None,
        metavar="URL",
        help="the boards' initial otaURL (default FIRMWARE_BASE_URL or the "
        "firmware server's address)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="stop after S seconds (default: run until Ctrl-C)",
    )
    p.add_argument("--print-ids", action="store_true", help="print the relay ids, one a line")
    firmware = p.add_argument_group(
        "firmware variants (default: strict, as PROTOCOL.md promises nothing more)"
    )
    firmware.add_argument(
        "--ack-writes",
        action="store_true",
        help="answer a config write with the whole component",
    )
    firmware.add_argument(
        "--announce-on-boot",
        action="store_true",
        help="send the app config, unprompted, after every (re)boot",
    )
    firmware.add_argument(
        "--duplicate-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="share of messages sent twice",
    )
    firmware.add_argument(
        "--reorder-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="share of messages held back up to a second (later ones overtake them)",
    )
    firmware.add_argument(
        "--ota-keeps-version",
        action="store_true",
        help="download and reboot on ota_ud, but keep the old version",
    )
    faults = p.add_argument_group("fault injection")
    faults.add_argument(
        "--drop-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of commands a board ignores",
    )
    faults.add_argument(
        "--reply-delay", type=float, default=0.0, metavar="S", help="seconds before a board answers"
    )
    faults.add_argument(
        "--jitter",
        type=float,
        default=None,
        metavar="S",
        help="up to S more seconds, at random (default: half the delay)",
    )
    faults.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        metavar="P",
        help='share of meter reads answered "-1"',
    )
    faults.add_argument(
        "--malformed-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of messages sent spoiled (not JSON, bad CRC, no rly)",
    )
    faults.add_argument(
        "--ota-fail-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of OTA updates that fail after the download",
    )
    network = p.add_argument_group("network faults (not the boards': a client on the broker)")
    network.add_argument(
        "--replay-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="share of meter replies published again later, unchanged (a flaky network)",
    )
    network.add_argument(
        "--replay-delay",
        default="0-90",
        metavar="MIN-MAX",
        help="how late a replay comes, in seconds (default 0-90)",
    )
    p.set_defaults(func=run)


def _delays(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        return float(low), float(high or low)
    except ValueError:
        raise InvalidInput(
            f"--replay-delay takes MIN-MAX seconds, e.g. 30-65, not {text!r}"
        ) from None


def _broker_uri(settings: Settings) -> str:
    if settings.mqtt_uri:
        return settings.mqtt_uri
    from smib_core.embedded import broker_uri  # starts the embedded broker if needed

    return broker_uri(settings)


def _ota_url(settings: Settings, given: str | None) -> str:
    if given:
        return given
    if settings.firmware_base_url:
        base = settings.firmware_base_url
        return base if base.endswith("/") else base + "/"
    return f"http://{settings.firmware_bind}:{settings.firmware_port}/firmwares/"


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    faults = Faults(
        drop_rate=args.drop_rate,
        reply_delay_s=args.reply_delay,
        jitter_s=args.jitter,
        error_rate=args.error_rate,
        malformed_rate=args.malformed_rate,
        ota_fail_rate=args.ota_fail_rate,
    )
    firmware = Firmware(
        ack_writes=args.ack_writes,
        announce_on_boot=args.announce_on_boot,
        duplicate_rate=args.duplicate_rate,
        reorder_rate=args.reorder_rate,
        ota_keeps_version=args.ota_keeps_version,
    )
    broker = _broker_uri(settings)
    fleet = Fleet(
        broker,
        settings.topics,
        relays=settings.sim_relays if args.relays is None else args.relays,
        seed=args.seed,
        faults=faults,
        firmware=firmware,
        reboot_s=args.reboot_s,
        events_per_minute=args.events_per_minute,
        non_sas=args.non_sas,
        ota_url=_ota_url(settings, args.ota_url),
        time_scale=args.time_scale,
        tls_context=settings.mqtt_tls_context(),
    )
    replayer: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if args.replay_rate > 0:
        low, high = _delays(args.replay_delay)
        replayer = Replayer(
            broker,
            settings.topics,
            replay_rate=args.replay_rate,
            min_delay_s=low,
            max_delay_s=high,
            seed=args.seed,
            tls_context=settings.mqtt_tls_context(),
        )
    with fleet, replayer:
        print(
            f"{len(fleet.relay_ids)} simulated boards on {fleet.address.uri()} "
            f"(seed {args.seed}); Ctrl-C to stop",
            file=sys.stderr,
        )
        if args.print_ids:
            print("\n".join(fleet.relay_ids), flush=True)
        threading.Event().wait(args.duration)
        log.info("simulator counts: %s", fleet.stats())
    return 0
