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


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the child's process group, wait, then SIGKILL whatever is left of it."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    _signal_group(proc.pid, signal.SIGKILL)  # stragglers it started, if any


def pid_alive(pid: int, expect: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, with ``expect``, its command line holds it.

    The command line check guards against a recorded pid reused by another program.
    """
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        return False
    return expect is None or expect in cmdline


def stop_pid(pid: int, expect: str, timeout: float = 15.0) -> bool:
    """Stop a recorded session leader (and its group) that this process did not start.

    Returns False when nothing of that name ran under that pid any more.
    """
    if not pid_alive(pid, expect):
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    _signal_group(pid, signal.SIGKILL)
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
