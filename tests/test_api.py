"""The HTTP API against a served app (`streamlit run app.py`): every endpoint, every
authentication failure, the rate limit, the audit trail, and the live stream."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from smib_core.store.tokens import TokenStore
from tests.api_server import STREAMLIT_RUN, Served, serve
from tests.servers import EmbeddedMongo, Mosquitto

pytestmark = pytest.mark.integration

RATE = 40  # requests per token per minute on the served app


@pytest.fixture(scope="module")
def api(
    mosquitto: Mosquitto, embedded_mongo: EmbeddedMongo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Served, Any]]:
    from smib_core.sim.fleet import Fleet

    fleet = Fleet(mosquitto.uri, relays=3, seed=21, reboot_s=0.5, events_per_minute=0)
    fleet.start()
    try:
        with serve(
            STREAMLIT_RUN,
            embedded_mongo.uri,
            mosquitto.uri,
            tmp_path_factory.mktemp("api"),
            env={"SMIB_API_RATE_PER_MIN": str(RATE)},
        ) as served:
            yield served, fleet
    finally:
        fleet.stop()


@pytest.fixture
def served(api: tuple[Served, Any]) -> Served:
    return api[0]


@pytest.fixture
def relays(api: tuple[Served, Any]) -> list[str]:
    return list(api[1].relay_ids)


# --- authentication ------------------------------------------------------------------


def test_operations_endpoints_need_no_token(served: Served) -> None:
    with served.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "broker": True, "database": True}
        http.get("/api/v1/boards")  # one 401 to count
        text = http.get("/metrics").text
    for name in (
        "smib_messages_in_total",
        "smib_messages_out_total",
        "smib_boards_online",
        "smib_reply_latency_seconds_bucket",
        'smib_api_requests_total{status="401"}',
        'smib_collection_slots_total{result="read"}',
        'smib_rollouts{state="running"}',
    ):
        assert name in text, name


def test_openapi_docs_are_served(served: Served) -> None:
    with served.client() as http:
        spec = http.get("/api/v1/openapi.json").json()
        assert http.get("/api/v1/docs").status_code == 200
    paths = set(spec["paths"])
    assert {"/boards", "/boards/{relay}/config/{component}", "/stream", "/meters/history"} <= paths


@pytest.mark.parametrize(
    "header",
    [None, "Basic YWRtaW46eA==", "Bearer", "Bearer smib_not-a-real-token", "Bearer nope"],
)
def test_missing_malformed_or_wrong_token_is_401(served: Served, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    with served.client() as http:
        response = http.get("/api/v1/boards", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_expired_revoked_and_disabled_tokens_are_401(served: Served) -> None:
    db = served.db()
    past = datetime.now(UTC) - timedelta(days=3)
    expired, _ = TokenStore(db, clock=lambda: past).create("old", "manager", "test", 1)
    revoked, info = TokenStore(db).create("gone", "manager", "test")
    with served.client(revoked) as http:
        assert http.get("/api/v1/boards").status_code == 200
    TokenStore(db).revoke(info.id, "test")
    from smib_core.store.accounts import AccountStore

    victim = "victim" + str(int(time.time() * 1000) % 100000)
    AccountStore(db).create(victim, "manager", "correct-horse-battery", "test")
    disabled, _ = TokenStore(db).create("soon disabled", victim, "test")
    with served.client(disabled) as http:
        assert http.get("/api/v1/boards").status_code == 200
    AccountStore(db).disable(victim, "test")
    for token in (expired, revoked, disabled):
        with served.client(token) as http:
            assert http.get("/api/v1/boards").status_code == 401
    db.client.close()


def test_role_change_takes_effect_on_the_next_request(served: Served) -> None:
    from smib_core.store.accounts import AccountStore

    db = served.db()
    name = "mover" + str(int(time.time() * 1000) % 100000)
    AccountStore(db).create(name, "manager", "correct-horse-battery", "test")
    token = served.token(name)
    with served.client(token) as http:
        assert http.get("/api/v1/boards").status_code == 200
        AccountStore(db).set_role(name, "analyst", "test")
        refused = http.get("/api/v1/boards")
    assert refused.status_code == 403
    assert "analyst role does not allow" in refused.json()["detail"]
    db.client.close()


def test_a_role_lacking_the_permission_is_403_and_audited(
    served: Served, relays: list[str]
) -> None:
    with served.client(served.token("manager")) as http:
        refused = http.post(f"/api/v1/boards/{relays[0]}/restart")
        assert (
            http.post(
                f"/api/v1/boards/{relays[0]}/config/mqtt", json={"fields": {"mqttQOS": 1}}
            ).status_code
            == 403
        )
        assert http.get("/api/v1/rollouts").status_code == 403
        assert http.get("/api/v1/meters/history?start=2024-01-01&end=2024-01-02").status_code == 403
    assert refused.status_code == 403
    assert "manager role does not allow you to restart boards" in refused.json()["detail"]
    db = served.db()
    record = db["audit"].find_one({"actor": "manager", "kind": "restart"}, sort=[("at", -1)])
    db.client.close()
    assert record is not None and record["outcome"] == "refused"


def test_requests_beyond_the_rate_are_429_per_token(served: Served) -> None:
    busy, calm = served.token("manager"), served.token("manager")
    with served.client(busy) as http:
        statuses = [http.get("/api/v1/boards").status_code for _ in range(RATE + 5)]
        last = http.get("/api/v1/boards")
    assert statuses[:RATE] == [200] * RATE
    assert 429 in statuses[RATE:]
    assert last.status_code == 429 and int(last.headers["retry-after"]) >= 1
    with served.client(calm) as http:  # another token is not slowed by the busy one
        assert http.get("/api/v1/boards").status_code == 200


# --- boards ----------------------------------------------------------------------------


def test_live_config_asks_the_board_and_boards_list_what_was_heard(
    served: Served, relays: list[str]
) -> None:
    with served.client(served.token("manager")) as http:
        live = http.get(f"/api/v1/boards/{relays[0]}/config/app")
        boards = http.get("/api/v1/boards").json()
        mqtt = http.get(f"/api/v1/boards/{relays[0]}/config/mqtt").json()
    assert live.status_code == 200
    assert live.json()["relay"] == relays[0] and live.json()["fields"]["version"]
    row = next(b for b in boards if b["relay"] == relays[0])
    assert row["online"] is True and row["version"] == live.json()["fields"]["version"]
    assert row["last_seen"] is not None and set(row) >= {"cabinet", "location", "firmware"}
    if "mqttURI" in mqtt["fields"]:
        assert "correct" not in json.dumps(mqtt)  # secrets masked
    db = served.db()
    record = db["audit"].find_one({"actor": "manager", "kind": "config_read"}, sort=[("at", -1)])
    db.client.close()
    assert record is not None and record["outcome"] == "confirmed"


def test_a_board_that_does_not_answer_is_504_and_bad_input_422(served: Served) -> None:
    with served.client(served.token("manager")) as http:
        silent = http.get("/api/v1/boards/0000deadbeef/config/app")
        bad_relay = http.get("/api/v1/boards/not-a-relay/config/app")
        bad_comp = http.get("/api/v1/boards/0000deadbeef/config/nonsense")
    assert silent.status_code == 504 and "did not answer" in silent.json()["detail"]
    assert bad_relay.status_code == 422
    assert bad_comp.status_code == 422


def test_config_change_is_validated_written_and_read_back_per_field(
    served: Served, relays: list[str]
) -> None:
    with served.client(served.token("tech")) as http:
        refused = http.post(
            f"/api/v1/boards/{relays[1]}/config/coms", json={"fields": {"comsAddr": 500}}
        )
        before = http.get(f"/api/v1/boards/{relays[1]}/config/coms").json()["fields"]
        wanted = 7 if int(before["comsAddr"]) != 7 else 8
        changed = http.post(
            f"/api/v1/boards/{relays[1]}/config/coms", json={"fields": {"comsAddr": wanted}}
        )
        again = http.post(
            f"/api/v1/boards/{relays[1]}/config/coms", json={"fields": {"comsAddr": wanted}}
        )
    assert refused.status_code == 422
    assert "SAS address" in refused.json()["detail"]
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["outcome"] == "confirmed", body
    assert body["fields"] == [
        {
            "field": "comsAddr",
            "before": str(before["comsAddr"]),
            "after": str(wanted),
            "reported": str(wanted),
            "confirmed": True,
        }
    ]
    assert again.json()["outcome"] == "unchanged"
    db = served.db()
    record = db["audit"].find_one({"_id": __import__("bson").ObjectId(body["audit_id"])})
    db.client.close()
    assert record["actor"] == "tech" and record["kind"] == "config_write"
    assert record["outcome"] == "confirmed"


def test_meters_are_read_now_and_decoded(served: Served, relays: list[str]) -> None:
    with served.client(served.token("manager")) as http:
        response = http.post(f"/api/v1/boards/{relays[0]}/meters")
    assert response.status_code == 200, response.text
    body = response.json()
    codes = {m["code"]: m for m in body["meters"]}
    assert body["relay"] == relays[0] and len(codes) >= 5
    assert all(isinstance(m["value"], int) for m in codes.values() if m["value"] is not None)
    assert all(m["name"] for m in codes.values())


def test_restart_waits_for_the_board_to_answer_again(served: Served, relays: list[str]) -> None:
    with served.client(served.token("tech"), timeout=60) as http:
        response = http.post(f"/api/v1/boards/{relays[2]}/restart", params={"timeout_s": 20})
    assert response.status_code == 200, response.text
    assert response.json()["confirmed"] is True
    db = served.db()
    record = db["audit"].find_one({"actor": "tech", "kind": "restart"}, sort=[("at", -1)])
    db.client.close()
    assert record["outcome"] == "confirmed"


# --- history, events, rollouts -----------------------------------------------------------


@pytest.fixture(scope="module")
def history(api: tuple[Served, Any]) -> dict[str, Any]:
    from smib_core.store.meters import MeterStore
    from smib_core.store.registry import Registry

    served = api[0]
    db = served.db()
    registry = Registry(db)
    location = registry.add_location("Main floor", actor="test")
    cabinet = registry.add_cabinet(
        {
            "name": '=HYPERLINK("http://evil","x")',
            "location_id": location.id,
            "denomination": 0.05,
            "relay": "ab0000000001",
        },
        actor="test",
    )
    start = datetime(2024, 5, 13, tzinfo=UTC)
    store = MeterStore(db)
    for n in range(24):
        store.insert_snapshot(
            "ab0000000001",
            start + timedelta(minutes=5 * n),
            cabinet_id=cabinet.id,
            cabinet=cabinet.name,
            location_id=location.id,
            location="Main floor",
            denomination=0.05,
            meters={"0000": 1000 + 10 * n, "0001": 900 + 9 * n},
        )
    db.client.close()
    return {"location": location.id, "start": start, "rows": 24}


def test_meter_history_as_json_csv_and_parquet(served: Served, history: dict[str, Any]) -> None:
    params = {
        "start": history["start"].isoformat(),
        "end": (history["start"] + timedelta(days=1)).isoformat(),
        "location": history["location"],
        "granularity": "raw",
    }
    with served.client(served.token("analyst")) as http:
        as_json = http.get("/api/v1/meters/history", params=params)
        as_csv = http.get("/api/v1/meters/history", params={**params, "format": "csv"})
        as_parquet = http.get("/api/v1/meters/history", params={**params, "format": "parquet"})
        backwards = http.get("/api/v1/meters/history", params={**params, "end": params["start"]})
    assert as_json.status_code == 200
    rows = as_json.json()
    assert len(rows) == history["rows"]
    assert as_csv.headers["content-type"].startswith("text/csv")
    lines = as_csv.text.strip().splitlines()
    assert len(lines) == history["rows"] + 1
    assert "'=HYPERLINK" in as_csv.text and ",=HYPERLINK" not in as_csv.text
    table = pq.read_table(io.BytesIO(as_parquet.content))
    assert table.num_rows == history["rows"]
    assert backwards.status_code == 422
    db = served.db()
    exports = list(db["audit"].find({"actor": "analyst", "kind": "export"}))
    db.client.close()
    assert len(exports) >= 3


def test_events_are_listed_newest_first(served: Served) -> None:
    from smib_core.protocol import EventMessage
    from smib_core.store.events import EventStore

    db = served.db()
    store = EventStore(db)
    now = datetime.now(UTC)
    for n, code in enumerate(("11", "12")):
        message = EventMessage("ab0000000002", "evt", "sas/gy/server", code=code, name=f"e{n}")
        store.record(message, received_at=now - timedelta(minutes=10 - n))
    db.client.close()
    with served.client(served.token("manager")) as http:
        response = http.get("/api/v1/events", params={"relay": "ab0000000002"})
        refused_with = served.token("analyst")
    assert response.status_code == 200
    codes = [row["code"] for row in response.json()]
    assert codes == ["12", "11"]
    with served.client(refused_with) as http:
        assert http.get("/api/v1/events").status_code == 403


def test_rollouts_are_created_followed_paused_resumed_and_cancelled(
    served: Served, relays: list[str]
) -> None:
    from smib_core.store.firmware import FirmwareLibrary

    db = served.db()
    firmware = FirmwareLibrary(db).add(
        b"\xe9" + bytes(2047), filename="api.bin", product="cloudy", version="v9.9.9", actor="t"
    )
    db.client.close()
    with served.client(served.token("tech")) as http:
        missing = http.post(
            "/api/v1/rollouts", json={"firmware_id": "0" * 24, "relays": relays[:1]}
        )
        created = http.post(
            "/api/v1/rollouts",
            json={"firmware_id": firmware.id, "relays": relays[:2], "batch_size": 1},
        )
        assert created.status_code == 201, created.text
        rollout_id = created.json()["id"]
        followed = http.get(f"/api/v1/rollouts/{rollout_id}").json()
        listed = http.get("/api/v1/rollouts").json()
        paused = http.post(f"/api/v1/rollouts/{rollout_id}/pause").json()
        resumed = http.post(f"/api/v1/rollouts/{rollout_id}/resume").json()
        cancelled = http.post(f"/api/v1/rollouts/{rollout_id}/cancel").json()
        unknown = http.get("/api/v1/rollouts/nope")
        bad_action = http.post(f"/api/v1/rollouts/{rollout_id}/explode")
    assert missing.status_code == 422
    assert [b["relay"] for b in followed["boards"]] == relays[:2]
    assert any(r["id"] == rollout_id for r in listed)
    assert paused["state"] == "paused"
    assert resumed["state"] in ("pending", "running")
    assert cancelled["state"] == "cancelled"
    assert unknown.status_code == 404
    assert bad_action.status_code == 422


# --- the live stream ---------------------------------------------------------------------


class StreamReader(threading.Thread):
    """Reads one SSE client's events until one is of the component `until` or the
    client is closed."""

    def __init__(self, served: Served, token: str, params: dict[str, Any], until: str) -> None:
        super().__init__()
        self.client = served.client(token, timeout=30)
        self.params, self.until = params, until
        self.events: list[dict[str, Any]] = []
        self.status = 0
        self.ended = ""

    def run(self) -> None:
        try:
            with self.client.stream("GET", "/api/v1/stream", params=self.params) as response:
                self.status = response.status_code
                event = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        self.events.append({"event": event, **json.loads(line[6:])})
                        if self.events[-1].get("component") == self.until:
                            return
        except Exception as exc:  # closed from the test: that is how it leaves
            self.ended = type(exc).__name__

    def close(self) -> None:
        self.client.close()


def _stream_clients(served: Served) -> float:
    for line in httpx.get(f"{served.url}/metrics", timeout=5).text.splitlines():
        if line.startswith("smib_stream_clients "):
            return float(line.split()[1])
    return -1.0


def _wait_for(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_two_stream_clients_one_disconnects_the_other_keeps_receiving(
    served: Served, relays: list[str]
) -> None:
    token = served.token("manager")
    params = {"relay": relays[0], "type": "config"}
    before = _stream_clients(served)
    # The served app's worker asks every board for `cfg app` too (presence): the
    # streams may carry more `app` answers than ours, never another component.
    leaving = StreamReader(served, token, params, until="never")
    staying = StreamReader(served, token, params, until="net")
    leaving.start()
    staying.start()
    _wait_for(lambda: _stream_clients(served) == before + 2)
    with served.client(token) as http:
        answered = http.get(f"/api/v1/boards/{relays[0]}/config/app")  # heard by both
        assert answered.status_code == 200, answered.text
        http.get(f"/api/v1/boards/{relays[1]}/config/app")  # filtered out by relay
        http.post(f"/api/v1/boards/{relays[0]}/meters")  # filtered out by type
        _wait_for(lambda: leaving.events and staying.events)
        leaving.close()  # one client goes away
        leaving.join(10)
        _wait_for(lambda: _stream_clients(served) == before + 1)  # the server let it go
        http.get(f"/api/v1/boards/{relays[0]}/config/net")  # only the other one remains
    staying.join(20)
    assert not staying.is_alive() and staying.status == 200
    assert {(e["relay"], e["component"]) for e in leaving.events} == {(relays[0], "app")}
    heard = [(e["relay"], e["component"]) for e in staying.events]
    assert set(heard[:-1]) == {(relays[0], "app")} and heard[-1] == (relays[0], "net")
    assert all(e["event"] == "config" for e in staying.events)
    staying.close()
    _wait_for(lambda: _stream_clients(served) == before)
