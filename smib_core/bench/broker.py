"""A private broker for a benchmark run: Mosquitto when installed, else the embedded one."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smib_core.embedded import broker_command, free_port, port_answers


def _wait(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_answers(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no broker on port {port}")
        time.sleep(0.05)


@contextmanager
def private_broker() -> Iterator[tuple[str, str]]:
    """(uri, name) of a broker that lives for the benchmark only."""
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    with tempfile.TemporaryDirectory(prefix="smib-bench-") as folder:
        port = free_port()
        if binary:
            conf = Path(folder) / "mosquitto.conf"
            conf.write_text(
                f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                "max_queued_messages 0\nmax_inflight_messages 0\n"
            )
            cmd = [binary, "-c", str(conf)]
            name = "mosquitto"
        else:
            cmd = broker_command(Path(folder), port)
            name = "amqtt (embedded)"
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(port)
            yield f"mqtt://127.0.0.1:{port}", name
        finally:
            process.terminate()
            process.wait(10)
