"""The job config: everything one training job needs, written by the control
plane as YAML and read by ``python -m trainpipe_trainer.run --config``.

Field names are camelCase in YAML (as in the TrainingPipeline resource) and
snake_case in Python. Unknown keys are rejected so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from trainpipe_trainer.contract import yaml_io
from trainpipe_trainer.contract.tracking import TrackingConfig

AUGMENTATIONS = ("hflip", "crop", "rotation", "colorjitter")
AUDIO_AUGMENTATIONS = ("gain", "shift", "noise", "mask")
TASKS = ("classification", "vae", "custom")
# Which augmentation names each built-in task accepts; a custom task checks its own.
AUGMENTATIONS_BY_TASK: dict[str, tuple[str, ...] | None] = {
    "classification": AUGMENTATIONS,
    "vae": AUDIO_AUGMENTATIONS,
    "custom": None,
}
ENTRYPOINT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=False
    )


class SplitFractions(_Model):
    """Fractions used when the source is one folder of class sub-folders."""

    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1.0, got {total:.4f}")
        return self


class AudioConfig(_Model):
    """How audio files become training samples (the ``vae`` task)."""

    sample_rate: int = Field(16000, ge=4000, le=192000, description="every file is resampled to this rate (Hz)")
    chunk_seconds: float = Field(1.0, ge=0.1, le=30, description="files are cut into chunks of this length")
    n_mels: int = Field(64, ge=8, le=256, description="mel bands of the log-mel spectrogram")
    n_fft: int = Field(1024, ge=64, le=8192)
    hop_length: int = Field(256, ge=16, le=4096)
    silence_dbfs: float = Field(-60.0, le=0, description="a file whose RMS is below this is reported silent")


class DataConfig(_Model):
    source: str = Field(
        "builtin:digits",
        description="builtin:digits, a local ImageFolder path, or a file:// URI",
    )
    split: SplitFractions = Field(default_factory=SplitFractions)
    image_size: int = Field(32, ge=8, le=1024)
    batch_size: int = Field(64, ge=1, le=65536)
    num_workers: int = Field(0, ge=0, le=64)
    augment: list[str] = Field(default_factory=list)
    pin_memory: bool = True
    cache_dir: str | None = Field(
        None, description="where builtin datasets are written; default ~/.cache/trainpipe/datasets"
    )

    audio: AudioConfig = Field(default_factory=AudioConfig, description="the vae task's audio settings")


class ModelConfig(_Model):
    name: str = "smallcnn"
    pretrained: str | None = Field(
        None, description="path to a local weights file (never downloaded)"
    )


class TrainConfig(_Model):
    """Optimisation settings for one phase's training run."""

    epochs: int = Field(20, ge=1, le=100000)
    lr: float = Field(1e-3, gt=0, le=10)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(0.01, ge=0, le=1)
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    step_size: int = Field(10, ge=1, description="epochs between decays for the step schedule")
    gamma: float = Field(0.1, gt=0, le=1)
    grad_clip_norm: float | None = Field(1.0, gt=0)
    grad_accum_steps: int = Field(1, ge=1, le=1024)
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto", description="auto: bf16 where CUDA supports it, fp16 otherwise on CUDA, off on CPU"
    )
    patience: int | None = Field(None, ge=1, description="early stopping on val_loss; None: off")
    max_consecutive_nonfinite: int = Field(
        10, ge=1, description="consecutive skipped steps (non-finite loss or gradient) that fail the run"
    )
    checkpoint_every: int = Field(1, ge=1, description="write checkpoint_epoch_N.pt every K epochs")
    keep_periodic: int = Field(3, ge=1)
    log_every_steps: int = Field(10, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)


class KlAnnealConfig(_Model):
    """The KL weight's warm-up: ``linear`` rises from 0 to beta over
    ``warmupEpochs``; ``cyclical`` repeats that rise ``cycles`` times over
    the run (each cycle rises for its first half, then holds beta)."""

    schedule: Literal["linear", "cyclical", "none"] = "linear"
    warmup_epochs: float = Field(5.0, gt=0, le=10000)
    cycles: int = Field(4, ge=1, le=1000)


class VaeConfig(_Model):
    """The ``vae`` task: loss, previews and export."""

    latent_dim: int = Field(16, ge=2, le=1024)
    beta: float = Field(1.0, ge=0, le=1000)
    free_bits: float = Field(0.1, ge=0, le=100, description="nats per latent dimension under which KL is not pushed")
    kl_anneal: KlAnnealConfig = Field(default_factory=KlAnnealConfig)
    preview_every: int = Field(5, ge=1, le=100000, description="write audio previews every N epochs (and at the last)")
    preview_clips: int = Field(3, ge=1, le=32, description="validation clips reconstructed in each preview")
    prior_samples: int = Field(2, ge=0, le=32, description="clips sampled from the prior in each preview")
    griffin_lim_iters: int = Field(32, ge=1, le=1000)
    export_parts: list[Literal["decoder", "encoder", "model"]] = Field(
        default_factory=lambda: list[Literal["decoder", "encoder", "model"]](["decoder"]), min_length=1
    )


