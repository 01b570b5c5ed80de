"""A served SMIB Console (`streamlit run app.py`) for HTTP tests: its own database on the
shared embedded server, the shared Mosquitto, a small simulated fleet, and helpers to
make accounts and API tokens directly in its database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct-horse-battery"
ROLES = {"admin": "admin", "tech": "technician", "manager": "manager", "analyst": "analyst"}


@dataclass
class Served:
    url: str
    mongo_uri: str
    db_name: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    def db(self) -> Any:
        from pymongo import MongoClient

        return MongoClient(self.mongo_uri, tz_aware=True)[self.db_name]

    def token(self, account: str = "admin", **options: Any) -> str:
        from smib_core.store.tokens import TokenStore

        db = self.db()
        try:
            token, _ = TokenStore(db).create(
                f"test {uuid.uuid4().hex[:6]}", account, "test", **options
            )
        finally:
            db.client.close()
        return token

    def client(self, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def log(self) -> str:
        return (self.data_dir / "server.log").read_text(errors="replace")[-5000:]


def create_accounts(mongo_uri: str, db_name: str) -> None:
    from argon2 import PasswordHasher
    from pymongo import MongoClient

    from smib_core.store.accounts import AccountStore

    client: Any = MongoClient(mongo_uri, tz_aware=True)
    accounts = AccountStore(
        client[db_name], hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    for name, role in ROLES.items():
        accounts.create(name, role, PASSWORD, actor="test-setup")
    client.close()


def wait_ready(
    url: str, process: subprocess.Popen[bytes], timeout: float = 90.0, path: str = "/readyz"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}{path}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout} s")


@contextmanager
def serve(
    command: list[str],
    mongo_uri: str,
    broker_uri: str,
    data_dir: Path,
    env: Mapping[str, str] | None = None,
    accounts: bool = True,
    ready_path: str = "/readyz",
) -> Iterator[Served]:
    """Run `command` (a {port} placeholder in it is filled) with a fresh database."""
    db_name = f"api_{uuid.uuid4().hex[:8]}"
    if accounts:
        create_accounts(mongo_uri, db_name)
    port = free_port()
    full_env = dict(
        os.environ,
        MQTT_URI=broker_uri,
        MONGO_URI=mongo_uri,
        MONGO_DB=db_name,
        SMIB_DATA_DIR=str(data_dir),
        FIRMWARE_PORT=str(free_port()),
        **(env or {}),
    )
    log = (data_dir / "server.log").open("ab")
    argv = [part.replace("{port}", str(port)) for part in command]
    process = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=log, stderr=log)
    served = Served(f"http://127.0.0.1:{port}", mongo_uri, db_name, data_dir, process)
    try:
        wait_ready(served.url, process, path=ready_path)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


STREAMLIT_RUN = [
    sys.executable,
    "-m",
    "streamlit",
    "run",
    "app.py",
    "--server.port",
    "{port}",
    "--server.address",
    "127.0.0.1",
    "--server.headless",
    "true",
]
UVICORN = [sys.executable, "-m", "uvicorn", "app:app", "--port", "{port}", "--host", "127.0.0.1"]
