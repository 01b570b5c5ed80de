"""Embedded defaults: one MQTT broker and one MongoDB-compatible database per data folder.

With no MQTT_URI (MONGO_URI) the app, the `smib` CLI and the simulator, each its own
process, share one embedded broker (database) for the data folder. Each server runs
detached from whichever process started it first, so it outlives that process.

Per server, the data folder holds a lock file, a state file `{"port", "pid",
"started_at", "username", "password"}` and a log. `ensure_*` takes the lock
(fcntl.flock, so threads and processes alike wait their turn), reuses the recorded
server if its process is alive and its port answers, and otherwise starts one on a free
loopback port and records it. So two processes never open the same SQLite files
through two servers.

A server that dies is started again on the port it had (another free one only when
something else took that port), so clients made before keep working: `ensure_*` does
so when called, and `EmbeddedSupervisor` (a background service of every worker) checks
the folder's servers every 2 s and restarts a dead one. The lock keeps restarts single
when several processes supervise one folder.

Run as `python -m smib_core.embedded broker --port P --data-dir D`, this module is the
broker process itself (amqtt on 127.0.0.1 only, no $SYS topics); the database process is
`python -m smib_core.embedded_db` (nx-27017 behind a SCRAM-SHA-256 gate, 127.0.0.1 only).

Security (`_secure_folder`, `_credentials`): the data folder is 0700 and every file in
it 0600 (the database's files hold password hashes); the servers run with umask 077 so
what they create stays private. Each server accepts only the user (`smib`) and random
password generated at its first start: kept in its state file (0600), kept across
restarts (`revive`, so clients made before keep working), and handed to every client
by `broker_uri` / `mongo_uri`. The servers get no password, only what checks one: the
broker an argon2 hash in `embedded-broker.passwd`, the database SCRAM-SHA-256's salt
and keys in `embedded-mongo.scram`. A server an older version started without
credentials is replaced by the next `ensure_*`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from smib_core.errors import SmibError
from smib_core.settings import Settings

log = logging.getLogger(__name__)

_LOG_TAIL_LINES = 20
SUPERVISE_EVERY_S = 2.0

# Servers this process started, by pid: kept so they are reaped (no zombies) and so
# Python never warns that a Popen object was dropped while its process still runs.
_children: dict[int, subprocess.Popen[bytes]] = {}


class EmbeddedServerError(SmibError):
    """An embedded server (broker or database) could not be started."""


@dataclass(frozen=True, slots=True)
class _Kind:
    """What differs between the embedded broker and the embedded database."""

    title: str  # as users read it
    stem: str  # names the lock, state and log files in the data folder
    scheme: str
    # Modules our server processes run (`-m`, or imported by `-c` code of an older
    # version): tells our process from a reused pid.
    programs: tuple[str, ...]
    start_timeout_s: float
    command: Callable[[Path, int], list[str]]
    answers: Callable[[int], bool]  # is the server on this loopback port up?
    # Writes what the server checks the password against (never the password itself).
    write_verifier: Callable[[Path, str, str], None]
    path_part: str  # after host:port in the URI
    auth_options: str  # URI options naming how the credentials are checked

    def path(self, data_dir: Path, suffix: str) -> Path:
        return data_dir / f"{self.stem}{suffix}"

    def runs(self, args: Sequence[str]) -> bool:
        """The command line `args` runs one of this server's programs."""
        return any(
            arg == program or f"from {program} import" in arg
            for arg in args
            for program in self.programs
        )


def broker_command(data_dir: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "smib_core.embedded",
        "broker",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]


def _database_command(data_dir: Path, port: int) -> list[str]:
    # Its pid file lives in the data folder and names the process as this folder's.
    return [
        sys.executable,
        "-m",
        "smib_core.embedded_db",
        "--data-dir",
        str(data_dir / "mongo"),
        "--port",
        str(port),
        "--pid-file",
        str(_DATABASE.path(data_dir, ".pid")),
        "--credentials-file",
        str(_DATABASE.path(data_dir, ".scram")),
    ]


