"""The status: the pipeline's whole state. The operator writes it to the
resource's status subresource; the local runner writes the same shape to
``state.json``. Everything here is derived from evidence the jobs wrote and
decisions the phase machine took, so a person can see why it moved."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainpipe_operator.spec.base import CamelModel
from trainpipe_operator.spec.lifecycle_status import CleanupStatus, SuspensionStatus

Phase = Literal[
    "Pending", "Planning", "Baseline", "Diagnostics", "Optimization",
    "Finalization", "AwaitingApproval", "Succeeded", "Failed",
]
PHASES: tuple[str, ...] = Phase.__args__  # type: ignore[attr-defined]
CheckOutcome = Literal["pass", "warn", "fail", "skip"]


class Condition(CamelModel):
    """Kubernetes API conventions' condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(..., pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class CheckStatus(CamelModel):
    id: str
    result: CheckOutcome
    mandatory: bool = True
    value: str | float | int | bool | None = None
    threshold: str | float | int | None = None
    evidence: str = ""
    message: str = ""


class GateStatus(CamelModel):
    gate: str
    phase: str
    passed: bool
    iteration: int = 0
    evaluated_at: str
    checks: list[CheckStatus] = Field(default_factory=list)


class JobStatus(CamelModel):
    submission_id: str | None = None
    phase: str | None = None
    state: str | None = None  # PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED, INTERRUPTED
    attempt: int = 0
    resumed_from_epoch: int | None = None
    exit_code: int | None = None
    message: str = ""
    started_at: str | None = Field(default=None, description="when this attempt was submitted")
    reason: str | None = Field(
        default=None, description="why an earlier attempt of this job ended early: Stalled (the watchdog stopped it)")


class ProgressStatus(CamelModel):
    """Where the running job stands (its heartbeat) and how long the
    pipeline may still take; updated at most every few seconds (see
    ``pipeline/job_progress.py`` for how the ETA is estimated)."""

    phase: str = Field(..., description="the phase whose job this is")
    summary: str = Field(..., description="the phase and epoch, e.g. Baseline 12/20 (the Progress column)")
    epoch: int = Field(0, description="epochs completed")
    epochs: int = Field(0, description="epochs the job trains")
    step: int = Field(0, description="optimizer steps completed")
    samples_per_second: float | None = None
    job_eta_seconds: int | None = Field(default=None, description="seconds the running job still needs, estimated")
    pipeline_eta_seconds: int | None = Field(
        default=None, description="seconds the pipeline may still need: this job and the phases left (an upper bound)")
    eta: str | None = Field(default=None, description="pipelineEtaSeconds as a duration, e.g. 1h5m (the ETA column)")
    heartbeat_at: str | None = Field(default=None, description="the job's last heartbeat")
    updated_at: str = Field(..., description="when this progress was read")


class MetricsStatus(CamelModel):
    """The figures a person (and ``kubectl get``) reads. ``targetMetric`` is
    the target's metric by name (``val_acc``, the VAE's ``val_recon``, a
    custom task's), ``bestTargetMetric`` its best value so far (a test_X
    target: its val_X proxy); ``bestValAcc`` and ``testAcc`` are the
    classification task's."""

    best_val_acc: float | None = Field(default=None, description="classification: the best validation accuracy")
    best_val_loss: float | None = None
    final_train_loss: float | None = None
    test_acc: float | None = Field(default=None, description="classification: the held-out test accuracy")
    gpu_util_mean: float | None = None
    target_metric: str | None = Field(default=None, description="the target's metric, by name")
    target_value: float | None = Field(default=None, description="the target's value")
    best_target_metric: float | None = Field(
        default=None, description="the best value of the target metric so far (validation)"
    )
    test_target_metric: float | None = Field(
        default=None, description="the target metric's figure on the held-out test split (Finalization)"
    )


class Decision(CamelModel):
    phase: str
    decision: str
    reason: str
    time: str
    iteration: int = 0


class RunResult(CamelModel):
    """One training run the pipeline made, and how it scored."""

    phase: str
    iteration: int = 0
    run_dir: str
    status: str
    target_metric: float | None = None
    best_val_acc: float | None = None
    best_val_loss: float | None = None


class ApprovalStatus(CamelModel):
    """Who approved, as the admission webhook verified it (RBAC verb
    ``approve``, a SubjectAccessReview), for which run, and when."""

    by: str
    at: str
    run_id: str


class TrackingStatus(CamelModel):
    """Where the pipeline's runs are tracked (spec.tracking), and whether the
    record is complete. Never holds a credential. ``degraded`` says which
    server the control plane could not reach (or was refused by); ``pending``
    lists what the control plane will send again (gate records, the model
    registration, the approval's alias), retried after ``retryAfter``;
    ``jobsDegraded`` the jobs that could not reach their server (their runs
    miss what they could not send)."""

    experiment_id: str | None = Field(default=None, description="the MLflow experiment's id")
    mlflow_parent_run_id: str | None = Field(default=None, description="the pipeline run's MLflow run")
    child_runs: dict[str, str] = Field(
        default_factory=dict, description="each phase folder's MLflow run (a job's, a gate's), by folder")
    registered_model: str | None = Field(default=None, description="the registered model Finalization adds to")
    model_version: str | None = Field(default=None, description="its version registered by this run")
    aliases: list[str] = Field(default_factory=list, description="the aliases this run set on it")
    wandb_aliases: list[str] = Field(
        default_factory=list, description="the aliases this run gave the W&B model artifact")
    final_phase: str | None = Field(default=None, description="the phase last recorded on the pipeline run")
    degraded: str | None = Field(
        default=None, description=("the control plane's tracking problem: a server unreachable (cleared once it "
                                    "answers and nothing is left to retry), a request refused, an error"))
    degraded_reason: str | None = Field(
        default=None, description="ServerUnreachable, GaveUpRetrying, RequestRefused or TrackingError")
    jobs_degraded: dict[str, str] = Field(
        default_factory=dict, description="jobs that could not reach their server, by phase folder: what they said")
    pending: list[str] = Field(default_factory=list, description="tracking work to retry, oldest first")
    retry_after: str | None = Field(default=None, description="no tracking call before this time (a server down)")
    failures: int = Field(default=0, description="consecutive unreachable calls (the retry delay doubles)")


class PipelineStatus(CamelModel):
    phase: Phase = "Pending"
    message: str = ""
    run_id: str | None = None
    observed_generation: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    iteration: int = 0
    last_gate: str | None = None
    baseline_attempts: int = 0
    diagnostics_runs: int = 0
    budget_exhausted: bool = False
    accepted_best: str | None = Field(
        default=None,
        description="why the pipeline finalizes its best result short of the target (diminishing returns, "
        "iterations used up, budget spent); null while it aims for the target",
    )
    best_run: str | None = None
    runs: list[RunResult] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    gates: dict[str, GateStatus] = Field(default_factory=dict)
    job: JobStatus = Field(default_factory=JobStatus)
    metrics: MetricsStatus = Field(default_factory=MetricsStatus)
    decisions: list[Decision] = Field(default_factory=list)
    artifacts: dict[str, str] = Field(default_factory=dict)
    approval: ApprovalStatus | None = None
    tracking: TrackingStatus | None = Field(default=None, description="experiment tracking (spec.tracking)")
    progress: ProgressStatus | None = Field(default=None, description="the running job's progress and the ETA")
    suspension: SuspensionStatus | None = Field(
        default=None, description="spec.suspend and queue admission: where the pipeline is held and since when")
    cleanup: CleanupStatus | None = Field(default=None, description="spec.ttlSecondsAfterFinished: the cleanup")
