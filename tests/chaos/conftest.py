"""One deployment per chaos module: Mosquitto, the embedded database, 20 strict
simulated boards, two workers. Each test leaves it whole again for the next."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import Deployment, deployment


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder: Path = tmp_path_factory.mktemp("chaos")
    with deployment(folder) as running:
        running.register_fleet()
        running.start_worker("worker-a")
        running.start_worker("worker-b")
        yield running
