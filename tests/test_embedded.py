"""The embedded broker and database: one per data folder, shared by threads and processes."""

from __future__ import annotations

import json
import queue
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gridfs
import paho.mqtt.client as mqtt
import psutil
import pytest
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.uri_parser import parse_uri

from smib_core import embedded
from smib_core.settings import BrokerAddress, Settings
from smib_core.store.db import connect
from tests.servers import free_port

pytestmark = pytest.mark.integration

Ensure = Callable[[Path], str]
DATABASE = "smib_core.embedded_db"  # in the database server's command line


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "data"
    yield folder
    embedded.stop(folder)


def port_of(uri: str) -> int:
    port = urlsplit(uri).port
    assert port is not None
    return port


def state(folder: Path, stem: str) -> dict[str, object]:
    return dict(json.loads((folder / f"{stem}.json").read_text()))


def servers_for(folder: Path, marker: str) -> list[int]:
    """Pids of live server processes (of the kind `marker` names) serving `folder`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        ours = marker in cmdline and str(folder.resolve()) in cmdline
        if ours and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


def test_database_is_shared_within_and_across_processes(data_dir: Path) -> None:
    first = embedded.ensure_database(data_dir)
    assert embedded.ensure_database(data_dir) == first
    pid = state(data_dir, "embedded-mongo")["pid"]

    code = "import sys, pathlib, smib_core.embedded as e; print(e.ensure_database(pathlib.Path(sys.argv[1])))"  # noqa: E501
    other = subprocess.run(
        [sys.executable, "-c", code, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    assert other.stdout.strip() == first
    assert state(data_dir, "embedded-mongo")["pid"] == pid
    assert servers_for(data_dir, DATABASE) == [pid]


def test_racing_threads_start_one_database(data_dir: Path) -> None:
    start = threading.Barrier(4)
    uris: list[str] = []

    def race() -> None:
        start.wait()
        uris.append(embedded.ensure_database(data_dir))

    threads = [threading.Thread(target=race, name=f"race-{i}") for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(uris) == 4 and len(set(uris)) == 1
    assert servers_for(data_dir, DATABASE) == [state(data_dir, "embedded-mongo")["pid"]]


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


@pytest.mark.parametrize(
    ("ensure", "stem", "marker"),
    [
        (embedded.ensure_database, "embedded-mongo", DATABASE),
        (embedded.ensure_broker, "embedded-broker", "smib_core.embedded"),
    ],
    ids=["database", "broker"],
)
@pytest.mark.parametrize("recorded_pid", ["dead", "not-a-server"])
def test_stale_state_starts_a_new_server(
    data_dir: Path, ensure: Ensure, stem: str, marker: str, recorded_pid: str
) -> None:
    # "not-a-server": the pid was reused by an unrelated live process (here, this test).
    stale = dead_pid() if recorded_pid == "dead" else psutil.Process().pid
    data_dir.mkdir()
    stale_port = free_port()
    (data_dir / f"{stem}.json").write_text(
        json.dumps({"port": stale_port, "pid": stale, "started_at": "2020-01-01T00:00:00+00:00"})
    )

    uri = ensure(data_dir)

    recorded = state(data_dir, stem)
    assert recorded["pid"] != stale and recorded["port"] == port_of(uri)
    assert servers_for(data_dir, marker) == [recorded["pid"]]


def test_pymongo_and_gridfs_work_through_it(data_dir: Path) -> None:
    db = connect(Settings(data_dir=data_dir, mongo_db="smib_test"))
    try:
        db.relays.insert_one({"relay_id": "R-001", "location": "floor 1"})
        assert db.relays.find_one({"relay_id": "R-001"}, {"_id": 0}) == {
            "relay_id": "R-001",
            "location": "floor 1",
        }
        firmware = bytes(range(256)) * 1200
        file_id = gridfs.GridFS(db).put(firmware, filename="fw.bin")
        assert gridfs.GridFS(db).get(file_id).read() == firmware
    finally:
        db.client.close()


def test_broker_carries_a_300_kib_message_qos_1_and_a_burst(data_dir: Path) -> None:
    uri = embedded.broker_uri(Settings(data_dir=data_dir))
    address = BrokerAddress.parse(uri)
    assert (address.host, address.username) == ("127.0.0.1", "smib")
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="embedded-test-sub")
    sub.on_message = lambda _c, _u, msg: received.put(msg)
    sub.on_subscribe = lambda *_: subscribed.set()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="embedded-test-pub")
    for client in (sub, pub):
        client.username_pw_set(address.username, address.password)
    try:
        sub.connect("127.0.0.1", port_of(uri))
        sub.loop_start()
        sub.subscribe("embedded-test/#", qos=1)
        assert subscribed.wait(5)
        pub.connect("127.0.0.1", port_of(uri))
        pub.loop_start()
        big = bytes(range(256)) * 1200  # 300 KiB
        pub.publish("embedded-test/big", big, qos=0)
        pub.publish("embedded-test/ack", b"hello", qos=1).wait_for_publish(5)

        got = {msg.topic: msg.payload for msg in (received.get(timeout=5) for _ in range(2))}
        assert got == {"embedded-test/big": big, "embedded-test/ack": b"hello"}

        for i in range(300):  # a burst: a fleet reporting at once
            pub.publish("embedded-test/burst", str(i), qos=i % 2)
        burst = [received.get(timeout=5).payload for _ in range(300)]  # QoS 0/1 may interleave
        assert sorted(burst, key=int) == [str(i).encode() for i in range(300)]
    finally:
        for client in (pub, sub):
            client.disconnect()
            client.loop_stop()


def test_stop_leaves_nothing_listening(data_dir: Path) -> None:
    ports = [port_of(embedded.ensure_broker(data_dir)), port_of(embedded.ensure_database(data_dir))]
    pids = [state(data_dir, stem)["pid"] for stem in ("embedded-broker", "embedded-mongo")]

    stopped = embedded.stop(data_dir)

    assert len(stopped) == 2
    assert not any(embedded.port_answers(port) for port in ports)
    assert not any(psutil.pid_exists(int(str(pid))) for pid in pids)
    assert not list(data_dir.glob("*.json"))
    assert not any(entry["running"] for entry in embedded.status(data_dir).values())
    assert embedded.stop(data_dir) == []


def test_a_server_that_cannot_start_is_a_clear_error(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "mongo").write_text("not a folder")  # nx-27017 cannot create its data dir

    with pytest.raises(embedded.EmbeddedServerError, match="could not start"):
        embedded.ensure_database(data_dir)
    assert servers_for(data_dir, DATABASE) == []


def test_cli_shows_and_stops_the_servers(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from smib_core.cli import main

    monkeypatch.setenv("SMIB_DATA_DIR", str(data_dir))
    uri = embedded.ensure_broker(data_dir)

    assert main(["embedded", "status", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    address = BrokerAddress.parse(uri)
    assert report["broker"]["running"] and report["broker"]["uri"] == address.uri()
    assert str(address.password) not in out  # shown masked
    assert not report["database"]["running"]

    assert main(["embedded", "stop"]) == 0
    assert capsys.readouterr().out.startswith("stopped MQTT broker (pid ")
    assert main(["embedded", "status"]) == 0
    assert "broker    stopped" in capsys.readouterr().out


def _connect_code(port: int, username: str | None, password: str | None) -> int:
    """The CONNACK reason code the broker gives a client with these credentials."""
    answered = threading.Event()
    codes: list[int] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="embedded-auth-test")

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        codes.append(int(getattr(reason, "value", 0)))
        answered.set()

    client.on_connect = on_connect
    if username is not None:
        client.username_pw_set(username, password)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert answered.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0]


def test_the_broker_accepts_only_its_generated_credentials(data_dir: Path) -> None:
    address = BrokerAddress.parse(embedded.broker_uri(Settings(data_dir=data_dir)))
    saved = state(data_dir, "embedded-broker")
    assert (saved["username"], saved["password"]) == (address.username, address.password)
    assert len(str(address.password)) >= 32
    assert _connect_code(address.port, address.username, address.password) == 0
    assert _connect_code(address.port, None, None) != 0  # anonymous: refused
    assert _connect_code(address.port, "smib", "not-the-password") != 0
    # Found again by the next process: the same credentials, from the state file.
    assert embedded.broker_uri(Settings(data_dir=data_dir)) == (
        f"mqtt://smib:{address.password}@127.0.0.1:{address.port}"
    )
    shown = embedded.status(data_dir)["broker"]["uri"]
    assert str(address.password) not in str(shown) and "smib:••••••@" in str(shown)
    passwd = (data_dir / "embedded-broker.passwd").read_text()
    assert str(address.password) not in passwd and passwd.startswith("smib:$argon2id$")


def test_the_data_folder_is_private(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o755)
    (data_dir / "old.log").write_text("left world-readable by an older version")
    (data_dir / "old.log").chmod(0o644)
    embedded.ensure_broker(data_dir)  # tightens what is there
    embedded.ensure_database(data_dir)
    # Files the database creates after that (one SQLite file per database) are private
    # from their creation: the servers run with umask 077.
    db = connect(Settings(data_dir=data_dir, mongo_db="perm_test"))
    db["accounts"].insert_one({"name": "alice", "hash": "$argon2id$..."})
    db.client.close()
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any("perm_test" in p.name for p in files)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert modes == dict.fromkeys(modes, 0o600)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in data_dir.rglob("*") if p.is_dir())


def test_the_supervisor_restarts_a_killed_database_on_its_port(data_dir: Path) -> None:
    from smib_core.store.db import client_for

    uri = embedded.ensure_database(data_dir)
    credentials = {k: state(data_dir, "embedded-mongo")[k] for k in ("username", "password")}
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    assert port_of(uri) < int(ephemeral[0]), "no outgoing connection can take its port"
    client = client_for(uri)
    supervisor = embedded.EmbeddedSupervisor(Settings(data_dir=data_dir), every_s=0.5)
    supervisor.start()
    try:
        client.smib_test.things.insert_one({"_id": "before"})
        pid = int(str(state(data_dir, "embedded-mongo")["pid"]))
        psutil.Process(pid).kill()  # kill -9
        killed_at = time.monotonic()
        while state(data_dir, "embedded-mongo")["pid"] == pid or not embedded.port_answers(
            port_of(uri)
        ):
            assert time.monotonic() - killed_at < 10, "the database did not come back"
            time.sleep(0.1)
        # The client made before the kill works again, unchanged.
        deadline = time.monotonic() + 10
        while True:
            try:
                client.smib_test.things.insert_one({"_id": "after"})
                break
            except PyMongoError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        back_in = time.monotonic() - killed_at
        assert back_in < 8, f"answering again after {back_in:.1f} s"
        assert sorted(d["_id"] for d in client.smib_test.things.find()) == ["after", "before"]
        recorded = state(data_dir, "embedded-mongo")
        assert recorded["port"] == port_of(uri) and recorded["pid"] != pid
        assert supervisor.restarts == 1
        # The same credentials, kept by the restart: the client above still uses them.
        assert {k: recorded[k] for k in credentials} == credentials
        assert embedded.ensure_database(data_dir) == uri
    finally:
        supervisor.stop()
        client.close()


def test_a_taken_port_moves_the_restarted_server(data_dir: Path) -> None:
    uri = embedded.ensure_database(data_dir)
    pid = int(str(state(data_dir, "embedded-mongo")["pid"]))
    psutil.Process(pid).kill()
    squatter = socket.socket()
    try:
        deadline = time.monotonic() + 5
        while True:  # someone else takes the port meanwhile
            try:
                squatter.bind(("127.0.0.1", port_of(uri)))
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        squatter.listen()
        moved = embedded.revive("database", data_dir)
        assert moved is not None and moved != uri
        assert state(data_dir, "embedded-mongo")["port"] == port_of(moved)
    finally:
        squatter.close()


def test_the_supervisor_leaves_configured_servers_and_stopped_ones_alone(data_dir: Path) -> None:
    configured = embedded.EmbeddedSupervisor(
        Settings(data_dir=data_dir, mqtt_uri="mqtt://h:1", mongo_uri="mongodb://h/")
    )
    configured.start()
    assert configured._thread is None  # nothing to supervise
    configured.stop()

    embedded.ensure_database(data_dir)
    embedded.stop(data_dir)  # stopped on purpose: no state file, nothing to restart
    supervisor = embedded.EmbeddedSupervisor(Settings(data_dir=data_dir))
    supervisor.check()
    assert servers_for(data_dir, DATABASE) == [] and supervisor.restarts == 0


def test_the_supervisor_restarts_a_killed_broker_on_its_port(data_dir: Path) -> None:
    uri = embedded.ensure_broker(data_dir)
    supervisor = embedded.EmbeddedSupervisor(
        Settings(data_dir=data_dir, mongo_uri="mongodb://elsewhere/"), every_s=0.5
    )
    supervisor.start()
    try:
        pid = int(str(state(data_dir, "embedded-broker")["pid"]))
        psutil.Process(pid).kill()
        deadline = time.monotonic() + 15
        while supervisor.restarts == 0:
            assert time.monotonic() < deadline, "the broker was not restarted"
            time.sleep(0.1)
        assert embedded.status(data_dir)["broker"]["running"]
        assert state(data_dir, "embedded-broker")["port"] == port_of(uri)
        assert not (data_dir / "embedded-mongo.json").exists(), "MONGO_URI is set: no database"
    finally:
        supervisor.stop()


def _refused(client: Any, code: int) -> None:
    with pytest.raises(OperationFailure) as refused:
        client.smib_test.things.find_one()
    assert refused.value.code == code


def test_the_database_accepts_only_its_generated_credentials(data_dir: Path) -> None:
    from smib_core.store.db import client_for

    uri = embedded.mongo_uri(Settings(data_dir=data_dir))
    parsed = parse_uri(uri)
    password = str(parsed["password"])
    assert parsed["username"] == "smib" and len(password) >= 32
    assert parsed["options"]["authSource"] == "admin"
    assert parsed["options"]["authMechanism"] == "SCRAM-SHA-256"
    saved = state(data_dir, "embedded-mongo")
    assert (saved["username"], saved["password"]) == ("smib", password)
    assert stat.S_IMODE((data_dir / "embedded-mongo.json").stat().st_mode) == 0o600
    verifier = data_dir / "embedded-mongo.scram"
    assert stat.S_IMODE(verifier.stat().st_mode) == 0o600
    assert password not in verifier.read_text()  # the server holds no password

    port = port_of(uri)
    owner = client_for(uri)
    anonymous = client_for(f"mongodb://127.0.0.1:{port}/")
    wrong = client_for(uri.replace(password, "not-the-password"))
    stranger = client_for(uri.replace("smib:", "root:"))
    try:
        assert anonymous.admin.command("ping")["ok"] == 1  # the handshake is open
        _refused(anonymous, 13)
        with pytest.raises(OperationFailure) as refused:
            anonymous.smib_test.things.insert_one({"_id": "anonymous"})
        assert refused.value.code == 13
        with pytest.raises(OperationFailure):
            anonymous.list_database_names()
        _refused(wrong, 18)
        _refused(stranger, 18)

        things = owner.smib_test.things
        things.insert_one({"_id": "a", "n": 1})
        things.update_one({"_id": "a"}, {"$inc": {"n": 1}})
        things.insert_one({"_id": "b"})
        things.delete_one({"_id": "b"})
        assert list(things.find()) == [{"_id": "a", "n": 2}]  # no anonymous insert
        firmware = bytes(range(256)) * 1200
        file_id = gridfs.GridFS(owner.smib_test).put(firmware, filename="fw.bin")
        assert gridfs.GridFS(owner.smib_test).get(file_id).read() == firmware
    finally:
        for client in (owner, anonymous, wrong, stranger):
            client.close()
    # Found again by the next process: the same URI, from the state file.
    assert embedded.mongo_uri(Settings(data_dir=data_dir)) == uri


def test_cli_status_masks_the_database_password(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from smib_core.cli import main

    monkeypatch.setenv("SMIB_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MONGO_URI", raising=False)
    password = str(parse_uri(embedded.ensure_database(data_dir))["password"])

    assert main(["embedded", "status", "--json"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)["database"]
    assert shown["running"] and shown["uri"].startswith("mongodb://smib:••••••@127.0.0.1:")
    assert main(["embedded", "status"]) == 0
    out += capsys.readouterr().out
    assert password not in out


def test_a_database_an_older_version_left_without_credentials_is_replaced(
    data_dir: Path,
) -> None:
    """An upgrade: the folder's database runs as before (nx-27017 itself, anonymous)."""
    data_dir.mkdir(mode=0o700)
    port = free_port()
    old_main = "from nx_27017.nx_27017 import main; main()"
    pid_file = data_dir / "embedded-mongo.pid"
    args = ["--data-dir", str(data_dir / "mongo"), "-p", str(port), "--pid-file", str(pid_file)]
    args += ["--log-file", str(data_dir / "embedded-mongo.log")]
    old = subprocess.Popen(
        [sys.executable, "-c", old_main, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not embedded.port_answers(port):
            assert time.monotonic() < deadline and old.poll() is None
            time.sleep(0.05)
        (data_dir / "embedded-mongo.json").write_text(
            json.dumps({"port": port, "pid": old.pid, "started_at": "2026-01-01T00:00:00+00:00"})
        )

        uri = embedded.ensure_database(data_dir)

        assert old.wait(10) is not None  # ended, not left beside the new one
        assert port_of(uri) == port and parse_uri(uri)["username"] == "smib"
        assert servers_for(data_dir, DATABASE) == [state(data_dir, "embedded-mongo")["pid"]]
        from smib_core.store.db import client_for

        anonymous = client_for(f"mongodb://127.0.0.1:{port}/")
        try:
            _refused(anonymous, 13)
        finally:
            anonymous.close()
    finally:
        if old.poll() is None:
            old.kill()
            old.wait(10)
