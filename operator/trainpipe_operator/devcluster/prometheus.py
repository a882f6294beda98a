"""The real Prometheus server (Debian's ``prometheus``) on loopback, with a
config of our own: static scrape targets, a 1 s scrape interval and a TSDB
in the given folder; the Debian system service is never used.
``PROMETHEUS_BIN`` overrides which binary runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._proc import free_port, log_tail, port_clash, spawn, stop_process

READY_TIMEOUT_S = 30.0
INSTALL_HINT = "install Debian's prometheus package (`make system-deps`) or set PROMETHEUS_BIN"

Targets = Sequence[str] | Mapping[str, Sequence[str]]


class PrometheusNotInstalled(FileNotFoundError):
    """No prometheus binary on this machine."""


def prometheus_binary() -> str | None:
    """Path of the prometheus binary, or None."""
    name = os.environ.get("PROMETHEUS_BIN", "prometheus")
    found = shutil.which(name)
    if found is None and name == "prometheus" and os.access("/usr/bin/prometheus", os.X_OK):
        found = "/usr/bin/prometheus"  # PATH without /usr/bin (odd CI images)
    return found


def write_config(path: Path, targets: Targets, job: str = "trainpipe",
                 scrape_interval: str = "1s") -> Path:
    """Write a prometheus.yml with static targets (a list for one job, or {job: [host:port]})."""
    jobs = dict(targets) if isinstance(targets, Mapping) else {job: list(targets)}
    config = {
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                   "evaluation_interval": scrape_interval},
        "scrape_configs": [{"job_name": name, "static_configs": [{"targets": list(hosts)}]}
                           for name, hosts in jobs.items()],
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def values(result: list[dict[str, Any]]) -> list[float]:
    """The sample values of a query result, as floats."""
    return [float(series["value"][1]) for series in result]


class PrometheusServer:
    """A running Prometheus: ``url``, ``query(expr)``, ``wait_for(expr, predicate, timeout)``, ``stop()``.

    ``PrometheusServer.start(targets, workdir)`` starts one.
    """

    def __init__(self, process: subprocess.Popen[bytes], url: str, log_path: Path):
        self.process = process
        self.url = url
        self.log_path = log_path

    @classmethod
    def start(cls, targets: Targets, workdir: Path | str, job: str = "trainpipe",
              scrape_interval: str = "1s", attempts: int = 3,
              ready_timeout: float = READY_TIMEOUT_S) -> PrometheusServer:
        """Start it on a free loopback port and wait until it is ready."""
        binary = prometheus_binary()
        if binary is None:
            raise PrometheusNotInstalled(f"no prometheus binary found: {INSTALL_HINT}")
        workdir = Path(workdir).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        config = write_config(workdir / "prometheus.yml", targets, job, scrape_interval)
        for attempt in range(attempts):
            port = free_port()
            log_path = workdir / f"prometheus-{attempt}.log"
            process = spawn([
                binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h",
                "--log.level=info",
            ], log_path)
            server = cls(process, f"http://127.0.0.1:{port}", log_path)
            try:
                server.wait_ready(ready_timeout)
                return server
            except (RuntimeError, TimeoutError):
                server.stop()
                # Another process may have taken the port between free_port() and the bind.
                if attempt + 1 < attempts and port_clash(log_path):
                    continue
                raise
        raise AssertionError("unreachable")

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for error messages."""
        return log_tail(self.log_path, chars)

    def _get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:  # noqa: S310
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:  # 4xx/5xx still carry a body
            return exc.code, exc.read()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Poll ``/-/ready`` until it answers 200; raise with the log if the server dies or is slow."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode} before it "
                                   f"was ready; its log ({self.log_path}) ends:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self._get("/-/ready", timeout=1.0)[0] == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready after {timeout}s; its log ({self.log_path}) "
                           f"ends:\n{self.log_tail()}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Run an instant PromQL query; returns ``data.result`` (for a vector: [{metric, value}])."""
        status, body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed ({status}): {answer.get('error', answer)}")
        result = answer["data"]["result"]
        if answer["data"]["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        return list(result)

    def query_range(self, expr: str, start: float, end: float, step: float = 5.0) -> list[dict[str, Any]]:
        """Run a range query (what a dashboard panel runs); returns ``data.result``
        (a matrix: [{metric, values: [[t, "v"], ...]}])."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        status, body = self._get("/api/v1/query_range?" + urllib.parse.urlencode(params))
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise RuntimeError(f"range query {expr!r} failed ({status}): {answer.get('error', answer)}")
        return list(answer["data"]["result"])

    def wait_for(self, expr: str, predicate: Callable[[list[dict[str, Any]]], bool] = bool,
                 timeout: float = 30.0, interval: float = 0.25) -> list[dict[str, Any]]:
        """Query ``expr`` until ``predicate(result)`` holds; return that result or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{expr!r} did not satisfy the predicate within {timeout}s; last result: {result}"
                )
            time.sleep(interval)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM), then kill it if it lingers."""
        stop_process(self.process, timeout)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
