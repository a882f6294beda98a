"""``evidence.json``: what a finished (or failed) training job leaves for the
gates. Everything a gate check needs is here, measured, so the gate logic is a
pure function of this document and its thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["completed", "early_stopped", "interrupted", "failed"]


class EpochRecord(BaseModel):
    """One epoch's metrics, as in ``logs/metrics.json``. The engine's own
    fields are named here; a task's metrics (``val_acc`` for classification,
    ``val_recon``/``val_kl`` for the VAE, whatever a custom task reports)
    are extra fields, read by name (``metric``)."""

    model_config = ConfigDict(extra="allow")

    num: int
    train_loss: float
    val_loss: float
    train_acc: float | None = None
    val_acc: float | None = None
    train_top5: float | None = None
    val_top5: float | None = None
    lr: float
    epoch_seconds: float
    eta_seconds: float
    samples_per_second: float
    loss_gap: float = Field(description="(val_loss - train_loss) / train_loss")
    acc_gap: float | None = Field(None, description="train_acc - val_acc (classification)")
    skipped_steps: int
    grad_norm_mean: float | None = None
    gpu_util_mean: float | None = None
    gpu_memory_max_bytes: int | None = None

    def metric(self, name: str) -> float | None:
        """A metric by name (an engine field or a task's extra); None when
        this epoch did not report it or it is not a number."""
        value = getattr(self, name, None) if name in type(self).model_fields else (self.model_extra or {}).get(name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class PreviewRecord(BaseModel):
    """One audio preview a task wrote (the VAE: a reconstruction of a fixed
    validation clip, or a sample from the prior)."""

    epoch: int
    kind: Literal["reconstruction", "prior", "original"]
    index: int = Field(description="which clip of the epoch's previews")
    wav: str = Field(description="relative to the run directory")
    png: str | None = Field(None, description="its mel spectrogram, relative to the run directory")
    sample_rate: int
    num_samples: int
    peak: float = Field(description="max |sample|")
    rms: float
    source: str | None = Field(None, description="the validation file a reconstruction came from")


class CheckpointCheck(BaseModel):
    path: str
    exists: bool
    loads: bool = False
    has_model_state: bool = False
    has_optimizer_state: bool = False
    epoch: int | None = None
    val_loss: float | None = None
    error: str | None = None


class ExceptionInfo(BaseModel):
    type: str
    message: str
    traceback: str


class Timings(BaseModel):
    total_seconds: float = 0.0
    epoch_seconds: list[float] = Field(default_factory=list)
    checkpoint_save_seconds: list[float] = Field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None


class RankGpus(BaseModel):
    """The GPUs one rank ran on: the operator's GPU check selects the DCGM
    series of exactly these UUIDs (dcgm-exporter's ``UUID`` label) over the
    job's window (``timings.started_at`` .. ``finished_at``), whatever the
    pods are named. Written by the job, so the operator validates every
    UUID before it goes into a query."""

    rank: int
    host: str = Field(description="the node's hostname, as the rank saw it")
    device: str = Field(description='the torch device the rank trained on, e.g. "cuda:0" or "cpu"')
    gpu_uuids: list[str] = Field(
        default_factory=list, description='NVIDIA UUIDs ("GPU-...") of the devices the rank used'
    )
    gpu_names: list[str] = Field(default_factory=list, description="their model names")
    reason: str | None = Field(default=None, description="why no UUID was recorded (CPU, no CUDA, ...)")


class Evidence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_name: str
    task: str = Field("classification", description="the job's task (spec.task)")
    config_hash: str
    status: JobStatus
    completed: bool = Field(description="reached the final epoch or stopped early by patience")
    reason: str = ""
    epochs_planned: int
    epochs: list[EpochRecord] = Field(default_factory=list)
    initial_train_loss: float | None = None
    final_train_loss: float | None = None
    best_val_loss: float | None = None
    best_val_acc: float | None = None
    best_epoch: int | None = None
    skipped_steps_total: int = 0
    resumed_from_epoch: int | None = None
    resumed_from_step: int | None = None
    checkpoints: dict[str, CheckpointCheck] = Field(default_factory=dict)
    periodic_checkpoints: list[str] = Field(default_factory=list)
    environment: dict[str, Any] = Field(default_factory=dict)
    timings: Timings = Field(default_factory=Timings)
    gpu_util_mean: float | None = None
    gpus: list[RankGpus] = Field(
        default_factory=list, description="per rank: host and GPU UUIDs (empty: not recorded)"
    )
    previews: list[PreviewRecord] = Field(default_factory=list, description="audio previews written (the VAE)")
    world_size: int = 1
    log_path: str = "logs/training.log"
    metrics_path: str = "logs/metrics.json"
    exception: ExceptionInfo | None = None

    def write(self, path: str | Path) -> None:
        target = Path(path)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        tmp.replace(target)

    @classmethod
    def read(cls, path: str | Path) -> Evidence:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
