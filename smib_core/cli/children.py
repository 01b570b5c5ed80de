"""The processes `smib serve` starts, so none outlives it however it ends.

Two guards. Each child asks the kernel (Linux `prctl(PR_SET_PDEATHSIG)`, set in the
child between fork and exec) for SIGTERM when its parent dies, even by SIGKILL. And
`ServeRecord` keeps a file per serve process in `SMIB_DATA_DIR/serve/` naming the serve
and its children (pid, start time, command line); a new serve ends the children of
every recorded serve that is no longer alive (`end_leftovers`), checking start time and
command line first, since pids get reused. The embedded broker and database are shared
servers meant to outlive a serve; they are never recorded here.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
FOLDER = "serve"


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel send `sig` to the child when this process
    dies; None off Linux. The C library is loaded now, before any fork."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


@dataclass(frozen=True, slots=True)
class ProcessId:
    """A process, told apart from a later one that reuses its pid."""

    pid: int
    started: float  # psutil create_time
    cmdline: list[str]

    @classmethod
    def of(cls, pid: int) -> ProcessId:
        process = psutil.Process(pid)
        return cls(pid, process.create_time(), process.cmdline())

    def find(self) -> psutil.Process | None:
        """The very process this names, if it still runs."""
        try:
            process = psutil.Process(self.pid)
            if process.create_time() != self.started or process.cmdline() != self.cmdline:
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return process
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None


def _load(path: Path) -> tuple[ProcessId, list[ProcessId]] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        serve = ProcessId(**data["serve"])
        return serve, [ProcessId(**child) for child in data["children"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class ServeRecord:
    """The file naming this serve process and its children (rewritten on each change)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FOLDER / f"{os.getpid()}.json"
        self._serve = ProcessId.of(os.getpid())
        self._children: dict[int, ProcessId] = {}

    def add(self, pid: int) -> None:
        try:
            self._children[pid] = ProcessId.of(pid)
        except psutil.NoSuchProcess:
            return
        self._write()

    def remove(self, pid: int) -> None:
        self._children.pop(pid, None)
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "serve": asdict(self._serve),
            "children": [asdict(c) for c in self._children.values()],
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        temporary.replace(self.path)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


def end_leftovers(data_dir: Path, timeout: float = 10.0) -> list[ProcessId]:
    """End the children of every recorded serve that died; returns those ended.

    A child is ended only when its pid, start time and command line all match the
    record (SIGTERM, then SIGKILL after `timeout`). Records of live serves are kept."""
    found: list[tuple[ProcessId, psutil.Process]] = []
    for path in sorted((data_dir / FOLDER).glob("*.json")):
        record = _load(path)
        if record is not None and record[0].find() is not None:
            continue  # that serve still runs: its children are its own
        for child in record[1] if record is not None else []:
            process = child.find()
            if process is not None:
                found.append((child, process))
        path.unlink(missing_ok=True)
    for child, process in found:
        log.warning("ending %s (pid %d), left by a serve that died", child.cmdline, child.pid)
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs([p for _, p in found], timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=timeout)
    return [child for child, _ in found]


def spawn(command: Sequence[str], record: ServeRecord, **popen: Any) -> subprocess.Popen[bytes]:
    """Start a child that dies with this process, and record it."""
    child = subprocess.Popen(list(command), preexec_fn=die_with_parent(), **popen)
    record.add(child.pid)
    return child


def stop(children: Sequence[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM every child still running, SIGKILL those not gone `timeout` after (one
    deadline for all of them: stopping takes `timeout` at most, however many)."""
    for child in reversed(children):
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait(timeout)
