"""The training settings Diagnostics recommends changes to, and the job-config
paths (camelCase, as in the YAML) that name them.

The bounds are the job config's (``trainpipe_trainer.contract.job_config``),
so settings that validate here are accepted by the trainer. The ``vae.*``
settings (latent size, beta, free bits, the KL warm-up) are the vae task's
(``VaeConfig``); a classification job carries them at their defaults, which
change nothing it trains (its config hash leaves the vae section out).
``TrainSettings.problems`` adds two cross-field rules (warmup and patience
shorter than training) that ``apply`` enforces on what it changes.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trainpipe_operator.spec.pipeline import AUGMENTATIONS, MODEL_NAMES
from trainpipe_trainer.contract.job_config import (
    AUDIO_AUGMENTATIONS,
    DataConfig,
    ModelConfig,
    TrainConfig,
    VaeConfig,
)

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
    "vae.latentDim": "latent_dim",
    "vae.beta": "beta",
    "vae.freeBits": "free_bits",
    "vae.klAnneal.schedule": "kl_schedule",
    "vae.klAnneal.warmupEpochs": "kl_warmup_epochs",
    "vae.klAnneal.cycles": "kl_cycles",
}
FIELDS: dict[str, str] = {field: path for path, field in PATHS.items()}
VAE_FIELDS = ("latent_dim", "beta", "free_bits", "kl_schedule", "kl_warmup_epochs", "kl_cycles")

MODEL_LADDER = ("smallcnn", "resnet18", "resnet50")  # by capacity
# The vae task's models, by capacity. Named here because the control plane
# never imports torch; they must be the trainer's registered vae models.
VAE_MODEL_LADDER = ("vae-small", "vae-medium", "vae-large")
LADDERS = (MODEL_LADDER, VAE_MODEL_LADDER)
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
    latent_dim: int = Field(default=16, ge=2, le=1024)
    beta: float = Field(default=1.0, ge=0, le=1000)
    free_bits: float = Field(default=0.1, ge=0, le=100)
    kl_schedule: Literal["linear", "cyclical", "none"] = "linear"
    kl_warmup_epochs: float = Field(default=5.0, gt=0, le=10000)
    kl_cycles: int = Field(default=4, ge=1, le=1000)

    @field_validator("augment")
    @classmethod
    def _known_augmentations(cls, value: list[str]) -> list[str]:
        # Either task's names: the job config checks them against its task.
        known = (*AUGMENTATIONS, *AUDIO_AUGMENTATIONS)
        unknown = [a for a in value if a not in known]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; allowed: {', '.join(known)}")
        if len(set(value)) != len(value):
            raise ValueError(f"augmentation listed twice: {value}")
        return value

    @field_validator("model_name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        known = (*MODEL_NAMES, *VAE_MODEL_LADDER)
        if value not in known:
            raise ValueError(f"unknown model {value!r}; allowed: {', '.join(known)}")
        return value

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
        vae = VaeConfig.model_validate(_section(job, "vae"))
        values.update(latent_dim=vae.latent_dim, beta=vae.beta, free_bits=vae.free_bits,
                      kl_schedule=vae.kl_anneal.schedule, kl_warmup_epochs=vae.kl_anneal.warmup_epochs,
                      kl_cycles=vae.kl_anneal.cycles)
        return cls.model_validate(values)

    def to_overrides(self) -> dict[str, Any]:
        """The settings as job-config sections (camelCase keys; ``vae.klAnneal``
        is a section inside ``vae``)."""
        out: dict[str, Any] = {}
        for path, field in PATHS.items():
            *sections, key = path.split(".")
            target = out
            for section in sections:
                target = target.setdefault(section, {})
            value = getattr(self, field)
            target[key] = list(value) if isinstance(value, list) else value
        return out

    def apply_to_job_config(self, job: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``job`` with these settings written in (camelCase keys;
        a snake_case spelling of the same key or section is replaced)."""
        out = copy.deepcopy(job)
        _merge(out, self.to_overrides())
        return out


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


def _merge(target: dict[str, Any], values: dict[str, Any]) -> None:
    """Write ``values`` into ``target`` in place, section by section."""
    for key, value in values.items():
        snake = _snake(key)
        if isinstance(value, dict):
            section = target.get(key)
            if section is None and snake != key and isinstance(target.get(snake), dict):
                section = target.pop(snake)
            if not isinstance(section, dict):
                section = {}
            target[key] = section
            _merge(section, value)
        else:
            if snake != key:
                target.pop(snake, None)
            target[key] = value


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