def port_answers(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _mqtt_answers(port: int) -> bool:
    """A CONNECT gets a CONNACK (amqtt logs an error for a connection that says nothing).

    The timeout is generous: a busy broker must not be taken for a dead one and replaced.
    """
    client_id = f"smib-probe-{uuid.uuid4().hex[:12]}".encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3.0) as sock:
            sock.sendall(bytes([0x10, len(body)]) + body)
            connack = sock.recv(4)
            sock.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError:
        return False
    # Any CONNACK proves the broker up: it refuses this probe, which has no credentials.
    return connack[:2] == b"\x20\x02"


def _write_broker_passwd(data_dir: Path, username: str, password: str) -> None:
    from argon2 import PasswordHasher

    # A random 32-character password needs no costly hash; every CONNECT verifies it.
    hashed = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(password)
    _write_private(_password_file(data_dir), f"{username}:{hashed}\n")


def _write_database_verifier(data_dir: Path, username: str, password: str) -> None:
    from smib_core.embedded_db import Verifier

    verifier = Verifier.for_password(username, password)
    _write_private(_DATABASE.path(data_dir, ".scram"), verifier.to_json())


_BROKER = _Kind(
    title="MQTT broker",
    stem="embedded-broker",
    scheme="mqtt",
    programs=("smib_core.embedded",),
    start_timeout_s=15.0,
    command=broker_command,
    answers=_mqtt_answers,
    write_verifier=_write_broker_passwd,
    path_part="",
    auth_options="",
)
_DATABASE = _Kind(
    title="database",
    stem="embedded-mongo",
    scheme="mongodb",
    # nx_27017.nx_27017: a database an older version started, with no authentication.
    programs=("smib_core.embedded_db", "nx_27017.nx_27017"),
    start_timeout_s=30.0,
    command=_database_command,
    answers=port_answers,
    write_verifier=_write_database_verifier,
    path_part="/",
    auth_options="?authSource=admin&authMechanism=SCRAM-SHA-256",
)
_KINDS = {"broker": _BROKER, "database": _DATABASE}


@dataclass(frozen=True, slots=True)
class _State:
    port: int
    pid: int
    started_at: str
    username: str = ""  # the generated credentials (none in an older version's state)
    password: str = dataclasses.field(default="", repr=False)


def _uri(kind: _Kind, state: _State) -> str:
    """The server's URI, with its credentials when it has some."""
    address = f"127.0.0.1:{state.port}{kind.path_part}"
    if not state.username:
        return f"{kind.scheme}://{address}"
    return f"{kind.scheme}://{state.username}:{state.password}@{address}{kind.auth_options}"


# ---- public API ----------------------------------------------------------------------


def broker_uri(settings: Settings) -> str:
    """MQTT_URI if set, else the embedded broker of the data folder (started if needed)."""
    return settings.mqtt_uri or ensure_broker(settings.data_dir)


def mongo_uri(settings: Settings) -> str:
    """MONGO_URI if set, else the embedded database of the data folder (started if needed)."""
    return settings.mongo_uri or ensure_database(settings.data_dir)


def ensure_broker(data_dir: Path) -> str:
    """`mqtt://smib:PASSWORD@127.0.0.1:PORT` of the folder's embedded broker, started if
    none runs."""
    return _ensure(_BROKER, data_dir)


def ensure_database(data_dir: Path) -> str:
    """`mongodb://smib:PASSWORD@127.0.0.1:PORT/?authSource=admin&authMechanism=SCRAM-SHA-256`
    of the folder's embedded database, started if none runs."""
    return _ensure(_DATABASE, data_dir)


def status(data_dir: Path) -> dict[str, dict[str, object]]:
    """Per server ("broker", "database"): running, and uri/port/pid/started_at if recorded."""
    data_dir = data_dir.resolve()
    report: dict[str, dict[str, object]] = {}
    for name, kind in _KINDS.items():
        state = _read_state(kind, data_dir)
        entry: dict[str, object] = {"running": False, "log": str(kind.path(data_dir, ".log"))}
        if state is not None:
            running = _is_ours(state.pid, kind, data_dir) and kind.answers(state.port)
            entry.update(
                running=running,
                uri=_masked(_uri(kind, state)),
                port=state.port,
                pid=state.pid,
                started_at=state.started_at,
            )
        report[name] = entry
    return report


