"""The embedded database process: nx-27017, serving only clients that authenticate.

Run as `python -m smib_core.embedded_db --data-dir D/mongo --port P --pid-file F
--credentials-file C` (`smib_core.embedded` starts it; nobody else needs to). It listens
on 127.0.0.1 only.

nx-27017 implements no authentication, so `AuthenticatingHandler` wraps its command
handler: a connection must complete SCRAM-SHA-256 (the exchange itself is `scramp`'s)
as the one user of the credentials file before anything but the handshake
(`HANDSHAKE_COMMANDS`) is served; anything else gets MongoDB's Unauthorized (code 13),
a wrong password AuthenticationFailed (code 18). A driver's `speculativeAuthenticate`
in hello is answered, so pymongo authenticates in one round trip less. The credentials
file holds what SCRAM checks a password against (salt, stored and server keys), never
the password (`Verifier`).

The seam (nx-27017 0.8; tests/test_embedded_db.py fails when it moves): `_serve` runs
nx-27017's connection loop, `nx_27017.server.handle_client(reader, writer, handler)`,
for each connection. That loop tags each request with its connection
(`msg["_conn_id"]`), hands it to the handler's `handle_command`, `handle_insert` or
`handle_query` and, when the connection ends, calls `close_streams_for_connection`.
`AuthenticatingHandler` overrides exactly those four, keeping each connection's state
by its id. A request without an id is never authenticated (fails closed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nx_27017.handler import NeoSQLiteHandler
from nx_27017.server import handle_client
from scramp import ScramException, ScramMechanism

log = logging.getLogger("smib_core.embedded_db")

MECHANISM = "SCRAM-SHA-256"
AUTH_DATABASE = "admin"
# Served before authentication: the handshake, the SASL exchange and harmless probes.
HANDSHAKE_COMMANDS = frozenset(
    {
        "hello",
        "Hello",
        "isMaster",
        "ismaster",
        "saslStart",
        "saslContinue",
        "ping",
        "buildInfo",
        "buildinfo",
        "endSessions",
    }
)
_HELLO = frozenset({"hello", "Hello", "isMaster", "ismaster"})
_CONVERSATION_ID = 1  # one SASL conversation at a time per connection
_CLOSE_TIMEOUT_S = 5.0  # for requests under way when the server is stopped

Reply = dict[str, Any]


# ---- the verifier: what the server checks a password against ---------------------------


@dataclass(frozen=True, slots=True)
class Verifier:
    """SCRAM-SHA-256's stored form of one user's password (RFC 5802): it checks a
    password without holding it."""

    username: str
    salt: bytes = field(repr=False)
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)
    iterations: int

    @classmethod
    def for_password(cls, username: str, password: str) -> Verifier:
        salt, stored_key, server_key, iterations = ScramMechanism(MECHANISM).make_auth_info(
            password
        )
        return cls(username, salt, stored_key, server_key, iterations)

    def auth_info(self, username: str) -> tuple[bytes, bytes, bytes, int] | None:
        """scramp's `auth_fn`: the user's salt, keys and iteration count; None for
        any other user."""
        if username != self.username:
            return None
        return self.salt, self.stored_key, self.server_key, self.iterations

    def to_json(self) -> str:
        keys = {
            "salt": self.salt,
            "stored_key": self.stored_key,
            "server_key": self.server_key,
        }
        body: dict[str, object] = {"mechanism": MECHANISM, "username": self.username}
        body |= {name: base64.b64encode(value).decode() for name, value in keys.items()}
        body["iterations"] = self.iterations
        return json.dumps(body) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Verifier:
        raw = json.loads(text)
        if raw.get("mechanism") != MECHANISM:
            raise ValueError(f"not a {MECHANISM} verifier")
        return cls(
            str(raw["username"]),
            base64.b64decode(raw["salt"]),
            base64.b64decode(raw["stored_key"]),
            base64.b64decode(raw["server_key"]),
            int(raw["iterations"]),
        )


# ---- replies ---------------------------------------------------------------------------


def unauthorized(command: str) -> Reply:
    return {
        "ok": 0,
        "errmsg": f"command {command} requires authentication",
        "code": 13,
        "codeName": "Unauthorized",
    }


def authentication_failed() -> Reply:
    return {
        "ok": 0,
        "errmsg": "Authentication failed.",
        "code": 18,
        "codeName": "AuthenticationFailed",
    }


def mechanism_unavailable(mechanism: object) -> Reply:
    return {
        "ok": 0,
        "errmsg": f"Received authentication for mechanism {mechanism} which is not enabled",
        "code": 334,
        "codeName": "MechanismUnavailable",
    }


# ---- the handler -----------------------------------------------------------------------


@dataclass(slots=True)
class _Connection:
    authenticated: bool = False
    conversation: Any = None  # scramp's ScramServer between saslStart and saslContinue


def _command(msg: dict[str, Any]) -> dict[str, Any]:
    """The request's command document (its body section); empty if it has none."""
    for kind, section in msg.get("sections", ()):
        if kind == "body" and isinstance(section, dict):
            return section
    return {}


