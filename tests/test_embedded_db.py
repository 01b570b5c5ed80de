"""The embedded database's authentication gate, in process: where it wraps nx-27017 (a
test that fails when that seam moves) and what it serves to whom, driven with a SCRAM
client of scramp's own. The real server with pymongo is in tests/test_embedded.py."""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nx_27017.server
import pytest
from nx_27017.handler import NeoSQLiteHandler
from packaging.requirements import Requirement
from scramp import ScramClient

from smib_core.embedded_db import MECHANISM, AuthenticatingHandler, Verifier

PASSWORD = "correct-horse-battery-staple-0123"
_request_ids = itertools.count(1)

# What nx-27017's connection loop calls on its handler; the gate overrides the ones that
# serve requests or end a connection.
LOOP_CALLS = {
    "increment_connections",
    "decrement_connections",
    "handle_command",
    "handle_insert",
    "handle_query",
    "close_streams_for_connection",
}
WRAPPED = {"handle_command", "handle_insert", "handle_query", "close_streams_for_connection"}


# ---- the seam --------------------------------------------------------------------------


def test_the_installed_nx_27017_is_the_pinned_one() -> None:
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    pinned = next(
        Requirement(dep)
        for dep in pyproject["project"]["dependencies"]
        if Requirement(dep).name == "nx-27017"
    )
    assert pinned.specifier, "nx-27017 must be pinned: the gate depends on its internals"
    assert version("nx-27017") in pinned.specifier


def test_the_connection_loop_still_calls_only_what_the_gate_wraps() -> None:
    loop = nx_27017.server.handle_client
    assert list(inspect.signature(loop).parameters) == ["reader", "writer", "handler"]
    tree = ast.parse(textwrap.dedent(inspect.getsource(loop)))
    called = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "handler"
    }
    assert called == LOOP_CALLS, "nx-27017's connection loop changed: review embedded_db"
    tags = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(target := node.targets[0], ast.Subscript)
        and isinstance(target.slice, ast.Constant)
        and target.slice.value == "_conn_id"
    ]
    assert len(tags) == 2, "each OP_MSG and OP_QUERY request must carry its connection id"
    for name in WRAPPED:
        assert callable(getattr(NeoSQLiteHandler, name, None)), name
        assert name in vars(AuthenticatingHandler), name


# ---- the gate --------------------------------------------------------------------------


@pytest.fixture
def handler(tmp_path: Path) -> Iterator[AuthenticatingHandler]:
    gate = AuthenticatingHandler(
        Verifier.for_password("smib", PASSWORD), data_dir=str(tmp_path / "mongo")
    )
    yield gate
    gate.close_all()


def request(conn: str | None, body: dict[str, Any], **sections: list[Any]) -> dict[str, Any]:
    parts: list[tuple[str, Any]] = [("body", {**body, "$db": body.get("$db", "smib")})]
    parts += [("payload", {name: docs}) for name, docs in sections.items()]
    msg: dict[str, Any] = {"request_id": next(_request_ids), "sections": parts}
    if conn is not None:
        msg["_conn_id"] = conn
    return msg


def command(gate: AuthenticatingHandler, conn: str | None, body: dict[str, Any]) -> Any:
    _, reply = gate.handle_command(request(conn, body))
    return reply


def insert(gate: AuthenticatingHandler, conn: str | None, doc: dict[str, Any]) -> Any:
    _, reply = gate.handle_insert(request(conn, {"insert": "things"}, documents=[doc]))
    return reply


def log_in(gate: AuthenticatingHandler, conn: str, password: str = PASSWORD) -> Any:
    """saslStart + saslContinue as a driver does; the last reply."""
    client = ScramClient([MECHANISM], "smib", password)
    first = command(
        gate,
        conn,
        {
            "saslStart": 1,
            "mechanism": MECHANISM,
            "payload": client.get_client_first().encode(),
            "$db": "admin",
        },
    )
    assert first["ok"] == 1 and first["done"] is False
    client.set_server_first(first["payload"].decode())
    final = command(
        gate,
        conn,
        {
            "saslContinue": 1,
            "conversationId": first["conversationId"],
            "payload": client.get_client_final().encode(),
            "$db": "admin",
        },
    )
    if final["ok"] == 1:
        client.set_server_final(final["payload"].decode())  # checks the server's signature
    return final


def things(gate: AuthenticatingHandler, conn: str) -> list[Any]:
    reply = command(gate, conn, {"find": "things", "filter": {}})
    assert reply["ok"] == 1, reply
    return list(reply["cursor"]["firstBatch"])


def test_an_anonymous_connection_gets_the_handshake_and_nothing_else(
    handler: AuthenticatingHandler,
) -> None:
    assert command(handler, "a", {"hello": 1})["isWritablePrimary"] is True
    assert command(handler, "a", {"ping": 1}) == {"ok": 1}
    for body in ({"find": "things"}, {"listDatabases": 1}, {"drop": "things"}):
        reply = command(handler, "a", body)
        assert (reply["ok"], reply["code"], reply["codeName"]) == (0, 13, "Unauthorized")
    assert insert(handler, "a", {"_id": 1})["code"] == 13
    log_in(handler, "admin-conn")
    assert things(handler, "admin-conn") == []  # the refused insert wrote nothing


