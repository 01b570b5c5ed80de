"""The codec is sans-I/O: `smib_core.sas` and `smib_core.protocol` import stdlib only.

Walks the import statements of both modules (and of every smib_core module they reach,
including the packages that run on the way) and checks each name; then imports them in
a fresh interpreter and checks what was actually loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE = ("smib_core.sas", "smib_core.protocol")
ALLOWED_OWN = frozenset({"smib_core", "smib_core.errors", "smib_core.sas", "smib_core.protocol"})
# Stdlib modules that do I/O or run concurrently: never in the codec.
FORBIDDEN_STDLIB = frozenset(
    {
        "threading",
        "_thread",
        "socket",
        "asyncio",
        "ssl",
        "select",
        "selectors",
        "subprocess",
        "multiprocessing",
        "concurrent",
        "http",
        "urllib.request",
        "socketserver",
        "queue",
    }
)
THIRD_PARTY = (
    "paho",
    "pymongo",
    "bson",
    "gridfs",
    "streamlit",
    "pandas",
    "numpy",
    "amqtt",
    "plotly",
    "psutil",
)


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports_of(name: str) -> set[str]:
    """Every module name an import statement in module `name` brings in."""
    path = _module_file(name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            found.add(base)
            # `from smib_core import sas` imports the submodule smib_core.sas.
            found.update(f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}"))
    return found


def _with_parents(name: str) -> set[str]:
    """Importing a.b.c also runs a and a.b."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _reachable(start: str) -> tuple[set[str], set[str]]:
    """(own modules walked, every other module imported along the way)."""
    own: set[str] = set()
    other: set[str] = set()
    todo = sorted(_with_parents(start))
    while todo:
        name = todo.pop()
        if name in own:
            continue
        own.add(name)
        for imported in _imports_of(name):
            if imported.split(".")[0] == "smib_core":
                todo.extend(_with_parents(imported))
            else:
                other.add(imported)
    return own, other


@pytest.mark.parametrize("start", PURE)
def test_pure_modules_reach_only_errors_sas_and_protocol(start: str) -> None:
    own, _ = _reachable(start)
    assert own <= ALLOWED_OWN, f"{start} reaches {sorted(own - ALLOWED_OWN)}"


@pytest.mark.parametrize("start", PURE)
def test_pure_modules_import_stdlib_only(start: str) -> None:
    _, other = _reachable(start)
    not_stdlib = {m for m in other if m.split(".")[0] not in sys.stdlib_module_names}
    assert not not_stdlib, f"{start} imports non-stdlib {sorted(not_stdlib)}"
    io = {m for m in other if m in FORBIDDEN_STDLIB or m.split(".")[0] in FORBIDDEN_STDLIB}
    assert not io, f"{start} imports I/O modules {sorted(io)}"


@pytest.mark.parametrize("start", PURE)
def test_pure_modules_import_nothing_dynamically(start: str) -> None:
    own, _ = _reachable(start)
    for name in own:
        path = _module_file(name)
        assert path is not None
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                assert called not in ("__import__", "import_module"), f"{name}:{node.lineno}"


def test_the_walker_sees_real_imports() -> None:
    """Guard against a walker that finds nothing and so passes everything."""
    own, other = _reachable("smib_core.protocol")
    assert {"smib_core.sas", "smib_core.errors", "smib_core"} <= own
    assert {"json", "re", "dataclasses", "urllib.parse"} <= other


def test_importing_the_codec_loads_no_third_party_module() -> None:
    code = (
        "import sys; import smib_core.sas, smib_core.protocol; "
        "print('\\n'.join(sorted(sys.modules)))"
    )
    # -S: no site, so no .pth file imports anything on our behalf.
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    loaded_third = [m for m in out if m.split(".")[0] in THIRD_PARTY]
    assert not loaded_third
    own = {m for m in out if m.split(".")[0] == "smib_core"}
    assert own == ALLOWED_OWN
    assert not {"threading", "socket", "asyncio"} & set(out)
