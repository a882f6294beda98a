"""Stopping a process stops everything it started, including children that
left its process group for a session of their own (as a Ray job's driver
does): nothing a test or the dev cluster starts outlives its teardown."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from trainpipe_operator.devcluster._proc import (
    descendants,
    pid_alive,
    spawn,
    stop_pid,
    stop_process,
)

# A parent that starts a grandchild in a new session, records its pid, and waits.
PARENT = """
import subprocess, sys, time, pathlib
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
pathlib.Path(sys.argv[1]).write_text(str(child.pid))
time.sleep(600)
"""


def _start_parent(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    pid_file = tmp_path / "child.pid"
    parent = spawn([sys.executable, "-c", PARENT, str(pid_file)], tmp_path / "parent.log")
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert parent.poll() is None, (tmp_path / "parent.log").read_text()
        assert time.monotonic() < deadline, "the parent did not start its child within 30 s"
        time.sleep(0.05)
    return parent, int(pid_file.read_text())


def test_descendants_include_a_child_in_a_session_of_its_own(tmp_path: Path) -> None:
    parent, child = _start_parent(tmp_path)
    try:
        assert child in [pid for pid, _ in descendants(parent.pid)]
        assert descendants(child) == []
    finally:
        stop_process(parent, timeout=5)


def test_stop_process_ends_a_child_that_left_the_group(tmp_path: Path) -> None:
    parent, child = _start_parent(tmp_path)
    stop_process(parent, timeout=5)
    assert parent.poll() is not None
    assert not pid_alive(child), f"pid {child} outlived its parent's stop"


def test_stop_pid_ends_a_child_that_left_the_group(tmp_path: Path) -> None:
    parent, child = _start_parent(tmp_path)
    try:
        assert stop_pid(parent.pid, "import subprocess", timeout=5)
        parent.wait(timeout=10)
        assert not pid_alive(child), f"pid {child} outlived its parent's stop"
    finally:
        stop_process(parent, timeout=5)


def _wait_until_carrying(pid: int, marker: str, timeout: float = 30) -> None:
    """Wait until the leak check can see ``pid``'s marker. Popen returns
    while the child is still inside execve; its /proc environ reads empty
    until the kernel has laid out the new stack, so a check made at once can
    miss it (it did, on a loaded CI machine)."""
    from tests import process_leaks

    deadline = time.monotonic() + timeout
    while pid not in {p.pid for p in process_leaks.carriers(marker)}:
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} never showed {process_leaks.MARKER_VAR}={marker} in its environment")
        time.sleep(0.05)


def test_the_session_leak_check_finds_a_process_that_carries_its_marker(tmp_path: Path) -> None:
    from tests import process_leaks

    marker = "leak-check-" + tmp_path.name
    env = {"PATH": "/usr/bin:/bin", process_leaks.MARKER_VAR: marker}
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env,
                             start_new_session=True)
    try:
        _wait_until_carrying(stray.pid, marker)
        found = process_leaks.leftovers(marker, grace=0.5)
        assert [p.pid for p in found] == [stray.pid]
        assert "time.sleep(600)" in str(found[0])
        process_leaks.kill(found)
        stray.wait(timeout=10)
        assert process_leaks.leftovers(marker, grace=0) == []
    finally:
        stray.kill()


def test_the_leak_check_leaves_out_only_this_process_s_own_resource_tracker(tmp_path: Path) -> None:
    from tests import process_leaks

    marker = f"leak-check-{os.getpid()}-{time.monotonic_ns()}"
    env = {"PATH": "/usr/bin:/bin", process_leaks.MARKER_VAR: marker}
    # Same command line as multiprocessing's tracker: one is this process's
    # child (ends with it), the other was handed to pid 1 (a leak).
    looks_like_tracker = [sys.executable, "-c", "import time; time.sleep(600)  # multiprocessing.resource_tracker"]
    own = subprocess.Popen(looks_like_tracker, env=env)
    launcher = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                                 f"print(subprocess.Popen({looks_like_tracker!r}, start_new_session=True, "
                                 "stdout=subprocess.DEVNULL).pid)"],
                                env=env, stdout=subprocess.PIPE, text=True)
    orphan = int(launcher.communicate(timeout=30)[0])
    try:
        _wait_until_carrying(own.pid, marker)
        _wait_until_carrying(orphan, marker)
        assert [p.pid for p in process_leaks.leftovers(marker, grace=0)] == [orphan]
    finally:
        own.kill()
        os.kill(orphan, 9)
