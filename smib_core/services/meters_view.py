"""One board's meters, read on request and shown as a table a person can check.

`read_meters` sends the standard SAS 6F request through the guarded gateway and returns
the decoded reading, or the reason there is none (timeout, a frame that failed a check,
the board's "-1"), with the time of the reading. `meter_table` names each meter and
turns credits into money by the cabinet's denomination. No streamlit here.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from smib_core import protocol, sas
from smib_core.errors import SmibError
from smib_core.protocol import MeterReply
from smib_core.services.actions import BoardActions
from smib_core.store.documents import utc_now

METER_COLUMNS = ["code", "meter", "unit", "value", "money", "money_text"]
NOT_SUPPORTED = "not supported by this machine"


def _money(meter: sas.Meter, denomination: float | None) -> float | None:
    """Credits x denomination; ticket and AFT meters count cents; others are no money."""
    if meter.value is None:
        return None
    if meter.spec.unit is sas.Unit.CREDITS and denomination is not None:
        return round(meter.value * denomination, 2)
    if meter.spec.unit is sas.Unit.CENTS:
        return meter.value / 100
    return None


def _money_text(meter: sas.Meter, money: float | None) -> str:
    if meter.value is None:
        return NOT_SUPPORTED
    return "" if money is None else f"{money:,.2f}"


def meter_table(reading: sas.MeterReading, denomination: float | None) -> pd.DataFrame:
    """One row per meter in frame order: code, name, unit, value and money.

    `denomination` is money per credit (the cabinet's); None (an unregistered board)
    leaves credit meters without money. A meter the machine does not support (size 0)
    has no value and says so.
    """
    rows = []
    for meter in reading.meters:
        money = _money(meter, denomination)
        rows.append(
            {
                "code": meter.code,
                "meter": meter.spec.name,
                "unit": meter.spec.unit.value,
                "value": meter.value,
                "money": money,
                "money_text": _money_text(meter, money),
            }
        )
    frame = pd.DataFrame(rows, columns=METER_COLUMNS)
    frame["value"] = frame["value"].astype("Int64")
    frame["money"] = frame["money"].astype("float64")
    return frame


def read_meters(
    actions: BoardActions, relay: str, timeout: float = 5.0
) -> tuple[sas.MeterReading | str, datetime]:
    """The board's meters now, or the sentence saying why not; with the time asked."""
    at = utc_now()
    try:
        reply = actions.request(relay, protocol.read_meters(), timeout)
    except SmibError as exc:
        return str(exc), at
    if not isinstance(reply, MeterReply):
        return "the board answered something other than meters", at
    if reply.reading is None and reply.failure_check == "device_error":
        return str(reply.failure), at
    if reply.reading is None:
        return f"the machine's reply failed a check ({reply.failure})", at
    return reply.reading, at