def stop(data_dir: Path) -> list[str]:
    """Terminate the folder's embedded servers; one line per server that was running."""
    data_dir = data_dir.resolve()
    if not data_dir.is_dir():
        return []
    stopped: list[str] = []
    for kind in _KINDS.values():
        with _locked(kind.path(data_dir, ".lock")):
            state = _read_state(kind, data_dir)
            if state is not None and _terminate(state.pid, kind, data_dir):
                stopped.append(f"{kind.title} (pid {state.pid}, port {state.port})")
            _terminate_leftovers(kind, data_dir)
            kind.path(data_dir, ".json").unlink(missing_ok=True)
    return stopped


# ---- start or reuse --------------------------------------------------------------------


def _ensure(kind: _Kind, data_dir: Path) -> str:
    data_dir = data_dir.resolve()
    _secure_folder(data_dir)
    with _locked(kind.path(data_dir, ".lock")):
        state = _read_state(kind, data_dir)
        if state is not None:
            live = _is_ours(state.pid, kind, data_dir) and kind.answers(state.port)
            if live and state.username:
                return _uri(kind, state)
            # Alive but deaf, or an older version's server without credentials: replace it.
            _terminate(state.pid, kind, data_dir)
        _terminate_leftovers(kind, data_dir)
        state = _start_with_credentials(kind, data_dir, state)
        _write_state(kind, data_dir, state)
        return _uri(kind, state)


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    # Each call opens its own file description, so flock also excludes threads.
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _start(kind: _Kind, data_dir: Path, port_before: int | None = None) -> _State:
    """Start a server: on `port_before` (the port it had) when that port is free, so
    clients that know it reconnect by themselves; else on a free port."""
    log_file = kind.path(data_dir, ".log")
    for attempt in range(2):  # a second try covers losing the free port to someone else
        if attempt == 0 and port_before is not None and _port_frees(port_before):
            port = port_before
        else:
            if port_before is not None:
                log.warning("embedded %s: port %d is taken; moving", kind.title, port_before)
            port = _server_port()
        with log_file.open("ab") as output:
            process = subprocess.Popen(
                kind.command(data_dir, port),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                cwd=data_dir,
                env=_child_env(),
                start_new_session=True,
                umask=0o077,  # what the server creates (SQLite files, logs) stays private
            )
        _children[process.pid] = process
        if _wait_until_answers(process, kind, port):
            return _State(port, process.pid, datetime.now(UTC).isoformat(timespec="seconds"))
        if process.poll() is None:
            _terminate(process.pid, kind, data_dir)
            raise EmbeddedServerError(
                f"the embedded {kind.title} did not answer within {kind.start_timeout_s:.0f} s; "
                f"{_log_tail(log_file)}"
            )
        _children.pop(process.pid, None)
    raise EmbeddedServerError(f"the embedded {kind.title} could not start; {_log_tail(log_file)}")


def _start_with_credentials(kind: _Kind, data_dir: Path, before: _State | None) -> _State:
    """Start a server on the port it had (`before`), keeping its credentials so clients
    that know them keep working."""
    username, password = _credentials(kind, data_dir, before)
    started = _start(kind, data_dir, before.port if before is not None else None)
    return dataclasses.replace(started, username=username, password=password)


