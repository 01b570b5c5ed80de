"""`mqtts://` for real: a Mosquitto with a TLS listener whose certificate a test CA
signed (made here with the openssl command). The console's bus, the simulated fleet and
a `smib` command reach boards through it when `MQTT_CA_FILE` names that CA; without it
the certificate is refused and nothing connects."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smib_core import protocol
from smib_core.bus import DeviceBus
from smib_core.cli import main
from smib_core.errors import InvalidInput
from smib_core.protocol import ConfigReply
from smib_core.settings import Settings
from smib_core.sim.fleet import Fleet
from tests.servers import MOSQUITTO, EmbeddedMongo, free_port, wait_for_port
from tests.test_bus import make_topics

pytestmark = pytest.mark.integration

LEAF_EXTENSIONS = """subjectAltName = IP:127.0.0.1
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def make_certificates(folder: Path) -> None:
    """ca.pem (a test CA) and server.pem/server.key for 127.0.0.1, signed by it."""
    openssl(
        folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=SMIB test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl(
        folder, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    (folder / "leaf.ext").write_text(LEAF_EXTENSIONS)
    openssl(
        folder, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "leaf.ext",
    )  # fmt: skip


@dataclass
class TlsBroker:
    plain_port: int
    tls_port: int
    ca_file: Path

    @property
    def plain_uri(self) -> str:
        return f"mqtt://127.0.0.1:{self.plain_port}"

    @property
    def tls_uri(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the test certificates")
    folder = tmp_path_factory.mktemp("mosquitto-tls")
    make_certificates(folder)
    broker = TlsBroker(free_port(), free_port(), folder / "ca.pem")
    (folder / "mosquitto.conf").write_text(
        f"listener {broker.plain_port} 127.0.0.1\n"
        f"listener {broker.tls_port} 127.0.0.1\n"
        f"cafile {folder / 'ca.pem'}\ncertfile {folder / 'server.pem'}\n"
        f"keyfile {folder / 'server.key'}\n"
        "allow_anonymous true\npersistence false\n" + ("user root\n" if os.geteuid() == 0 else "")
        # as root, mosquitto would become the `mosquitto` user, who cannot read pytest's
        # private folders (where the certificates are)
    )
    log = (folder / "mosquitto.log").open("ab")
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(folder / "mosquitto.conf")], stdout=log, stderr=log
    )
    try:
        wait_for_port(broker.plain_port)
        wait_for_port(broker.tls_port)
        yield broker
    finally:
        process.kill()
        process.wait(10)
        log.close()


def test_the_bus_and_the_fleet_talk_through_tls_with_the_casino_ca(
    tls_broker: TlsBroker, topic_prefix: str
) -> None:
    topics = make_topics(topic_prefix)
    context = Settings(mqtt_ca_file=tls_broker.ca_file).mqtt_tls_context()
    assert context is not None
    with (
        Fleet(tls_broker.tls_uri, topics, relays=2, seed=3, tls_context=context) as fleet,
        DeviceBus(tls_broker.tls_uri, topics, tls_context=context) as bus,
    ):
        assert bus.wait_connected(10)
        relay = fleet.relay_ids[0]
        reply = bus.request(relay, protocol.config_read("app"), timeout=5)
        assert isinstance(reply, ConfigReply) and reply.fields.get("version")


def test_without_the_ca_the_broker_certificate_is_refused(
    tls_broker: TlsBroker, topic_prefix: str
) -> None:
    with DeviceBus(tls_broker.tls_uri, make_topics(topic_prefix)) as bus:  # system CAs
        assert not bus.wait_connected(2)
        assert bus.stats().messages_out == 0


def test_a_cli_command_uses_mqtt_ca_file(
    tls_broker: TlsBroker,
    topic_prefix: str,
    embedded_mongo: EmbeddedMongo,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    topics = make_topics(topic_prefix)
    env = {
        "MQTT_URI": tls_broker.tls_uri,
        "MQTT_CA_FILE": str(tls_broker.ca_file),
        "MQTT_PUB_TOPIC": topics.pub,
        "MQTT_CFG_TOPIC": topics.cfg,
        "MQTT_SUB_TOPIC": topics.sub,
        "MQTT_GLI_TOPIC": topics.gli,
        "MONGO_URI": embedded_mongo.uri,
        "MONGO_DB": f"tls_{topic_prefix.strip('/').replace('/', '_')}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with Fleet(tls_broker.plain_uri, topics, relays=1, seed=4) as fleet:
        assert main(["version", fleet.relay_ids[0], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == fleet.board(fleet.relay_ids[0]).version


def test_a_missing_or_unusable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not a file"):
        Settings(mqtt_ca_file=tmp_path / "nowhere.pem").mqtt_tls_context()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(InvalidInput, match="holds no usable CA"):
        Settings(mqtt_ca_file=junk).mqtt_tls_context()
    assert Settings.from_env({"MQTT_CA_FILE": str(junk)}).mqtt_ca_file == junk
    assert Settings.from_env({}).mqtt_tls_context() is None
