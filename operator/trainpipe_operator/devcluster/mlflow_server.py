"""A real MLflow tracking server (``mlflow server``) on loopback: a SQLite
backend store and a local artifact destination in the given folder,
artifacts proxied by the server (``mlflow-artifacts:/``), one worker.

The executable comes from ``hack/mlflow.sh`` (its own venv, cached outside
the checkout, keyed by version; ``MLFLOW_SERVER`` wins): the full mlflow
package cannot share the project's venv (it pins python-dateutil<3, which
the kubernetes client does not accept). Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from ._proc import free_port, log_tail, port_clash, spawn, stop_process

# The first start on a cold, busy machine took 35 s (imports, then the
# database migrations of a fresh SQLite store); later ones are quicker.
READY_TIMEOUT_S = 120.0
REPO = Path(__file__).resolve().parents[3]
MLFLOW_SH = REPO / "hack" / "mlflow.sh"
INSTALL_HINT = "run hack/mlflow.sh (it builds the server's venv once) or set MLFLOW_SERVER to an mlflow executable"


class MlflowNotInstalled(FileNotFoundError):
    """No mlflow server executable can be provided."""


def mlflow_binary() -> str:
    """The ``mlflow`` executable: MLFLOW_SERVER when it names one, else what
    hack/mlflow.sh prints (it installs the server once: minutes). Raises
    MlflowNotInstalled saying why when neither works."""
    given = os.environ.get("MLFLOW_SERVER")
    if given and os.access(given, os.X_OK):
        return given
    if not MLFLOW_SH.exists():
        raise MlflowNotInstalled(f"no mlflow server: MLFLOW_SERVER is unset and {MLFLOW_SH} is missing; {INSTALL_HINT}")
    done = subprocess.run(["bash", str(MLFLOW_SH)], capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    path = lines[-1] if lines else ""
    if done.returncode != 0 or not path or not os.access(path, os.X_OK):
        errors = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("WARNING: Location"))
        raise MlflowNotInstalled(f"hack/mlflow.sh could not provide the mlflow server ({done.returncode}): "
                                 f"{errors.strip()[-1500:]}")
    return path


class MlflowServer:
    """A running tracking server: ``uri``, ``stop()``; ``MlflowServer.start(workdir)`` starts one.

    ``started_in_s`` says how long it took to answer ``/health``."""

    def __init__(self, process: subprocess.Popen[bytes], uri: str, workdir: Path, log_path: Path,
                 binary: str) -> None:
        self.process = process
        self.binary = binary
        self.uri = uri
        self.workdir = workdir
        self.log_path = log_path
        self.started_in_s = 0.0

    @property
    def backend_store_uri(self) -> str:
        return f"sqlite:///{self.workdir / 'mlflow.db'}"

    @property
    def artifacts_destination(self) -> Path:
        return self.workdir / "artifacts"

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls, workdir: Path | str, binary: str | None = None, attempts: int = 3,
              ready_timeout: float = READY_TIMEOUT_S, port: int | None = None) -> MlflowServer:
        """Start it on a free loopback port (or ``port``) and wait for ``/health``."""
        binary = binary or mlflow_binary()
        workdir = Path(workdir).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(attempts):
            chosen = port or free_port()
            log_path = workdir / f"mlflow-{attempt}.log"
            # The server's own env: no tracking settings of the caller leak in
            # (MLFLOW_TRACKING_URI would point it at another store).
            # No job runner either: it serves GenAI jobs trainpipe does not use,
            # and it would be a second process importing mlflow at start.
            env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
            env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
            began = time.monotonic()
            process = spawn([
                binary, "server", "--host", "127.0.0.1", "--port", str(chosen),
                "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
                "--artifacts-destination", str(workdir / "artifacts"),
                "--serve-artifacts", "--workers", "1",
            ], log_path, env=env, cwd=workdir)
            server = cls(process, f"http://127.0.0.1:{chosen}", workdir, log_path, binary)
            try:
                server.wait_ready(ready_timeout)
                server.started_in_s = time.monotonic() - began
                return server
            except (RuntimeError, TimeoutError):
                server.stop()
                if port is None and attempt + 1 < attempts and port_clash(log_path):
                    continue
                raise
        raise AssertionError("unreachable")

    def log_tail(self, chars: int = 3000) -> str:
        return log_tail(self.log_path, chars)

    def healthy(self, timeout: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=timeout) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Poll ``/health`` until it answers 200; raise with the log if the server dies or is slow."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode} before it was ready; "
                                   f"its log ({self.log_path}) ends:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self.healthy():
                    return
            time.sleep(0.2)
        raise TimeoutError(f"mlflow server not ready after {timeout:.0f}s; its log ({self.log_path}) "
                           f"ends:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's group (uvicorn and its job runner), wait, then kill what lingers."""
        stop_process(self.process, timeout)

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