def _child_env() -> dict[str, str]:
    """The environment, with this package importable even when it is not installed."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _wait_until_answers(process: subprocess.Popen[bytes], kind: _Kind, port: int) -> bool:
    deadline = time.monotonic() + kind.start_timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if kind.answers(port):
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (also for benchmarks' private servers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_port() -> int:
    """A free port below the kernel's ephemeral range, where no outgoing connection and
    no `bind(0)` can take it while its server is down for a restart."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768
    if low > 10_000:
        for _attempt in range(50):
            port = random.randrange(low - 8_000, low)
            if port_is_free(port):
                return port
    return free_port()


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (bound as our servers bind: SO_REUSEADDR, so
    connections a killed server left in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _port_frees(port: int, within_s: float = 3.0) -> bool:
    """The port is free, or becomes free within `within_s` (a dying server's socket)."""
    deadline = time.monotonic() + within_s
    while not port_is_free(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _log_tail(log_file: Path) -> str:
    try:
        lines = log_file.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    except OSError:
        lines = []
    if not lines:
        return f"{log_file} is empty"
    return f"last lines of {log_file}:\n" + "\n".join(lines)


# ---- state file ------------------------------------------------------------------------


def _read_state(kind: _Kind, data_dir: Path) -> _State | None:
    try:
        raw = json.loads(kind.path(data_dir, ".json").read_text())
        return _State(
            int(raw["port"]),
            int(raw["pid"]),
            str(raw.get("started_at", "")),
            str(raw.get("username", "")),
            str(raw.get("password", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(kind: _Kind, data_dir: Path, state: _State) -> None:
    target = kind.path(data_dir, ".json")
    partial = target.with_suffix(".json.tmp")
    body = {"port": state.port, "pid": state.pid, "started_at": state.started_at}
    if state.username:
        body |= {"username": state.username, "password": state.password}
    _write_private(partial, json.dumps(body) + "\n")
    os.replace(partial, target)


# ---- processes -------------------------------------------------------------------------


def _is_ours(pid: int, kind: _Kind, data_dir: Path) -> bool:
    """The pid is a live server of this kind for this folder (not a zombie, not reused)."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        args = process.cmdline()
    except psutil.Error:
        return False
    # The broker names the folder (--data-dir); the database its pid file in the folder.
    names_folder = str(data_dir) in args or str(kind.path(data_dir, ".pid")) in args
    return names_folder and kind.runs(args)


def _terminate(pid: int, kind: _Kind, data_dir: Path, timeout: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL, a server of ours; False if the pid is not one."""
    if not _is_ours(pid, kind, data_dir):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, timeout)
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    child = _children.get(pid)
    if child is not None:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        _children.pop(pid, None)
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True  # dead; its parent will reap it
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _terminate_leftovers(kind: _Kind, data_dir: Path) -> None:
    """A database its state file forgot still holds its pid file: end it first."""
    pid_file = kind.path(data_dir, ".pid")
    with contextlib.suppress(OSError, ValueError):
        _terminate(int(pid_file.read_text().strip()), kind, data_dir)
    pid_file.unlink(missing_ok=True)


# ---- permissions and credentials -------------------------------------------------------

SERVER_USER = "smib"  # the one user of each embedded server


def _secure_folder(data_dir: Path) -> None:
    """The data folder and everything in it private to this user: folders 0700, files
    0600 (also tightening what an older version left world-readable)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    for root, folders, files in os.walk(data_dir):
        for name in folders:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            with contextlib.suppress(OSError):  # a file a server just removed
                os.chmod(os.path.join(root, name), 0o600)


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a file only this user may read (0600 from its creation)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)


def _password_file(data_dir: Path) -> Path:
    return data_dir / "embedded-broker.passwd"


def _credentials(kind: _Kind, data_dir: Path, old: _State | None) -> tuple[str, str]:
    """The user and password of the server's earlier start (so clients that know them
    keep working), else new ones; what checks them is written for the server."""
    if old is not None and old.username and old.password:
        username, password = old.username, old.password
    else:
        username, password = SERVER_USER, secrets.token_urlsafe(24)
    kind.write_verifier(data_dir, username, password)
    return username, password


def _masked(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return uri
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:••••••@{host}"


# ---- supervision -----------------------------------------------------------------------


def revive(kind_name: str, data_dir: Path) -> str | None:
    """Restart the folder's recorded server of `kind_name` ("broker", "database") if it
    is dead or deaf, on the port it had; its URI, or None when none is recorded (never
    started, or stopped on purpose: not ours to start)."""
    kind = _KINDS[kind_name]
    data_dir = data_dir.resolve()
    if not kind.path(data_dir, ".json").exists():
        return None
    with _locked(kind.path(data_dir, ".lock")):
        state = _read_state(kind, data_dir)
        if state is None:
            return None
        if _is_ours(state.pid, kind, data_dir) and kind.answers(state.port):
            return _uri(kind, state)
        log.warning("embedded %s (pid %d) is down: restarting it", kind.title, state.pid)
        _terminate(state.pid, kind, data_dir)
        _terminate_leftovers(kind, data_dir)
        started = _start_with_credentials(kind, data_dir, state)
        _write_state(kind, data_dir, started)
        log.warning("embedded %s is back on port %d", kind.title, started.port)
        return _uri(kind, started)


class EmbeddedSupervisor:
    """Keeps the data folder's embedded broker and database up: every
    `SUPERVISE_EVERY_S` it checks each recorded server (pid alive, port answers) and
    restarts a dead one on the same port (`revive`). A live server that does not answer
    is replaced only after three checks in a row (a busy one is not dead). Does nothing
    for a server the settings name (MQTT_URI, MONGO_URI). A background service."""

    def __init__(self, settings: Settings, *, every_s: float = SUPERVISE_EVERY_S) -> None:
        self._data_dir = settings.data_dir
        configured = {"broker": settings.mqtt_uri, "database": settings.mongo_uri}
        self._kinds = [name for name, uri in configured.items() if not uri]
        self._every_s = every_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._deaf: dict[str, int] = {}
        self.restarts = 0

    def start(self) -> None:
        if self._thread is not None or not self._kinds:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name="smib-embedded-supervisor", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def check(self) -> None:
        """One round: restart what is dead (also called by the thread)."""
        data_dir = self._data_dir.resolve()
        for name in self._kinds:
            kind = _KINDS[name]
            state = _read_state(kind, data_dir)
            if state is None:
                continue
            if not _is_ours(state.pid, kind, data_dir):
                self._restart(name, data_dir)
            elif not kind.answers(state.port):
                self._deaf[name] = self._deaf.get(name, 0) + 1
                if self._deaf[name] >= 3:
                    self._restart(name, data_dir)
            else:
                self._deaf.pop(name, None)

    def _restart(self, name: str, data_dir: Path) -> None:
        self._deaf.pop(name, None)
        try:
            if revive(name, data_dir) is not None:
                self.restarts += 1
        except (EmbeddedServerError, OSError) as exc:
            log.error("embedded %s could not be restarted: %s", _KINDS[name].title, exc)

    def _run(self) -> None:
        while not self._stopping.wait(self._every_s):
            try:
                self.check()
            except Exception:  # supervision must outlive one bad round
                log.exception("embedded supervisor: a check failed")


# ---- the broker process ----------------------------------------------------------------


def _serve_broker(port: int, data_dir: Path | None = None) -> None:
    import asyncio
    import logging

    from amqtt.broker import Broker

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # No BrokerSysPlugin (no $SYS topics) and no packet/event logger plugins. With a data
    # folder, only the user of its password file may connect; without one (a broker run
    # by hand in the foreground) anyone on this host may.
    auth: dict[str, object] = {
        "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
    }
    if data_dir is not None:
        password_file = str(_password_file(data_dir.resolve()))
        auth = {"amqtt.plugins.authentication.FileAuthPlugin": {"password_file": password_file}}
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": auth,
    }

    async def serve() -> None:
        broker = Broker(config)
        await broker.start()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await broker.shutdown()

    asyncio.run(serve())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smib_core.embedded")
    sub = parser.add_subparsers(dest="server", required=True)
    broker = sub.add_parser("broker", help="run the embedded MQTT broker in the foreground")
    broker.add_argument("--port", type=int, required=True)
    broker.add_argument("--data-dir", type=Path, help="the folder it serves (names the process)")
    args = parser.parse_args(argv)
    _serve_broker(args.port, args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
