"""A training job's MLflow run: the child run the control plane created
(``JobConfig.tracking.mlflow.runId``), spoken to through :class:`MlflowRest`.

- Params at start: the job config flattened (``train.lr``, ...) and
  ``config_hash``. MLflow refuses to change a param's value, so a resumed job
  logs only the params its run does not hold yet (a changed value, e.g.
  ``resources.workers`` of a retry, is kept as first logged and named in a
  warning).
- Metrics per epoch with step = the epoch number (so a metric's history is
  its column of ``metrics.json``); per step ``step/<name>`` with step = the
  global optimizer step.
- Resume: at start the job asks the run for the last step of ``train_loss``
  and ``step/train_loss`` and never logs an epoch or a step at or below them:
  no duplicated or rewound steps, whichever attempt logged them.
- Artifacts: the epoch's media (``confusion_matrix/epoch_<N>.png``,
  ``previews/epoch_NNN/...``), and whatever the job hands over at the end.
- The run's status: RUNNING at start (a resumed run was KILLED by the
  interruption), FINISHED / FAILED at the end, KILLED when interrupted (the
  next attempt continues it).

Credentials are read once from the job's environment by the caller and live
only in the client object.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainpipe_trainer.contract.tracking import MlflowJobTarget
from trainpipe_trainer.tracking.mlflow_rest import (
    Metric,
    MlflowCredentials,
    MlflowRest,
    MlflowUnavailable,
)
from trainpipe_trainer.tracking.sink import JobStatus, MediaFile, Sink

log = logging.getLogger("trainpipe.train")

#: The metric whose last step says which epochs (steps) the run already holds.
EPOCH_ANCHOR = "train_loss"
STEP_ANCHOR = "step/train_loss"

RUN_STATUS = {"completed": "FINISHED", "early_stopped": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}

#: A job's client gives up sooner than the control plane's: training waits for it.
JOB_TIMEOUT_S = 5.0
JOB_RETRIES = 1


class MlflowSink(Sink):
    name = "mlflow"
    unavailable = (MlflowUnavailable,)

    def __init__(self, target: MlflowJobTarget, credentials: MlflowCredentials | None = None, *,
                 timeout: float = JOB_TIMEOUT_S, retries: int = JOB_RETRIES, backoff: float = 0.5) -> None:
        self.target = target
        self.run_id = target.run_id
        self.server = target.tracking_uri
        self._credentials = credentials
        self._timeout, self._retries, self._backoff = timeout, retries, backoff
        self._client: MlflowRest | None = None
        self.last_epoch = 0
        self.last_step = 0
        self._media: list[MediaFile] = []  # of logged epochs, not yet uploaded

    def __repr__(self) -> str:
        return f"MlflowSink(server={self.server!r}, run_id={self.run_id!r})"

    @property
    def client(self) -> MlflowRest:
        if self._client is None:
            self._client = MlflowRest(self.target.tracking_uri, self._credentials, timeout=self._timeout,
                                      retries=self._retries, backoff=self._backoff)
        return self._client

    # ---------------------------------------------------------------- calls
    def start(self, params: Mapping[str, str]) -> None:
        run = self.client.get_run(self.run_id)
        held = _params_of(run)
        new = {key: value for key, value in params.items() if key not in held}
        changed = sorted(key for key, value in params.items()
                         if key in held and held[key] != value and not value.startswith(held[key]))
        if changed:
            log.warning("Tracking: mlflow run %s keeps its first value of param(s) %s (MLflow refuses a change)",
                        self.run_id, ", ".join(changed))
        if new:
            self.client.log_batch(self.run_id, params=new)
        self.last_epoch = self.client.last_step(self.run_id, EPOCH_ANCHOR) or 0
        self.last_step = self.client.last_step(self.run_id, STEP_ANCHOR) or 0
        if self.last_epoch or self.last_step:
            log.info("Tracking: mlflow run %s continues after epoch %d, step %d",
                     self.run_id, self.last_epoch, self.last_step)
        if _status_of(run) != "RUNNING":
            self.client.set_terminated(self.run_id, "RUNNING")

    def epoch(self, epoch: int, metrics: Mapping[str, float], media: Sequence[MediaFile] = ()) -> None:
        # Replayed after an outage, a logged epoch's metrics are skipped and
        # only its media still pending are uploaded.
        if epoch > self.last_epoch:
            self.client.log_batch(self.run_id, metrics=_metrics(metrics, epoch))
            self.last_epoch = epoch
            self._media.extend(media)
        while self._media:
            self._upload(self._media[0])
            self._media.pop(0)

    def step(self, step: int, metrics: Mapping[str, float]) -> None:
        if step <= self.last_step:
            return
        self.client.log_batch(self.run_id, metrics=_metrics(metrics, step))
        self.last_step = step

    def artifact(self, path: Path, artifact_path: str = "") -> None:
        self.client.log_artifact(self.run_id, Path(path), artifact_path)

    def finish(self, status: JobStatus) -> None:
        self.client.set_terminated(self.run_id, RUN_STATUS[status])

    # -------------------------------------------------------------- helpers
    def _upload(self, media: MediaFile) -> None:
        if not media.path.is_file():
            log.warning("Tracking: %s not uploaded: no such file", media.path)
            return
        if media.path.name == media.name:
            self.client.log_artifact(self.run_id, media.path, media.artifact_path)
            return
        with tempfile.TemporaryDirectory(prefix="trainpipe-artifact-") as folder:
            renamed = Path(folder) / media.name
            shutil.copyfile(media.path, renamed)
            self.client.log_artifact(self.run_id, renamed, media.artifact_path)


def _metrics(values: Mapping[str, float], step: int) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(key=key, value=float(value), step=step, timestamp_ms=now) for key, value in values.items()]


def _run_body(run: Mapping[str, Any]) -> Mapping[str, Any]:
    """get_run's JSON, with or without MLflow's ``{"run": ...}`` envelope."""
    inner = run.get("run")
    return inner if isinstance(inner, Mapping) else run


def _params_of(run: Mapping[str, Any]) -> dict[str, str]:
    params = (_run_body(run).get("data") or {}).get("params") or []
    if isinstance(params, Mapping):
        return {str(k): str(v) for k, v in params.items()}
    return {str(p["key"]): str(p.get("value", "")) for p in params if isinstance(p, Mapping) and "key" in p}


def _status_of(run: Mapping[str, Any]) -> str | None:
    info = _run_body(run).get("info") or {}
    status = info.get("status")
    return str(status) if status is not None else None
