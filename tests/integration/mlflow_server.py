"""Starts a real MLflow tracking server on loopback for integration tests.

Why the real one: what a user sees in MLflow is what the server makes of our
REST calls (batch limits, metric histories, the proxied artifact store, the
registry's aliases), and only the server shows that; tests read everything
back with MLflow's own client (mlflow-skinny in the project's venv). The
server runs from its own venv (hack/mlflow.sh, cached outside the checkout)
with a SQLite store and an artifact folder in the test's tmp dir; the server
itself is the dev cluster's ``trainpipe_operator.devcluster.mlflow_server``.

Fixture ``mlflow_server`` (module scope: a start takes 10-35 s), registered
in tests/integration/conftest.py; or ``running_mlflow(tmp_path)`` as a
context manager. Only a server that cannot be provided skips; any other
failure to start is an error, with the server's log in the message.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainpipe_operator.devcluster.mlflow_server import (
    MlflowNotInstalled,
    MlflowServer,
    mlflow_binary,
)

__all__ = ["MlflowServer", "mlflow_server", "running_mlflow"]


@contextlib.contextmanager
def running_mlflow(workdir: Path) -> Iterator[MlflowServer]:
    """An MLflow server until the block exits (terminate, wait, kill); skips
    only when hack/mlflow.sh cannot provide the executable."""
    try:
        binary = mlflow_binary()
    except MlflowNotInstalled as exc:
        pytest.skip(str(exc))
    server = MlflowServer.start(workdir, binary=binary)
    # Said on stderr (shown with -s / on failure): the start dominates these tests' time.
    print(f"mlflow server {server.uri} ready in {server.started_in_s:.1f} s", file=sys.stderr)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A running MLflow server (``.uri``), one per test module."""
    with running_mlflow(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server
