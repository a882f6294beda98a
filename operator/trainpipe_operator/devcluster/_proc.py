"""Process plumbing shared by the dev cluster's components: free loopback
ports, children in sessions of their own with their output in a log file,
stopping them (as a ``Popen`` we hold, or by a pid recorded earlier), and
small HTTP probes. Standard library only."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

PORT_IN_USE = ("address already in use", "bind: address already in use")


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def log_tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file, for error messages ('' when unreadable)."""
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def port_clash(log_path: Path) -> bool:
    """Whether a log says a port was taken between choosing it and binding it."""
    tail = log_tail(log_path, 20000).lower()
    return any(marker in tail for marker in PORT_IN_USE)


def spawn(
    cmd: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a session (and process group) of its own, output to ``log_path``.

    Its own session: a terminal's Ctrl-C does not reach it, it outlives the
    process that started it (``devcluster up``), and ``stop_group`` stops it
    with everything it started.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        try:
            return subprocess.Popen(
                list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
            )
        except OSError as exc:
            raise RuntimeError(f"could not start {cmd[0]}: {exc}") from exc


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def _identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time): names one process even after its pid is reused."""
    fields = _stat_fields(pid)
    return (pid, fields[19]) if fields and len(fields) > 19 else None


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every living descendant of ``pid`` as (pid, start time), children before grandchildren.

    Taken before stopping a tree: a child that started a session of its own
    (a Ray job's driver does) gets no group signal, and once its parent dies
    it is re-parented to pid 1, where nothing would find it again.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[tuple[int, str]] = []
    queue = list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        ident = _identity(child)
        if ident is not None:
            found.append(ident)
        queue.extend(children.get(child, []))
    return found


def _kill_remaining(tree: list[tuple[int, str]], timeout: float) -> None:
    """SIGTERM what is left of ``tree`` (same pid and start time), wait, then SIGKILL it."""
    def alive() -> list[int]:
        return [pid for pid, started in tree if _identity(pid) == (pid, started) and pid_alive(pid)]

    for pid in alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the child's process group, wait, then SIGKILL whatever is left of it,
    and of every process it started (in its group or in sessions of their own)."""
    tree = descendants(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    _signal_group(proc.pid, signal.SIGKILL)  # stragglers in its group, if any
    _kill_remaining(tree, timeout=min(timeout, 5.0))


def pid_alive(pid: int, expect: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, with ``expect``, its command line holds it.

    The command line check guards against a recorded pid reused by another program.
    """
    fields = _stat_fields(pid)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if not fields or fields[0] in ("Z", "X"):
        return False
    return expect is None or expect in cmdline


def stop_pid(pid: int, expect: str, timeout: float = 15.0) -> bool:
    """Stop a recorded session leader (its group, and every process it
    started) that this process did not start.

    Returns False when nothing of that name ran under that pid any more.
    """
    if not pid_alive(pid, expect):
        return False
    tree = descendants(pid)
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    _signal_group(pid, signal.SIGKILL)
    _kill_remaining(tree, timeout=min(timeout, 5.0))
    return True


def http_status(
    url: str,
    timeout: float = 2.0,
    headers: Mapping[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> int | None:
    """The HTTP status a GET of ``url`` answers, or None when nothing answers."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ssl.SSLError):
        return None
