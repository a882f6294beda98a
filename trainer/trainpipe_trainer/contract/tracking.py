"""Where a training job reports to: an MLflow run and/or a W&B run, chosen
and created by the control plane (``JobConfig.tracking``).

The control plane owns the run hierarchy (one parent run per pipeline, one
child run per job: phase and iteration) and hands the job the child's id, so
a resumed job (the next attempt) logs into the same run. No credential is
ever part of this config: the job reads them from its own environment
(``MLFLOW_TRACKING_TOKEN``, or ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD``; ``WANDB_API_KEY``), which the launcher fills
per job. Tracking never decides a gate and never stops training.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# The status file a job leaves in its run directory when a tracking server
# could not be reached (the control plane reads it: TrackingDegraded).
TRACKING_STATUS_FILE = "tracking_status.json"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class MlflowJobTarget(_Model):
    """The MLflow run a job logs into (created by the control plane)."""

    tracking_uri: str = Field(..., description="http(s)://host:port of the MLflow tracking server, no credentials")
    experiment_id: str = Field(..., description="the experiment the run belongs to")
    run_id: str = Field(..., description="the job's child run; a resumed job continues it")


class WandbJobTarget(_Model):
    """The W&B run a job logs into; its id is stable per job, so a resumed
    job continues the same run (``resume='allow'``)."""

    project: str
    entity: str | None = None
    mode: Literal["online", "offline"] = "offline"
    run_id: str = Field(..., description="stable per (pipeline run, phase folder): the resume key")
    run_name: str
    group: str = Field(..., description="the pipeline run: W&B's grouping of a pipeline's jobs")
    dir: str | None = Field(None, description="where W&B writes (offline runs); default: <runDir>/wandb")
    tags: list[str] = Field(default_factory=list)


class TrackingConfig(_Model):
    mlflow: MlflowJobTarget | None = None
    wandb: WandbJobTarget | None = None
    step_every: int = Field(50, ge=1, le=1_000_000, description="log step metrics every N optimizer steps")
    log_checkpoints: bool = Field(False, description="upload best/last checkpoints as artifacts")
    tags: dict[str, str] = Field(default_factory=dict,
                                 description="phase, iteration, pipeline, namespace, runId, attempt")
