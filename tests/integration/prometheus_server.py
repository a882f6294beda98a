"""Starts the real Prometheus server (Debian's ``prometheus``) on loopback for integration tests.

Why the real one: what the operator and the Grafana dashboard rely on is what
Prometheus makes of the trainer's exposition (label handling, counter naming,
PromQL), and only the server itself shows that. It runs with a config of our
own, a throw-away TSDB in the test's tmp dir and a 1 s scrape interval; the
Debian system service is never used.

Use ``running_prometheus(targets, tmp_path)`` as a context manager, or the
``prometheus_factory`` fixture (import it into a conftest.py to register it).
Only a missing binary skips (``PROMETHEUS_BIN`` overrides where to look); any
other failure to start is an error, with the server's log in the message.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

SKIP_REASON = "Debian's prometheus is not installed: run `make system-deps`"
READY_TIMEOUT_S = 30.0


def prometheus_binary() -> str | None:
    """Path of the prometheus binary, or None."""
    name = os.environ.get("PROMETHEUS_BIN", "prometheus")
    found = shutil.which(name)
    if found is None and name == "prometheus" and os.access("/usr/bin/prometheus", os.X_OK):
        found = "/usr/bin/prometheus"  # PATH without /usr/bin (odd CI images)
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """A running Prometheus: ``url``, ``query(expr)``, ``wait_for(expr, predicate, timeout)``."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log_path: Path):
        self.process = process
        self.url = url
        self.log_path = log_path

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:  # 4xx/5xx still carry a body
            return exc.code, exc.read()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Poll ``/-/ready`` until it answers 200; raise with the log if the server dies or is slow."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self.process.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(OSError):
                if self._get("/-/ready", timeout=1.0)[0] == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready after {timeout}s:\n{self.log_tail()}")

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

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
        interval: float = 0.25,
    ) -> list[dict[str, Any]]:
        """Query ``expr`` until ``predicate(result)`` holds; return that result or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
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
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)


def values(result: list[dict[str, Any]]) -> list[float]:
    """The sample values of a query result, as floats."""
    return [float(series["value"][1]) for series in result]


def write_config(
    path: Path,
    targets: Sequence[str] | Mapping[str, Sequence[str]],
    job: str = "trainpipe",
    scrape_interval: str = "1s",
) -> Path:
    """Write a prometheus.yml with static targets (a list for one job, or {job: [host:port]})."""
    jobs = dict(targets) if isinstance(targets, Mapping) else {job: list(targets)}
    config = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": list(hosts)}]}
            for name, hosts in jobs.items()
        ],
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


@contextlib.contextmanager
def running_prometheus(
    targets: Sequence[str] | Mapping[str, Sequence[str]],
    tmp_path: Path,
    job: str = "trainpipe",
    scrape_interval: str = "1s",
    attempts: int = 3,
) -> Iterator[PrometheusServer]:
    """Run Prometheus scraping ``targets`` until the block exits; skips only if it is not installed."""
    binary = prometheus_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp_path / "prometheus.yml", targets, job, scrape_interval)
    server: PrometheusServer | None = None
    for attempt in range(attempts):
        port = free_port()
        log_path = tmp_path / f"prometheus-{attempt}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = PrometheusServer(process, f"http://127.0.0.1:{port}", log_path)
        try:
            server.wait_ready()
            break
        except (RuntimeError, TimeoutError):
            server.stop()
            # Another process may have taken the port between free_port() and the bind.
            if "address already in use" in server.log_tail() and attempt + 1 < attempts:
                continue
            raise
    assert server is not None
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """Fixture: ``start(targets, **kwargs) -> PrometheusServer``; every server stops at teardown."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(
            targets: Sequence[str] | Mapping[str, Sequence[str]], **kwargs: Any
        ) -> PrometheusServer:
            nonlocal count
            count += 1
            return stack.enter_context(
                running_prometheus(targets, tmp_path / f"prometheus-{count}", **kwargs)
            )

        yield start
