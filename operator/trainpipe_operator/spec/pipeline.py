"""``apiVersion: trainpipe.io/v1alpha1``, ``kind: TrainingPipeline``: the spec.

Defaults follow the master workflow (seed 001): baseline 20 epochs at lr 1e-3,
at most 3 optimization iterations, final training 100 epochs with patience
10, a 12-hour budget. Every field has a description: it becomes the CRD's.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from trainpipe_operator.spec.base import CamelModel
from trainpipe_operator.spec.status import PipelineStatus

API_GROUP = "trainpipe.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "TrainingPipeline"

# The trainer's model registry, named here because the control plane never
# imports torch; a test keeps the two lists equal.
MODEL_NAMES = ("resnet18", "resnet50", "smallcnn")
AUGMENTATIONS = ("hflip", "crop", "rotation", "colorjitter")
DURATION_PATTERN = r"^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """``12h``, ``45m``, ``1h30m``, ``90s``, ``2d`` -> seconds.

    Raises:
        ValueError: the text is not such a duration, or is zero.
    """
    if not text or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 12h, 45m, 1h30m or 90s")
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in re.findall(r"([0-9]+)([dhms])", text))
    if seconds <= 0:
        raise ValueError(f"{text!r} is zero; give a positive duration")
    return float(seconds)


class ModelSpec(CamelModel):
    name: Literal["resnet18", "resnet50", "smallcnn"] = Field(
        "smallcnn", description="a model from the trainer's registry"
    )
    pretrained: str | None = Field(
        None, description=("a local weights file, never downloaded; under the operator: a path relative to, "
                           "or absolute under, <artifactRoot>/<namespace>/")
    )


class SplitSpec(CamelModel):
    train: float = Field(0.8, gt=0, lt=1, description="fraction of the files for training")
    val: float = Field(0.1, gt=0, lt=1, description="fraction for validation")
    test: float = Field(0.1, gt=0, lt=1, description="fraction for the held-out test")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitSpec:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + val + test must sum to 1.0, got {self.train:g} + {self.val:g} + {self.test:g} = {total:.4g}"
            )
        return self


class DataSpec(CamelModel):
    source: str = Field(
        "builtin:digits",
        min_length=1,
        description=("builtin:digits, an ImageFolder path, or a file:/// URI; under the operator: a path "
                     "relative to, or absolute under, <artifactRoot>/<namespace>/"),
    )
    split: SplitSpec = Field(default_factory=SplitSpec, description="used when the source is not pre-split")
    image_size: int = Field(32, ge=8, le=1024, description="images are resized to this square size (px)")
    batch_size: int = Field(64, ge=1, le=65536, description="samples per batch per worker")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes per training worker")
    augment: list[Literal["hflip", "crop", "rotation", "colorjitter"]] = Field(
        default_factory=list, description="training-split augmentations, by name"
    )


class TargetSpec(CamelModel):
    metric: Literal["val_acc", "val_loss", "test_acc"] = Field(
        "val_acc", description="the metric the pipeline must reach"
    )
    value: float = Field(0.9, ge=0, description="accuracy: at least this; loss: at most this")

    @model_validator(mode="after")
    def _accuracy_range(self) -> TargetSpec:
        if self.metric.endswith("_acc") and self.value > 1:
            raise ValueError(
                f"value: a target for {self.metric} (an accuracy) is a fraction in [0, 1], got {self.value:g}"
            )
        return self

    def met(self, value: float | None) -> bool:
        if value is None:
            return False
        return value <= self.value if self.metric == "val_loss" else value >= self.value


class BaselineSpec(CamelModel):
    epochs: int = Field(20, ge=1, le=10000, description="baseline training epochs")
    lr: float = Field(1e-3, gt=0, le=10, description="learning rate")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="optimizer")
    weight_decay: float = Field(0.01, ge=0, le=1, description="weight decay")
    scheduler: Literal["cosine", "step", "none"] = Field("cosine", description="learning-rate schedule")
    grad_clip_norm: float | None = Field(
        1.0, gt=0, le=1000, description="clip the total gradient norm to this; null turns clipping off"
    )


class OptimizationSpec(CamelModel):
    # At least 1: the decision to stop is taken after an iteration, so 0 would
    # still run one (docs/gates.md, Known gaps); refused here, naming the field.
    max_iterations: int = Field(3, ge=1, le=20, description="optimization iterations at most (1-20)")
    min_improvement: float = Field(
        0.02, ge=0, le=1, description="a gain under this (absolute, in the target metric) counts as diminishing"
    )


class FinalizationSpec(CamelModel):
    epochs: int = Field(100, ge=1, le=100000, description="final training epochs")
    patience: int = Field(10, ge=1, le=1000, description="early-stopping patience (epochs)")
    export: list[Literal["onnx", "torchscript"]] = Field(
        default_factory=lambda: list[Literal["onnx", "torchscript"]](["onnx", "torchscript"]), min_length=1, description="export formats"
    )


class GpuUtilizationGateSpec(CamelModel):
    """The gpu-utilization check (docs/gates.md). A person may turn it off
    for one pipeline, saying why; the status then reports it as turned off,
    never as passed."""

    enabled: bool = Field(
        True, description="false turns the gpu-utilization check off for this pipeline (reason required)"
    )
    reason: str | None = Field(
        None, min_length=1, max_length=500,
        description="why the check is off (shown in the status); required when enabled is false",
    )

    @model_validator(mode="after")
    def _reason_when_off(self) -> GpuUtilizationGateSpec:
        if not self.enabled and not (self.reason and self.reason.strip()):
            raise ValueError(
                "spec.gates.gpuUtilization.reason is required when enabled is false: "
                "say why the GPU-utilization check is turned off (it is shown in the status)"
            )
        return self


class GatesSpec(CamelModel):
    loss_decrease_min: float = Field(
        0.5, ge=0, le=1, description="(initial - final) / initial train loss below this warns"
    )
    gpu_util_min: float = Field(60, ge=0, le=100, description="mean GPU utilization (%) that passes")
    gpu_util_warn: float = Field(40, ge=0, le=100, description="below this the GPU check fails; between warns")
    epoch_time_jitter: float = Field(0.2, gt=0, le=10, description="allowed deviation from the median epoch time")
    overfit_gap: float = Field(0.1, gt=0, le=1, description="train - val accuracy gap that signals overfitting")
    reproducibility: bool = Field(False, description="re-run the baseline with the same seed and compare losses")
    gpu_utilization: GpuUtilizationGateSpec = Field(
        default_factory=GpuUtilizationGateSpec,
        description="the gpu-utilization check: enabled (default true), or off with a reason",
    )

    @model_validator(mode="after")
    def _warn_below_min(self) -> GatesSpec:
        if self.gpu_util_warn > self.gpu_util_min:
            raise ValueError(
                f"gpuUtilWarn ({self.gpu_util_warn:g}) must not exceed gpuUtilMin ({self.gpu_util_min:g}); "
                "the GPU check fails below gpuUtilWarn and warns between the two"
            )
        return self


class BudgetSpec(CamelModel):
    max_duration: str = Field(
        "12h", pattern=DURATION_PATTERN, description="total pipeline time (e.g. 12h, 45m, 1h30m)"
    )

    @field_validator("max_duration", mode="before")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        # Before the pattern check, so the message says what a duration is
        # rather than quoting the regular expression.
        if isinstance(value, str):
            parse_duration(value)
        return value

    @property
    def seconds(self) -> float:
        return parse_duration(self.max_duration)


class ResourcesSpec(CamelModel):
    workers: int = Field(1, ge=1, le=1024, description="DDP training workers")
    gpus_per_worker: int = Field(0, ge=0, le=16, description="GPUs per worker")
    cpus_per_worker: float = Field(1, gt=0, le=512, description="CPUs per worker")
    memory: str = Field("4Gi", pattern=QUANTITY_PATTERN, description="memory per worker (Kubernetes quantity; the operator's pod request, unused by trainpipe run)")

    @field_validator("memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.fullmatch(QUANTITY_PATTERN, value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity like 4Gi, 512Mi or 2G")
        return value


class RaySpec(CamelModel):
    address: str | None = Field(
        None, description="Ray dashboard / Job API address (http://host:8265); none: a local Ray"
    )
    token_secret: str | None = Field(None, description=(
        "Secret of type trainpipe.io/ray-token (keys: address, token) in the pipeline's namespace; the token "
        "goes to that address only; trainpipe run reads RAY_AUTH_TOKEN instead"))


class RuntimeSpec(CamelModel):
    type: Literal["local", "ray", "rayjob"] = Field(
        "local", description="local: this machine; ray: Ray Job API; rayjob: a KubeRay RayJob"
    )
    ray: RaySpec = Field(default_factory=RaySpec, description="Ray settings")
    max_attempts: int = Field(3, ge=1, le=20, description="submissions of a job that ends without evidence (a crash, a lost node) before the phase fails; each resumes from the last checkpoint")


class ApprovalSpec(CamelModel):
    required: bool = Field(False, description="a person must approve before the pipeline succeeds")


class PipelineSpec(CamelModel):
    seed: int = Field(42, ge=0, le=2**32 - 1, description="seeds every random source")
    task: Literal["classification", "vae"] = Field("classification", description="the task")
    model: ModelSpec = Field(default_factory=ModelSpec, description="the model")
    data: DataSpec = Field(default_factory=DataSpec, description="the dataset")
    target: TargetSpec = Field(default_factory=TargetSpec, description="what production-ready means")
    baseline: BaselineSpec = Field(default_factory=BaselineSpec, description="Phase 2 settings")
    optimization: OptimizationSpec = Field(default_factory=OptimizationSpec, description="Phase 4 limits")
    finalization: FinalizationSpec = Field(default_factory=FinalizationSpec, description="Phase 5 settings")
    gates: GatesSpec = Field(default_factory=GatesSpec, description="gate thresholds")
    budget: BudgetSpec = Field(default_factory=BudgetSpec, description="time limits")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="per-job resources")
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, description="where jobs run")
    approval: ApprovalSpec = Field(default_factory=ApprovalSpec, description="human approval")


class ObjectMeta(CamelModel):
    """The part of Kubernetes metadata trainpipe reads; the rest passes through."""

    model_config = {**CamelModel.model_config, "extra": "allow"}

    name: str = Field(..., min_length=1, max_length=63, pattern=NAME_PATTERN)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name", mode="before")
    @classmethod
    def _dns_name(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.fullmatch(NAME_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a valid name: lowercase letters, digits and '-', "
                "starting and ending with a letter or digit (Kubernetes DNS-1123 label)"
            )
        return value


class TrainingPipeline(CamelModel):
    api_version: Literal["trainpipe.io/v1alpha1"] = Field(..., alias="apiVersion")
    kind: Literal["TrainingPipeline"]
    metadata: ObjectMeta
    spec: PipelineSpec = Field(default_factory=PipelineSpec)
    status: PipelineStatus | None = None

    @classmethod
    def from_manifest(cls, data: Any) -> TrainingPipeline:
        return cls.model_validate(data)
