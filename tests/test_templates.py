"""Configuration templates: saved validated, unique by name, secrets kept but shown masked."""

from __future__ import annotations

from typing import Any

import pytest

from smib_core.errors import InvalidInput
from smib_core.store.audit import AuditTrail
from smib_core.store.templates import TemplateStore, check_name

pytestmark = pytest.mark.integration

WIFI = {"netStaChan": "6", "netStaSSID": "floor-2", "netStaPwd": "s3cret-wifi"}


def test_save_keeps_typed_fields_and_secret_for_rollout(mongo_db: Any) -> None:
    store = TemplateStore(mongo_db)
    saved = store.save("  Floor 2 WiFi ", "net", WIFI, actor="tina")
    assert saved.name == "Floor 2 WiFi"
    got = store.get("floor 2 wifi")
    assert got.fields == {"netStaChan": 6, "netStaSSID": "floor-2", "netStaPwd": "s3cret-wifi"}
    assert got.created_by == "tina" and got.created_at is not None
    assert "s3cret" not in repr(got)


def test_list_and_frame_show_secrets_masked(mongo_db: Any) -> None:
    store = TemplateStore(mongo_db)
    store.save("wifi", "net", WIFI, actor="tina")
    store.save("broker", "mqtt", {"mqttURI": "mqtt://ops:hunter22@mq:1883"}, actor="tina")
    assert [t.name for t in store.list()] == ["broker", "wifi"]
    frame = store.frame()
    text = frame.to_csv()
    assert "s3cret" not in text and "hunter22" not in text
    assert "••••••" in frame.loc[frame["name"] == "wifi", "fields"].iloc[0]
    assert "mqtt://ops:••••••@mq:1883" in text
    assert store.get("wifi").describe() == (
        "net: netStaChan=6, netStaSSID=floor-2, netStaPwd=••••••"
    )


def test_duplicate_name_refused_whatever_the_case(mongo_db: Any) -> None:
    store = TemplateStore(mongo_db)
    store.save("Coms fast", "coms", {"comsRateMs": 100}, actor="tina")
    with pytest.raises(InvalidInput, match="exists already"):
        store.save("coms FAST", "coms", {"comsRateMs": 200}, actor="tom")
    assert store.get("coms fast").fields == {"comsRateMs": 100}


@pytest.mark.parametrize(
    ("comp", "fields", "reason"),
    [
        ("net", {"netStaChan": 99}, "1..14"),
        ("net", {"nope": 1}, "no field"),
        ("app", {"version": "v9"}, "read only"),
        ("net", {}, "at least one field"),
        ("radio", {"x": 1}, "unknown component"),
        ("ota", {"otaURL": "http://fw:8808/no-slash"}, "end with"),
    ],
)
def test_invalid_template_refused_and_not_stored(
    mongo_db: Any, comp: str, fields: dict[str, Any], reason: str
) -> None:
    store = TemplateStore(mongo_db)
    with pytest.raises(InvalidInput, match=reason):
        store.save("bad", comp, fields, actor="tina")
    assert store.list() == []


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tab\there", None])
def test_bad_names_refused(name: object) -> None:
    with pytest.raises(InvalidInput):
        check_name(name)


def test_save_and_delete_are_audited_masked(mongo_db: Any) -> None:
    audit = AuditTrail(mongo_db)
    store = TemplateStore(mongo_db, audit)
    store.save("wifi", "net", WIFI, actor="tina")
    store.delete("WIFI", actor="tom")
    assert store.list() == []
    with pytest.raises(InvalidInput, match="no template"):
        store.delete("wifi", actor="tom")
    records = audit.query()
    assert list(records["kind"]) == ["template_delete", "template_save"]
    assert list(records["actor"]) == ["tom", "tina"]
    assert not records.to_csv().count("s3cret")
    assert "netStaChan" in records["detail"].iloc[1]
