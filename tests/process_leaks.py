"""Finding the processes a test session started that are still alive.

The session puts a marker of its own into its environment at start;
every process it starts inherits it, however far down (Ray's workers and job
drivers, operators, servers), and keeps it when it is re-parented to pid 1.
At the end of the session, a process still carrying the marker is a leak.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

MARKER_VAR = "TRAINPIPE_TEST_SESSION"


@dataclass(frozen=True)
class Leftover:
    pid: int
    ppid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} (parent {self.ppid}): {self.command[:300]}"


def mark_this_session() -> str:
    """Put a new marker into this process's environment (children inherit it); return it."""
    marker = os.environ.get(MARKER_VAR) or uuid.uuid4().hex
    os.environ[MARKER_VAR] = marker
    return marker


def carriers(marker: str, exclude: set[int] | frozenset[int] = frozenset()) -> list[Leftover]:
    """Living processes (not zombies) whose environment holds ``MARKER_VAR=marker``."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat[0] in ("Z", "X"):
            continue
        found.append(Leftover(int(entry.name), int(stat[1]), command.strip()))
    return found


def leftovers(marker: str, grace: float = 15.0) -> list[Leftover]:
    """What still carries ``marker`` (other than this process and its own
    multiprocessing helpers) after waiting up to ``grace`` s for processes
    that are on their way out."""
    deadline = time.monotonic() + grace
    while (left := _not_ours(carriers(marker, {os.getpid()}))) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _not_ours(processes: list[Leftover]) -> list[Leftover]:
    """Leave out this process's multiprocessing resource tracker: torch's DDP
    tests start it in the pytest process itself (one-process runs), and it
    ends when this process does (it reads a pipe this process holds)."""
    return [p for p in processes
            if not (p.ppid == os.getpid() and "multiprocessing.resource_tracker" in p.command)]


def kill(processes: list[Leftover]) -> None:
    """SIGKILL each, so that what runs next is not slowed down by them."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.pid, signal.SIGKILL)
