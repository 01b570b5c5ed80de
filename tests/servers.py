"""Real servers for tests: Mosquitto and the embedded MongoDB-compatible database.

Each starts on a free loopback port in its own temporary folder and is stopped by the
fixture that started it. `Mosquitto.stop()`/`start()` let a test kill the broker mid-run.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Mosquitto:
    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.folder / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "persistence false\nmax_inflight_messages 0\nmax_queued_messages 100000\n"
        )
        log = (self.folder / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@dataclass
class EmbeddedMongo:
    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> None:
        log = (self.folder / "nx.log").open("ab")
        entry = "from nx_27017.nx_27017 import main; main()"
        files = [
            "--pid-file",
            str(self.folder / "nx.pid"),
            "--log-file",
            str(self.folder / "nx.log"),
        ]
        cmd = [sys.executable, "-c", entry, "--data-dir", str(self.folder), "-p", str(self.port)]
        cmd += files
        self.process = subprocess.Popen(cmd, stdout=log, stderr=log)
        wait_for_port(self.port, timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None
