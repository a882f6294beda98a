"""The training settings Diagnostics recommends changes to, and the job-config
paths (camelCase, as in the YAML) that name them.

The bounds are the job config's (``trainpipe_trainer.contract.job_config``),
so settings that validate here are accepted by the trainer. The ``vae.*``
settings (latent size, beta, free bits, the KL warm-up) are the vae task's
(``VaeConfig``). ``TrainSettings.problems`` adds two cross-field rules
(warmup and patience shorter than training) that ``apply`` enforces on what
it changes.

``task`` is not a setting a recommendation changes: it decides which models
and augmentations are valid (the task's catalog), and whether the ``vae.*``
settings (``VAE_PATHS``) are written into the job config.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainpipe_operator.tasks import BUILTIN, CLASSIFICATION, quoted
from trainpipe_trainer.contract.job_config import DataConfig, ModelConfig, TrainConfig, VaeConfig

# job-config path -> TrainSettings field
PATHS: dict[str, str] = {
    "train.lr": "lr",
    "train.optimizer": "optimizer",
    "train.weightDecay": "weight_decay",
    "train.scheduler": "scheduler",
    "train.warmupEpochs": "warmup_epochs",
    "train.gradClipNorm": "grad_clip_norm",
    "train.gradAccumSteps": "grad_accum_steps",
    "train.dropout": "dropout",
    "train.epochs": "epochs",
    "train.patience": "patience",
    "train.amp": "amp",
    "train.checkpointEvery": "checkpoint_every",
    "data.batchSize": "batch_size",
    "data.numWorkers": "num_workers",
    "data.augment": "augment",
    "data.imageSize": "image_size",
    "data.pinMemory": "pin_memory",
    "model.name": "model_name",
}
# The vae task's settings (job config ``vae``), written for task vae only.
VAE_PATHS: dict[str, str] = {
    "vae.latentDim": "latent_dim",
    "vae.beta": "beta",
    "vae.freeBits": "free_bits",
    "vae.klAnneal.schedule": "kl_schedule",
    "vae.klAnneal.warmupEpochs": "kl_warmup_epochs",
    "vae.klAnneal.cycles": "kl_cycles",
}
PATHS.update(VAE_PATHS)
FIELDS: dict[str, str] = {field: path for path, field in PATHS.items()}

MODEL_LADDER = CLASSIFICATION.model_ladder  # by capacity (classification; each task's: its catalog)
LR_MIN = 1e-7
LR_MAX = 1.0  # recommendations never go above; the job config allows up to 10


class TrainSettings(BaseModel):
    """The current training settings of one phase's job."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    lr: float = Field(default=1e-3, gt=0, le=10)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(default=0.01, ge=0, le=1)
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    warmup_epochs: float = Field(default=0.0, ge=0)
    grad_clip_norm: float | None = Field(default=1.0, gt=0)
    grad_accum_steps: int = Field(default=1, ge=1, le=1024)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    epochs: int = Field(default=20, ge=1, le=100000)
    patience: int | None = Field(default=None, ge=1)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    checkpoint_every: int = Field(default=1, ge=1)
    batch_size: int = Field(default=64, ge=1, le=65536)
    num_workers: int = Field(default=0, ge=0, le=64)
    augment: list[str] = Field(default_factory=list)
    pin_memory: bool = True
    image_size: int = Field(default=32, ge=8, le=1024)
    model_name: str = "smallcnn"
    task: Literal["classification", "vae", "custom"] = "classification"
    # the vae task's (job config vae.*; bounds: VaeConfig, KlAnnealConfig)
    latent_dim: int = Field(default=16, ge=2, le=1024)
    beta: float = Field(default=1.0, ge=0, le=1000)
    free_bits: float = Field(default=0.1, ge=0, le=100)
    kl_schedule: Literal["linear", "cyclical", "none"] = "linear"
    kl_warmup_epochs: float = Field(default=5.0, gt=0, le=10000)
    kl_cycles: int = Field(default=4, ge=1, le=1000)

    @field_validator("augment")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"augmentation listed twice: {value}")
        return value

    @model_validator(mode="after")
    def _of_the_task(self) -> TrainSettings:
        """The model and augmentations are the task's (custom: any; the task checks its own)."""
        catalog = BUILTIN.get(self.task)
        if catalog is None:
            if not self.model_name:
                raise ValueError("model_name: empty; a custom task needs a model name")
            return self
        unknown = [a for a in self.augment if not catalog.allows_augmentation(a)]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown} for task {self.task}; "
                             f"allowed: {', '.join(catalog.augmentations or ())}")
        if not catalog.allows_model(self.model_name):
            raise ValueError(f"unknown model {self.model_name!r} for task {self.task}; "
                             f"allowed: {quoted(catalog.models or ())}")
        return self

    def problems(self) -> list[str]:
        """Cross-field inconsistencies the job config itself tolerates but a
        recommendation must not introduce."""
        out = []
        if self.warmup_epochs >= self.epochs:
            out.append(f"warmupEpochs ({self.warmup_epochs:g}) must be < epochs ({self.epochs})")
        if self.patience is not None and self.patience >= self.epochs:
            out.append(f"patience ({self.patience}) must be < epochs ({self.epochs})")
        return out

    def get(self, path: str) -> Any:
        return getattr(self, field_for(path))

    def paths(self) -> dict[str, str]:
        """The job-config paths this task's job reads (vae.* for task vae only)."""
        return PATHS if self.task == "vae" else {p: f for p, f in PATHS.items() if p not in VAE_PATHS}

    @classmethod
    def from_job_config(cls, job: dict[str, Any]) -> TrainSettings:
        """From a job config (or training_config.yaml) as a dict, camelCase or
        snake_case keys; missing keys take the job config's defaults."""
        data = DataConfig.model_validate(_section(job, "data"))
        model = ModelConfig.model_validate(_section(job, "model"))
        train = TrainConfig.model_validate(_section(job, "train"))
        values = {field: getattr(train, field) for field in (
            "lr", "optimizer", "weight_decay", "scheduler", "warmup_epochs", "grad_clip_norm",
            "grad_accum_steps", "dropout", "epochs", "patience", "amp", "checkpoint_every",
        )}
        values.update({field: getattr(data, field) for field in (
            "batch_size", "num_workers", "augment", "pin_memory", "image_size",
        )})
        values["model_name"] = model.name
        task = job.get("task") or "classification"
        values["task"] = task
        if task == "vae":
            vae = VaeConfig.model_validate(_section(job, "vae"))
            values.update(latent_dim=vae.latent_dim, beta=vae.beta, free_bits=vae.free_bits,
                          kl_schedule=vae.kl_anneal.schedule, kl_warmup_epochs=vae.kl_anneal.warmup_epochs,
                          kl_cycles=vae.kl_anneal.cycles)
        return cls.model_validate(values)

    def to_overrides(self) -> dict[str, dict[str, Any]]:
        """The settings as job-config sections (camelCase keys; ``vae.klAnneal``
        nests one level deeper)."""
        out: dict[str, dict[str, Any]] = {}
        for path, field in self.paths().items():
            *sections, key = path.split(".")
            value = getattr(self, field)
            node: dict[str, Any] = out
            for section in sections:
                node = node.setdefault(section, {})
            node[key] = list(value) if isinstance(value, list) else value
        return out

    def apply_to_job_config(self, job: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``job`` with these settings written in (camelCase keys;
        a snake_case spelling of the same key or section is replaced)."""
        out = copy.deepcopy(job)
        _merge(out, self.to_overrides())
        return out


def _merge(target: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            node = target.pop(_snake(key), None) if key not in target else target[key]
            node = node if isinstance(node, dict) else {}
            target[key] = node
            _merge(node, value)
        else:
            target.pop(_snake(key), None)
            target[key] = value


def field_for(path: str) -> str:
    try:
        return PATHS[path]
    except KeyError:
        raise KeyError(f"unknown config path {path!r}; known: {', '.join(PATHS)}") from None


def _section(job: dict[str, Any], name: str) -> dict[str, Any]:
    section = job.get(name) or {}
    if not isinstance(section, dict):
        raise ValueError(f"job config section {name!r} must be a mapping")
    return section


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
