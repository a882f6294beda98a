"""Starts the real Prometheus server (Debian's ``prometheus``) on loopback for integration tests.

Why the real one: what the operator and the Grafana dashboard rely on is what
Prometheus makes of the trainer's exposition (label handling, counter naming,
PromQL), and only the server itself shows that. It runs with a config of our
own, a throw-away TSDB in the test's tmp dir and a 1 s scrape interval; the
Debian system service is never used. The server itself is the dev cluster's
``trainpipe_operator.devcluster.prometheus``; this module adds the pytest side.

Use ``running_prometheus(targets, tmp_path)`` as a context manager, or the
``prometheus_factory`` fixture (tests/integration/conftest.py registers it).
Only a missing binary skips (``PROMETHEUS_BIN`` overrides where to look); any
other failure to start is an error, with the server's log in the message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from trainpipe_operator.devcluster._proc import free_port
from trainpipe_operator.devcluster.prometheus import (
    READY_TIMEOUT_S,
    PrometheusServer,
    prometheus_binary,
    values,
    write_config,
)

__all__ = [
    "READY_TIMEOUT_S", "SKIP_REASON", "PrometheusServer", "free_port", "prometheus_binary",
    "prometheus_factory", "running_prometheus", "values", "write_config",
]

SKIP_REASON = "Debian's prometheus is not installed: run `make system-deps`"


@contextlib.contextmanager
def running_prometheus(
    targets: Sequence[str] | Mapping[str, Sequence[str]],
    tmp_path: Path,
    job: str = "trainpipe",
    scrape_interval: str = "1s",
    attempts: int = 3,
) -> Iterator[PrometheusServer]:
    """Run Prometheus scraping ``targets`` until the block exits; skips only if it is not installed."""
    if prometheus_binary() is None:
        pytest.skip(SKIP_REASON)
    server = PrometheusServer.start(targets, Path(tmp_path), job=job,
                                    scrape_interval=scrape_interval, attempts=attempts)
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
