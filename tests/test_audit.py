"""The audit trail on the embedded database: records, masking, filters, export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from smib_core import protocol
from smib_core.errors import InvalidInput
from smib_core.store.audit import AuditTrail, mask_detail, os_actor, to_csv

R1, R2 = "e831cdfa8384", "a0b1c2d3e4f5"


def test_mask_detail_masks_at_every_level() -> None:
    detail: dict[str, Any] = {
        "command": {"comp": "net", "netStaPwd": "wifi-secret-1", "netStaSSID": "floor"},
        "uri": "mqtt://board:mqtt-secret-2@broker:1883",
        "nested": [{"api_token": "tok-3"}, {"client_secret": "sec-4"}],
        "Password": "pw-5",
        "count": 3,
    }
    masked = mask_detail(detail)
    text = repr(masked)
    for secret in ("wifi-secret-1", "mqtt-secret-2", "tok-3", "sec-4", "pw-5"):
        assert secret not in text
    assert masked["command"]["netStaSSID"] == "floor"
    assert masked["uri"] == "mqtt://board:••••••@broker:1883"
    assert masked["count"] == 3
    assert detail["command"]["netStaPwd"] == "wifi-secret-1"  # the caller's copy is untouched


def test_os_actor_names_the_cli_user() -> None:
    assert os_actor().startswith("cli:") and len(os_actor()) > 4


@pytest.mark.integration
def test_record_masks_wifi_and_mqtt_passwords_before_storing(mongo_db: Any) -> None:
    audit = AuditTrail(mongo_db)
    net = protocol.config_write("net", {"netStaSSID": "floor", "netStaPwd": "wifi-secret-1"})
    mqtt = protocol.config_write("mqtt", {"mqttURI": "mqtts://smib:mqtt-secret-2@broker:8883"})
    for command in (net, mqtt):
        audit.record("tom", command.kind, [R1], {"command": command.payload}, "sent")
    stored = list(mongo_db["audit"].find({}))
    assert len(stored) == 2
    assert "wifi-secret-1" not in repr(stored) and "mqtt-secret-2" not in repr(stored)
    uris = [d["detail"]["command"].get("mqttURI") for d in stored]
    assert "mqtts://smib:••••••@broker:8883" in uris
    frame = audit.query()
    assert "secret" not in to_csv(frame).decode()


@pytest.mark.integration
def test_record_then_update_outcome(mongo_db: Any) -> None:
    audit = AuditTrail(mongo_db)
    record_id = audit.record("tom", "restart", [R1, R2], {"command": {"typ": "rst"}}, "sent")
    audit.update_outcome(record_id, "failed", {"error": "offline", "token": "abc"})
    row = audit.query().iloc[0]
    assert (row["actor"], row["kind"], row["relays"], row["outcome"]) == (
        "tom",
        "restart",
        f"{R1}, {R2}",
        "failed",
    )
    assert '"error": "offline"' in row["result"] and "abc" not in row["result"]
    assert row["at"].tzinfo is not None
    with pytest.raises(InvalidInput):
        audit.update_outcome(record_id, "maybe")
    with pytest.raises(InvalidInput):
        audit.update_outcome("not-an-id", "ok")
    with pytest.raises(InvalidInput):
        audit.record("tom", "restart", [R1], {}, "done")


@pytest.mark.integration
def test_query_filters_and_order(mongo_db: Any) -> None:
    audit = AuditTrail(mongo_db)
    t0 = datetime(2025, 3, 1, 8, tzinfo=UTC)
    audit.record("tom", "restart", [R1], {}, "sent", at=t0)
    audit.record("ann", "config_read", [R2], {}, "confirmed", at=t0 + timedelta(hours=1))
    audit.record("tom", "config_write", [R1, R2], {}, "confirmed", at=t0 + timedelta(hours=2))
    audit.record("cli:root", "account_create", [], {"name": "bob"}, "ok", at=t0 + timedelta(days=2))

    assert list(audit.query()["kind"]) == [
        "account_create",
        "config_write",
        "config_read",
        "restart",
    ]
    assert list(audit.query(person="tom")["kind"]) == ["config_write", "restart"]
    assert list(audit.query(relay=R2.upper())["actor"]) == ["tom", "ann"]
    assert list(audit.query(kind="config_read")["actor"]) == ["ann"]
    window = audit.query(since=t0 + timedelta(minutes=30), until=t0 + timedelta(hours=2))
    assert list(window["kind"]) == ["config_read"]
    assert list(audit.query(person="tom", relay=R2)["kind"]) == ["config_write"]
    assert len(audit.query(limit=2)) == 2
    empty = audit.query(person="nobody")
    assert empty.empty and list(empty.columns) == list(audit.query().columns)
    csv = to_csv(audit.query(person="tom")).decode()
    assert csv.splitlines()[0].startswith("at,actor,kind,relays,outcome")
    assert len(csv.splitlines()) == 3
    with pytest.raises(InvalidInput):
        audit.query(relay="not-a-relay")


@pytest.mark.integration
def test_audit_csv_writes_formula_actors_and_details_as_text(mongo_db: Any) -> None:
    audit = AuditTrail(mongo_db)
    audit.record('=HYPERLINK("http://evil.example","x")', "restart", [R1], {}, "refused")
    audit.record("@SUM(1)", "restart", [R1], {}, "refused")
    audit.record("-2+3", "restart", [R1], {}, "refused")
    text = to_csv(audit.query()).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    actors = sorted(row[rows[0].index("actor")] for row in rows[1:])
    assert actors == sorted(['\'=HYPERLINK("http://evil.example","x")', "'@SUM(1)", "'-2+3"])
