"""A local Ray head for the dev cluster, the tests and ``RayJobLauncher``:
``ray start --head --block`` as a child in a session of its own, started from
this Python environment's ``bin`` (first on its PATH, so a job's ``python``
is this environment's), every port on loopback-chosen free ports so that
several heads can run on one machine, token authentication on.

The token: the one given, else ``RAY_AUTH_TOKEN`` from the environment, else
Ray's default file ``~/.ray/auth_token`` (written, as ``ray get-auth-token
--generate`` would, when missing). Clients use it with ``RAY_AUTH_MODE=token``.
Stopping first asks the head to stop its running jobs (Ray's Job API: each
driver gets SIGTERM and checkpoints), then SIGTERMs the head's process group,
then whatever the head started that is still alive: a job's driver runs in a
session of its own and would otherwise outlive the head. This head and only
this one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ._proc import free_ports, http_status, log_tail, port_clash, spawn, stop_process

TOKEN_FILE = Path.home() / ".ray" / "auth_token"
PORT_FLAGS = (
    "--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
    "--node-manager-port", "--object-manager-port",
)


def default_token() -> str:
    """``RAY_AUTH_TOKEN``, else ``~/.ray/auth_token`` (generated when missing)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or TOKEN_FILE)
    if not path.exists() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))  # what Ray itself generates
        path.chmod(0o600)
    return path.read_text().strip()


def wait_for_dashboard(address: str, head: subprocess.Popen, timeout: float,
                       log_path: Path | None = None, token: str | None = None) -> None:
    """Wait until the dashboard answers at ``address`` (401 without a token counts);
    with ``token``, until it reports this node ALIVE (the raylet is up too:
    ``ray start`` has finished starting)."""
    deadline = time.monotonic() + timeout
    last = "nothing"
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"the local Ray head exited with code {head.returncode} while "
                               f"starting{_log_hint(log_path)}")
        if token:
            last = _node_states(address, token)
            if "ALIVE" in last:
                return
        elif http_status(f"{address}/api/version", timeout=2.0) is not None:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the local Ray head at {address} was not up within {timeout:.0f} s "
                       f"(last answer: {last}){_log_hint(log_path)}")


def _node_states(address: str, token: str) -> str:
    """The states of the nodes the dashboard's state API lists, or why it could not tell."""
    request = urllib.request.Request(f"{address}/api/v0/nodes",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5.0) as resp:  # noqa: S310 - loopback
            body = json.load(resp)
        return ",".join(str(n.get("state")) for n in body["data"]["result"]["result"]) or "no nodes"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return type(exc).__name__


