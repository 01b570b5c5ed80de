"""The firmware server of a deployment: one process serves FIRMWARE_PORT (the lease
`firmware-server`), another takes over when it stops, and a port held by some other
program is retried, not fatal, and leaves the lease free."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from smib_core.firmware.server import FirmwareServer
from smib_core.services.worker import FIRMWARE_LEASE, FirmwareService
from smib_core.store.leases import Lease
from tests.servers import free_port

pytestmark = pytest.mark.integration


def _service(db: Any, folder: Path, port: int, owner: str) -> FirmwareService:
    server = FirmwareServer(folder, "127.0.0.1", port)
    return FirmwareService(server, Lease(db, FIRMWARE_LEASE, owner, 7.0))


def test_one_process_serves_and_another_takes_over(mongo_db: Any, tmp_path: Path) -> None:
    port = free_port()
    first = _service(mongo_db, tmp_path, port, "firmware:a:1:x")
    second = _service(mongo_db, tmp_path, port, "firmware:b:2:y")
    first.tick()
    second.tick()
    try:
        assert first.running and not second.running
        assert second.problem is None, "standing by is no problem"
        first.stop()  # gives the lease up
        second.tick()
        assert second.running
        holder = Lease(mongo_db, FIRMWARE_LEASE, "viewer", 1.0).holder()
        assert holder is not None and holder.owner == "firmware:b:2:y"
    finally:
        first.stop()
        second.stop()


def test_a_port_held_by_another_program_is_retried(mongo_db: Any, tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    service = _service(mongo_db, tmp_path, port, "firmware:a:1:x")
    service.start()
    try:
        time.sleep(0.3)
        assert not service.running
        assert service.problem is not None and str(port) in service.problem
        assert Lease(mongo_db, FIRMWARE_LEASE, "viewer", 1.0).holder() is None
        blocker.close()
        deadline = time.monotonic() + 5
        while not service.running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert service.running and service.problem is None
    finally:
        blocker.close()
        service.stop()
