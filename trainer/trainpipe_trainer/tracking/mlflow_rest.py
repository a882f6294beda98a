"""A small client for MLflow's REST API (``/api/2.0/mlflow/...``), used by
both the control plane (parent runs, gate outcomes, the registry) and the
trainer (a job's metrics and artifacts). No torch, no mlflow package.

Why not ``mlflow.MlflowClient``: it reads credentials from process-wide
environment variables, and the operator serves many teams from one process;
here credentials are per client object, sent on each request to the one
server the client was made for, and never part of a message, a log line or
a repr. (Tests read everything back with MLflow's own client.)

Every call has a timeout; transient failures (connection refused, 429, 5xx)
are retried with backoff up to ``retries`` times, then raise
:class:`MlflowUnavailable` naming the server (without credentials). A
request MLflow refuses (4xx) raises :class:`MlflowRequestError` with MLflow's
own error code and message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class MlflowError(Exception):
    """Base class: something about an MLflow server went wrong."""


class MlflowUnavailable(MlflowError):
    """The server did not answer (after retries): the caller degrades."""


class MlflowRequestError(MlflowError):
    """The server answered with an error (4xx): ``code`` is MLflow's
    ``error_code`` (e.g. RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST)."""

    def __init__(self, message: str, code: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class MlflowCredentials:
    """A bearer token, or a username and password (basic auth); never shown."""

    token: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: dict[str, str]) -> MlflowCredentials:
        """From MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD in ``env``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Metric:
    key: str
    value: float
    step: int
    timestamp_ms: int


class MlflowRest:
    """One tracking server. ``tracking_uri`` is ``http(s)://host[:port][/prefix]``
    without credentials in it (refused with ValueError otherwise)."""

    def __init__(self, tracking_uri: str, credentials: MlflowCredentials | None = None,
                 timeout: float = 10.0, retries: int = 3, backoff: float = 0.5) -> None:
        raise NotImplementedError

    # experiments
    def get_or_create_experiment(self, name: str) -> str:
        """The experiment's id, created when it does not exist (race-safe)."""
        raise NotImplementedError

    # runs
    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        raise NotImplementedError

    def find_run(self, experiment_id: str, tags: dict[str, str]) -> str | None:
        """The id of the (newest) run whose tags include all of ``tags``, or None."""
        raise NotImplementedError

    def get_run(self, run_id: str) -> dict[str, Any]:
        """MLflow's run JSON (``info``, ``data``)."""
        raise NotImplementedError

    def set_terminated(self, run_id: str, status: str = "FINISHED") -> None:
        """status: RUNNING, FINISHED, FAILED or KILLED."""
        raise NotImplementedError

    def log_batch(self, run_id: str, metrics: Sequence[Metric] = (), params: dict[str, str] | None = None,
                  tags: dict[str, str] | None = None) -> None:
        """Metrics, params and tags in as few requests as MLflow's limits
        allow (1000 metrics, 100 params, 100 tags per request; values
        truncated to MLflow's length limits)."""
        raise NotImplementedError

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        raise NotImplementedError

    def last_step(self, run_id: str, key: str) -> int | None:
        """The largest step logged for ``key`` (resume: never log it twice)."""
        raise NotImplementedError

    # artifacts (the server's proxied artifact store: --serve-artifacts)
    def log_artifact(self, run_id: str, local_path: Path, artifact_path: str = "") -> str:
        """Uploads one file under ``artifact_path``; returns its artifact path."""
        raise NotImplementedError

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str = "") -> list[str]:
        raise NotImplementedError

    def list_artifacts(self, run_id: str, path: str = "") -> list[str]:
        raise NotImplementedError

    # the model registry
    def ensure_registered_model(self, name: str, description: str = "") -> None:
        raise NotImplementedError

    def create_model_version(self, name: str, source: str, run_id: str, tags: dict[str, str],
                             description: str) -> str:
        """Returns the new version number (as MLflow gives it, a string)."""
        raise NotImplementedError

    def find_model_version(self, name: str, tags: dict[str, str]) -> str | None:
        """The version of ``name`` whose tags include all of ``tags`` (idempotent registration)."""
        raise NotImplementedError

    def set_alias(self, name: str, alias: str, version: str) -> None:
        raise NotImplementedError

    def get_version_by_alias(self, name: str, alias: str) -> str | None:
        raise NotImplementedError

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        raise NotImplementedError