def stop_jobs(address: str, token: str, timeout: float = 30.0) -> list[str]:
    """Ask the head at ``address`` to stop every job still running, and wait
    (up to ``timeout``) until none is; returns the ids of the jobs it stopped.
    Best effort: a head that does not answer has nothing left to ask."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def running() -> list[str] | None:
        request = urllib.request.Request(f"{address}/api/jobs/", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5.0) as resp:  # noqa: S310 - loopback
                jobs = json.load(resp)
        except (OSError, ValueError):
            return None
        return [str(job.get("submission_id")) for job in jobs
                if job.get("submission_id") and job.get("status") in ("PENDING", "RUNNING")]

    stopped = running() or []
    for submission_id in stopped:
        # The id goes into the path quoted: an id with "/" or "?" stays one id.
        stop_url = f"{address}/api/jobs/{urllib.parse.quote(submission_id, safe='')}/stop"
        request = urllib.request.Request(stop_url, data=b"{}",
                                         headers=headers, method="POST")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(request, timeout=5.0).close()  # noqa: S310 - loopback
    deadline = time.monotonic() + timeout
    while stopped and running() and time.monotonic() < deadline:
        time.sleep(0.5)
    return stopped


def _log_hint(log_path: Path | None) -> str:
    return f"; its log ({log_path}) ends:\n{log_tail(log_path)}" if log_path else ""


class RayHead:
    """``start()`` (or ``with``) → ``address`` (dashboard URL), ``token``, ``port`` (GCS),
    ``metrics_address`` (host:port Prometheus scrapes); ``stop()``. ``env``: variables
    added to this environment's for the head and the jobs it runs."""

    def __init__(self, workdir: Path | str, token: str | None = None,
                 bin_dir: Path | str | None = None, ready_timeout: float = 180.0,
                 num_cpus: int | None = None, env: dict[str, str] | None = None):
        self.workdir = Path(workdir).absolute()
        self.bin_dir = Path(bin_dir) if bin_dir else Path(sys.executable).parent
        self._explicit_token = token
        self.token = ""
        self.ready_timeout = ready_timeout
        self.num_cpus = num_cpus
        # Set for the head and so for every job it runs (their drivers and
        # workers inherit it): e.g. PYTHONPATH naming a task's module, as a
        # platform installs it in the trainer image.
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.port = 0
        self.metrics_address = ""
        self.log_path = self.workdir / "ray-head.log"
        self._temp_dir: Path | None = None

    def start(self, attempts: int = 3) -> RayHead:
        ray = self.bin_dir / "ray"
        if not os.access(ray, os.X_OK):
            raise FileNotFoundError(
                f"{ray} not found: install Ray into this environment (`make venv`, extra `trainer`)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token = self._explicit_token or default_token()
        env = {**os.environ, **self.env,
               "PATH": f"{self.bin_dir}{os.pathsep}{self.env.get('PATH', os.environ.get('PATH', ''))}",
               "RAY_AUTH_MODE": "token"}
        # No 30 s SIGTERM drain (meant for Serve under KubeRay): stop at once.
        env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
        if self._explicit_token:
            env["RAY_AUTH_TOKEN"] = self._explicit_token
        for attempt in range(attempts):
            try:
                self._start_once(ray, env)
                return self
            except RuntimeError:
                # Another process took one of the ports between choosing and binding it.
                if attempt + 1 < attempts and port_clash(self.log_path):
                    continue
                raise
        raise AssertionError("unreachable")

    def _start_once(self, ray: Path, env: dict[str, str]) -> None:
        ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        cmd = [str(ray), "start", "--head", "--block", "--dashboard-host=127.0.0.1",
               "--disable-usage-stats", f"--temp-dir={self.temp_dir()}",
               *(f"{flag}={port}" for flag, port in ports.items())]
        if self.num_cpus is not None:
            cmd.append(f"--num-cpus={self.num_cpus}")
        self.address = f"http://127.0.0.1:{ports['--dashboard-port']}"
        self.port = ports["--port"]
        self.metrics_address = f"127.0.0.1:{ports['--metrics-export-port']}"
        self.process = spawn(cmd, self.log_path, env=env)
        try:
            wait_for_dashboard(self.address, self.process, self.ready_timeout, self.log_path,
                               self.token)
        except BaseException:
            self.stop()
            raise

    def temp_dir(self) -> Path:
        """A session folder of this head's own. Ray's job supervisor finds the
        cluster a job driver joins through ``<temp dir>/ray_current_cluster``;
        in the shared /tmp/ray that is whichever head started last, so with
        two heads on one machine a driver could join the other one (seen:
        a job that waited for a head that had gone). Short, under /tmp:
        Ray's socket paths must fit in 107 bytes."""
        if self._temp_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="tpray-", dir="/tmp"))
            (self.workdir / "ray-temp-dir").unlink(missing_ok=True)
            (self.workdir / "ray-temp-dir").symlink_to(self._temp_dir)  # where the logs are
        return self._temp_dir

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self, timeout: float = 60.0, jobs_timeout: float = 30.0) -> None:
        """Stop the running jobs (they checkpoint), then SIGTERM the head's process
        group and everything it started; SIGKILL what is left after ``timeout``."""
        if self.process is not None:
            if self.process.poll() is None and self.token:
                stop_jobs(self.address, self.token, jobs_timeout)
            stop_process(self.process, timeout)

    def __enter__(self) -> RayHead:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