class CustomTaskConfig(_Model):
    """``task: custom``: a Task the user installed in the trainer image."""

    entrypoint: str = Field(..., pattern=ENTRYPOINT_PATTERN, description="module:object, e.g. mypkg.tasks:Regression")
    options: dict[str, Any] = Field(default_factory=dict, description="passed to the task as is")


class ResourcesConfig(_Model):
    workers: int = Field(1, ge=1, le=1024)
    gpus_per_worker: float = Field(0, ge=0)
    cpus_per_worker: float = Field(1, gt=0)


class RayConfig(_Model):
    """Ray Train settings used by the ``run`` entry point."""

    enabled: bool = Field(True, description="false: train in this process (DDP via torch spawn)")
    address: str | None = None
    max_failures: int = Field(2, ge=0)
    storage_path: str | None = Field(
        None, description="Ray Train storage; default <runDir>/ray (shared storage on a cluster)"
    )
    run_name: str | None = Field(None, description="default: derived from the job name")


class EvaluateConfig(_Model):
    """For ``action: evaluate``: which checkpoint to test and export."""

    checkpoint: str = Field(..., description="the checkpoint to evaluate (usually .../best_model.pt)")
    export: list[Literal["onnx", "torchscript"]] = Field(default_factory=lambda: list[Literal["onnx", "torchscript"]](["onnx", "torchscript"]))
    parity_samples: int = Field(64, ge=1, le=100000, description="test inputs compared across runtimes")


class JobConfig(_Model):
    """One job. ``runDir`` is where every artifact of the job goes.

    ``action``: ``train`` (the engine), ``preflight`` (the Planning gate's
    evidence: data report, a real batch, one finite forward/backward pass),
    or ``evaluate`` (held-out test split once, then export and parity).
    """

    name: str = "trainpipe-job"
    action: Literal["train", "preflight", "evaluate"] = "train"
    run_dir: str
    seed: int = Field(42, ge=0, le=2**32 - 1)
    deterministic: bool = True
    task: Literal["classification", "vae", "custom"] = "classification"
    custom_task: CustomTaskConfig | None = None
    vae: VaeConfig = Field(default_factory=VaeConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    fresh: bool = Field(False, description="discard existing checkpoints instead of resuming")
    evaluate: EvaluateConfig | None = None
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve trainpipe_* metrics on this port (0: any free port)"
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="added to every exported metric (pipeline, phase, ...)"
    )
    # Not part of config_hash: where a job reports never changes what it trains.
    tracking: TrackingConfig | None = Field(None, description="MLflow/W&B runs to report to (contract/tracking.py)")

    def config_hash(self) -> str:
        """Hash of what changes the trained result (not where it is written)."""
        relevant = self.model_dump(
            mode="json", include={"seed", "deterministic", "task", "data", "model", "train", "vae", "custom_task"}
        )
        relevant["data"].pop("cache_dir", None)
        relevant["data"].pop("num_workers", None)
        # Another task's settings do not change this task's result (and a
        # classification job hashes as it did before tasks existed).
        if self.task != "vae":
            relevant.pop("vae")
            relevant["data"].pop("audio")
        if self.task != "custom":
            relevant.pop("custom_task")
        blob = json.dumps(relevant, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml_io.dump(self.model_dump(mode="json", by_alias=True))

    @classmethod
    def from_yaml_file(cls, path: str | Path) -> JobConfig:
        with open(path, encoding="utf-8") as handle:
            raw = yaml_io.load(handle) or {}
        return cls.model_validate(raw)

    @field_validator("data")
    @classmethod
    def _augmentations_of_the_task(cls, data: DataConfig, info: ValidationInfo) -> DataConfig:
        # A field validator (``task`` is validated before ``data``), so this
        # error comes with every other field's, at data.augment.
        task = info.data.get("task", "classification")
        allowed = AUGMENTATIONS_BY_TASK.get(task)
        unknown = [name for name in data.augment if allowed is not None and name not in allowed]
        if unknown:
            raise PydanticCustomError(
                "unknown_augmentation",
                "data.augment: unknown augmentation(s) {unknown} for task {task}; allowed: {allowed}",
                {"unknown": unknown, "task": task, "allowed": ", ".join(allowed or ())},
            )
        return data

    @model_validator(mode="after")
    def _task_settings(self) -> JobConfig:
        if self.task == "custom" and self.custom_task is None:
            raise ValueError("task: custom needs a `customTask` section (customTask.entrypoint: module:object)")
        return self

    @model_validator(mode="after")
    def _evaluate_needs_settings(self) -> JobConfig:
        if self.action == "evaluate" and self.evaluate is None:
            raise ValueError("action: evaluate needs an `evaluate` section (evaluate.checkpoint)")
        return self
