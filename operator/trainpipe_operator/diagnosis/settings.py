"""The training settings Diagnostics recommends changes to, and the job-config
paths (camelCase, as in the YAML) that name them.

The bounds are the job config's (``trainpipe_trainer.contract.job_config``),
so settings that validate here are accepted by the trainer.
``TrainSettings.problems`` adds two cross-field rules (warmup and patience
shorter than training) that ``apply`` enforces on what it changes.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trainpipe_operator.spec.pipeline import AUGMENTATIONS, MODEL_NAMES
from trainpipe_trainer.contract.job_config import DataConfig, ModelConfig, TrainConfig

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
FIELDS: dict[str, str] = {field: path for path, field in PATHS.items()}

MODEL_LADDER = ("smallcnn", "resnet18", "resnet50")  # by capacity
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

    @field_validator("augment")
    @classmethod
    def _known_augmentations(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; allowed: {', '.join(AUGMENTATIONS)}")
        if len(set(value)) != len(value):
            raise ValueError(f"augmentation listed twice: {value}")
        return value

    @field_validator("model_name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODEL_NAMES:
            raise ValueError(f"unknown model {value!r}; allowed: {', '.join(MODEL_NAMES)}")
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
        return cls.model_validate(values)

    def to_overrides(self) -> dict[str, dict[str, Any]]:
        """The settings as job-config sections (camelCase keys)."""
        out: dict[str, dict[str, Any]] = {}
        for path, field in PATHS.items():
            section, key = path.split(".")
            value = getattr(self, field)
            out.setdefault(section, {})[key] = list(value) if isinstance(value, list) else value
        return out

    def apply_to_job_config(self, job: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``job`` with these settings written in (camelCase keys;
        a snake_case spelling of the same key is replaced)."""
        out = copy.deepcopy(job)
        for section, values in self.to_overrides().items():
            target = out.setdefault(section, {})
            for key, value in values.items():
                target.pop(_snake(key), None)
                target[key] = value
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


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