def _name(command: dict[str, Any]) -> str:
    """A command is named by its first field (as MongoDB reads it)."""
    return next(iter(command), "")


def _payload(value: object) -> str:
    if not isinstance(value, bytes):
        raise ScramException("the payload is not binary")
    return value.decode("utf-8")


class AuthenticatingHandler(NeoSQLiteHandler):
    """nx-27017's handler, serving a connection only after it authenticated (see the
    module's docstring for the seam)."""

    def __init__(self, verifier: Verifier, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._verifier = verifier
        self._scram = ScramMechanism(MECHANISM)
        self._connections: dict[object, _Connection] = {}
        self._connections_guard = threading.Lock()

    # -- the four entry points nx-27017's connection loop calls

    def handle_command(self, msg: dict[str, Any]) -> tuple[int, Reply]:
        command = _command(msg)
        name = _name(command)
        connection = self._connection(msg)
        if name in _HELLO:
            return msg["request_id"], self._hello(msg, command, name, connection)
        if name == "saslStart":
            return msg["request_id"], self._sasl_start(command, connection)
        if name == "saslContinue":
            return msg["request_id"], self._sasl_continue(command, connection)
        if connection is not None and connection.authenticated:
            return super().handle_command(msg)
        # Anonymous: only harmless probes, answered from a document holding nothing
        # else (nx-27017 does not read a command by its first field).
        if name in HANDSHAKE_COMMANDS:
            if name in ("buildInfo", "buildinfo"):
                return super().handle_command(_only(msg, name, command[name]))
            return msg["request_id"], {"ok": 1}  # ping, endSessions
        return msg["request_id"], unauthorized(name)

    def handle_insert(self, msg: dict[str, Any]) -> tuple[int, Reply]:
        connection = self._connection(msg)
        if connection is not None and connection.authenticated:
            return super().handle_insert(msg)
        return msg["request_id"], unauthorized(_name(_command(msg)) or "insert")

    def handle_query(self, msg: dict[str, Any]) -> tuple[int, list[Reply]]:
        """Legacy OP_QUERY: drivers send their first hello this way."""
        connection = self._connection(msg)
        if connection is not None and connection.authenticated:
            return super().handle_query(msg)
        collection = msg.get("collection") or ""
        if collection != "$cmd" and not collection.endswith(".$cmd"):
            return msg["request_id"], [unauthorized("find")]
        query = msg["query"]
        command = query.get("$query", query) if isinstance(query, dict) else {}
        request = {
            "request_id": msg["request_id"],
            "sections": [("body", {**command, "$db": msg.get("db", AUTH_DATABASE)})],
            "_conn_id": msg.get("_conn_id"),
        }
        request_id, reply = self.handle_command(request)
        return request_id, [reply]

    def close_streams_for_connection(self, conn_id: Any) -> None:
        with self._connections_guard:
            self._connections.pop(conn_id, None)
        super().close_streams_for_connection(conn_id)

    # -- the handshake and SCRAM

    def _connection(self, msg: dict[str, Any]) -> _Connection | None:
        conn_id = msg.get("_conn_id")
        if conn_id is None:
            return None
        with self._connections_guard:
            return self._connections.setdefault(conn_id, _Connection())

    def _hello(
        self,
        msg: dict[str, Any],
        command: dict[str, Any],
        name: str,
        connection: _Connection | None,
    ) -> Reply:
        _, reply = super().handle_command(_only(msg, name, command[name]))
        reply = dict(reply)
        if "saslSupportedMechs" in command:
            reply["saslSupportedMechs"] = [MECHANISM]
        speculative = command.get("speculativeAuthenticate")
        if isinstance(speculative, dict) and _name(speculative) == "saslStart":
            started = self._sasl_start(speculative, connection)
            if started.get("ok"):  # else the driver starts over with saslStart
                reply["speculativeAuthenticate"] = started
        return reply

    def _sasl_start(self, command: dict[str, Any], connection: _Connection | None) -> Reply:
        if connection is None:
            return authentication_failed()
        connection.conversation = None
        mechanism = command.get("mechanism")
        if mechanism != MECHANISM:
            return mechanism_unavailable(mechanism)
        if command.get("db", command.get("$db")) != AUTH_DATABASE:
            return self._failed("saslStart for a user outside the admin database")
        conversation = self._scram.make_server(self._verifier.auth_info)
        try:
            conversation.set_client_first(_payload(command.get("payload")))
            server_first = conversation.get_server_first()
        except (ScramException, UnicodeDecodeError) as exc:
            return self._failed(f"saslStart refused: {exc}")
        connection.conversation = conversation
        return {
            "conversationId": _CONVERSATION_ID,
            "done": False,
            "payload": server_first.encode(),
            "ok": 1,
        }

    def _sasl_continue(self, command: dict[str, Any], connection: _Connection | None) -> Reply:
        conversation = connection.conversation if connection is not None else None
        if connection is None or conversation is None:
            return self._failed("saslContinue without saslStart")
        connection.conversation = None
        if command.get("conversationId") != _CONVERSATION_ID:
            return self._failed("saslContinue for another conversation")
        try:
            conversation.set_client_final(_payload(command.get("payload")))
            server_final = conversation.get_server_final()
        except (ScramException, UnicodeDecodeError) as exc:
            return self._failed(f"wrong credentials ({exc})")
        connection.authenticated = True
        return {
            "conversationId": _CONVERSATION_ID,
            "done": True,  # the server's signature is in this reply: no empty third step
            "payload": server_final.encode(),
            "ok": 1,
        }

    @staticmethod
    def _failed(reason: str) -> Reply:
        log.warning("a client failed to authenticate: %s", reason)
        return authentication_failed()


def _only(msg: dict[str, Any], name: str, value: object) -> dict[str, Any]:
    """The request reduced to one command field, addressed to the admin database."""
    return {
        "request_id": msg["request_id"],
        "sections": [("body", {name: value, "$db": AUTH_DATABASE})],
        "_conn_id": msg.get("_conn_id"),
    }


# ---- the process -----------------------------------------------------------------------


async def _serve(port: int, handler: AuthenticatingHandler) -> None:
    """nx-27017's connection loop on 127.0.0.1:port until SIGTERM/SIGINT; then each
    connection is closed, so its loop ends as when a client leaves."""
    connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections[task] = writer
        try:
            await handle_client(reader, writer, handler)
        finally:
            connections.pop(task, None)

    server = await asyncio.start_server(connected, "127.0.0.1", port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with server:
        await stopping.wait()
        server.close()
        for writer in list(connections.values()):
            writer.close()
        if connections:
            await asyncio.wait(list(connections), timeout=_CLOSE_TIMEOUT_S)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smib_core.embedded_db")
    parser.add_argument("--data-dir", type=Path, required=True, help="one SQLite file per database")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--credentials-file", type=Path, required=True, help="a Verifier, as JSON")
    args = parser.parse_args(argv)
    # WARNING, not nx-27017's INFO: it would log every request.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    verifier = Verifier.from_json(args.credentials_file.read_text())
    handler = AuthenticatingHandler(verifier, data_dir=str(args.data_dir))
    args.pid_file.write_text(f"{os.getpid()}\n")
    try:
        asyncio.run(_serve(args.port, handler))
    finally:
        args.pid_file.unlink(missing_ok=True)
        handler.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
