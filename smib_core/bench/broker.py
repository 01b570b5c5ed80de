"""A private broker for a benchmark run: Mosquitto when installed, else the embedded one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no broker on port {port}")


@contextmanager
def private_broker() -> Iterator[tuple[str, str]]:
    """(uri, name) of a broker that lives for the benchmark only."""
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    with tempfile.TemporaryDirectory(prefix="smib-bench-") as folder:
        port = _free_port()
        if binary:
            conf = Path(folder) / "mosquitto.conf"
            conf.write_text(
                f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                "max_queued_messages 0\nmax_inflight_messages 0\n"
            )
            cmd = [binary, "-c", str(conf)]
            name = "mosquitto"
        else:
            import sys

            cmd = [
                sys.executable,
                "-m",
                "smib_core.embedded",
                "broker",
                "--port",
                str(port),
                "--data-dir",
                folder,
            ]
            name = "amqtt (embedded)"
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(port)
            yield f"mqtt://127.0.0.1:{port}", name
        finally:
            process.terminate()
            process.wait(10)