def test_a_command_behind_a_probe_is_not_run(handler: AuthenticatingHandler) -> None:
    # nx-27017 looks for command fields anywhere in the document; MongoDB names a
    # command by its first field. An anonymous probe reaches nx-27017 alone.
    log_in(handler, "owner")
    assert insert(handler, "owner", {"_id": "kept"})["ok"] == 1
    sneaky = [
        {"ping": 1, "find": "things"},
        {"hello": 1, "find": "things"},
        {"buildInfo": 1, "drop": "things"},
        {"endSessions": [], "delete": "things", "deletes": [{"q": {}, "limit": 0}]},
    ]
    for body in sneaky:
        reply = command(handler, "anonymous", body)
        assert "cursor" not in reply and "n" not in reply, reply
    assert things(handler, "owner") == [{"_id": "kept"}]


def test_the_right_password_opens_the_connection_and_only_it(
    handler: AuthenticatingHandler,
) -> None:
    done = log_in(handler, "c1")
    assert done["ok"] == 1 and done["done"] is True
    assert insert(handler, "c1", {"_id": 7})["ok"] == 1
    assert things(handler, "c1") == [{"_id": 7}]
    assert command(handler, "c2", {"find": "things"})["code"] == 13  # another connection


def test_a_wrong_password_is_refused_and_the_connection_stays_closed(
    handler: AuthenticatingHandler,
) -> None:
    failed = log_in(handler, "c1", password="not-the-password")
    assert (failed["ok"], failed["code"], failed["codeName"]) == (0, 18, "AuthenticationFailed")
    assert command(handler, "c1", {"find": "things"})["code"] == 13
    # A saslContinue without its saslStart (a replayed one) is refused too.
    replay = {
        "saslContinue": 1,
        "conversationId": 1,
        "payload": b"c=biws,r=x,p=eA==",
        "$db": "admin",
    }
    assert command(handler, "c1", replay)["code"] == 18


def test_an_unknown_user_or_mechanism_is_refused(handler: AuthenticatingHandler) -> None:
    stranger = ScramClient([MECHANISM], "root", PASSWORD).get_client_first().encode()
    start = {"saslStart": 1, "mechanism": MECHANISM, "payload": stranger, "$db": "admin"}
    assert command(handler, "c", start)["code"] == 18
    assert command(handler, "c", {**start, "$db": "smib"})["code"] == 18  # user is in admin
    assert command(handler, "c", {**start, "mechanism": "SCRAM-SHA-1"})["code"] == 334
    assert command(handler, "c", {**start, "mechanism": "PLAIN"})["code"] == 334


def test_speculative_authentication_in_hello(handler: AuthenticatingHandler) -> None:
    client = ScramClient([MECHANISM], "smib", PASSWORD)
    speculative = {
        "saslStart": 1,
        "mechanism": MECHANISM,
        "payload": client.get_client_first().encode(),
        "db": "admin",
    }
    hello = command(
        handler,
        "c",
        {"hello": 1, "speculativeAuthenticate": speculative, "saslSupportedMechs": "admin.smib"},
    )
    assert hello["isWritablePrimary"] is True and hello["saslSupportedMechs"] == [MECHANISM]
    first = hello["speculativeAuthenticate"]
    client.set_server_first(first["payload"].decode())
    final = command(
        handler,
        "c",
        {
            "saslContinue": 1,
            "conversationId": first["conversationId"],
            "payload": client.get_client_final().encode(),
            "$db": "admin",
        },
    )
    client.set_server_final(final["payload"].decode())
    assert things(handler, "c") == []


def test_a_request_without_a_connection_is_never_served(handler: AuthenticatingHandler) -> None:
    first = ScramClient([MECHANISM], "smib", PASSWORD).get_client_first().encode()
    start = {"saslStart": 1, "mechanism": MECHANISM, "payload": first, "$db": "admin"}
    assert command(handler, None, start)["code"] == 18  # no conversation to keep
    assert command(handler, None, {"find": "things"})["code"] == 13
    assert log_in(handler, "c")["ok"] == 1
    assert command(handler, None, {"find": "things"})["code"] == 13


def test_a_closed_connection_forgets_its_authentication(handler: AuthenticatingHandler) -> None:
    log_in(handler, "c")
    handler.close_streams_for_connection("c")
    assert command(handler, "c", {"find": "things"})["code"] == 13


def test_legacy_op_query_is_gated_too(handler: AuthenticatingHandler) -> None:
    log_in(handler, "owner")
    insert(handler, "owner", {"_id": "secret"})

    def query(conn: str, collection: str, doc: dict[str, Any]) -> list[Any]:
        msg = {"request_id": 1, "db": "smib", "collection": collection, "query": doc}
        _, docs = handler.handle_query({**msg, "_conn_id": conn})
        return list(docs)

    assert query("anonymous", "things", {}) == [
        {"ok": 0, "errmsg": "command find requires authentication", "code": 13,
         "codeName": "Unauthorized"}
    ]  # fmt: skip
    assert query("anonymous", "$cmd", {"isMaster": 1})[0]["ok"] == 1
    assert query("anonymous", "$cmd", {"find": "things"})[0]["code"] == 13
    assert query("owner", "things", {}) == [{"_id": "secret"}]


def test_the_verifier_holds_no_password() -> None:
    text = Verifier.for_password("smib", PASSWORD).to_json()
    assert PASSWORD not in text
    loaded = Verifier.from_json(text)
    assert loaded.username == "smib" and loaded.iterations >= 4096
    assert loaded.auth_info("someone-else") is None
    assert loaded.auth_info("smib") is not None
