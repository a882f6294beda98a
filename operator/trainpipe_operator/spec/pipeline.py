"""``apiVersion: trainpipe.io/v1alpha1``, ``kind: TrainingPipeline``: the spec.

Defaults follow the master workflow (seed 001): baseline 20 epochs at lr 1e-3,
at most 3 optimization iterations, final training 100 epochs with patience
10, a 12-hour budget. Every field has a description: it becomes the CRD's.

``spec.task`` decides what the rest means: which models and augmentations
exist, which metrics a target may name and which way is better (the task's
catalog, ``trainpipe_operator.tasks``). Rules across fields are field
validators on :class:`PipelineSpec` that read the task, so each problem is
reported at its own field (``spec.model.name``, ``spec.target.metric``,
``spec.data.augment[1]``) next to every other problem in the manifest.
"""

from __future__ import annotations

import re
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from trainpipe_operator.spec.base import CamelModel
from trainpipe_operator.spec.status import PipelineStatus
from trainpipe_operator.tasks import (
    CLASSIFICATION,
    CLASSIFICATION_MODELS,
    METRIC_NAME_PATTERN,
    TaskCatalog,
    catalog_for_task,
    quoted,
)
from trainpipe_trainer.contract.job_config import ENTRYPOINT_PATTERN, TASKS

API_GROUP = "trainpipe.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "TrainingPipeline"

# The classification task's models and augmentations (the first task's, kept
# under these names); every task's are in its catalog (trainpipe_operator.tasks).
MODEL_NAMES = CLASSIFICATION_MODELS
AUGMENTATIONS = CLASSIFICATION.augmentations or ()
DEFAULT_TARGET_VALUE = 0.9
CUSTOM_TASK_REQUIRED = ("required when spec.task is custom: customTask.entrypoint (module:object, e.g. "
                        "mypkg.tasks:Regression) and customTask.metrics (name, direction) at least")
DATA_SOURCE_HINT = ("name the dataset: builtin:digits (classification), builtin:tones (vae), or a path: an "
                    "ImageFolder or a folder of audio files (under the operator: relative to, or absolute under, "
                    "<artifactRoot>/<namespace>/)")
DURATION_PATTERN = r"^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_REGISTERED_MODEL_NAME = 256
STALL_TIMEOUT_DEFAULT = "5m"
START_TIMEOUT_DEFAULT = "30m"
STALL_TIMEOUT_MIN, STALL_TIMEOUT_MAX = 5.0, 24 * 3600.0
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


def _pattern_check(value: Any, pattern: str, what: str) -> Any:
    """Before the pattern check, so the message says what is expected rather
    than quoting the regular expression."""
    if isinstance(value, str) and not re.fullmatch(pattern, value):
        raise ValueError(f"{value!r} is not {what}")
    return value


def _field_error(loc: tuple[str | int, ...], value: Any, message: str) -> InitErrorDetails:
    return InitErrorDetails(type="value_error", loc=loc, input=value, ctx={"error": ValueError(message)})


def _raise(title: str, errors: list[InitErrorDetails]) -> None:
    """Errors at nested locations (``name`` of ``spec.model``), raised from a
    field validator: pydantic prefixes the field's own location."""
    if errors:
        raise ValidationError.from_exception_data(title, errors)


def _fail(title: str, loc: tuple[str | int, ...], value: Any, message: str) -> NoReturn:
    raise ValidationError.from_exception_data(title, [_field_error(loc, value, message)])


class CustomMetricSpec(CamelModel):
    """One metric a custom task reports: the control plane learns its
    direction here, since it never imports the task."""

    name: str = Field(..., pattern=METRIC_NAME_PATTERN,
                      description="val_<name> (per epoch) or test_<name> (held-out test split), e.g. val_mae")
    direction: Literal["maximize", "minimize"] = Field(..., description="which way is better")
    kind: Literal["fraction", "loss", "nats", "count", "value"] = Field(
        "value", description="fraction: in [0, 1] (a target is at most 1); loss, nats, count, or any value"
    )

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        return _pattern_check(value, METRIC_NAME_PATTERN,
                              "a metric name: val_ or test_, then lowercase letters, digits and '_'")


class CustomTaskSpec(CamelModel):
    """``task: custom``: a task the user installs in the trainer image,
    implementing the built-in tasks' interface."""

    entrypoint: str = Field(..., pattern=ENTRYPOINT_PATTERN,
                            description="the task's import path, module:object (e.g. mypkg.tasks:Regression)")
    options: dict[str, Any] = Field(default_factory=dict, description="passed to the task as is")
    metrics: list[CustomMetricSpec] = Field(
        ..., min_length=1,
        description="the metrics the task reports, first val_ metric first: it is the default target",
    )

    @field_validator("entrypoint", mode="before")
    @classmethod
    def _entrypoint(cls, value: Any) -> Any:
        return _pattern_check(value, ENTRYPOINT_PATTERN, "an import path module:object (e.g. mypkg.tasks:Regression)")

    @model_validator(mode="after")
    def _catalog(self) -> CustomTaskSpec:
        catalog_for_task("custom", self.metrics)  # names unique, a val_ metric declared
        return self


class ModelSpec(CamelModel):
    name: str | None = Field(
        None, min_length=1,
        description=("a model of the task: classification resnet18, resnet50, smallcnn (default); vae vae-small "
                     "(default), vae-medium, vae-large; custom: any name, passed to the task (default: default)"),
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


class AudioSpec(CamelModel):
    """How audio files become training samples (the vae task; a custom task
    may read it too). Mirrors the job config's ``data.audio``."""

    sample_rate: int = Field(16000, ge=4000, le=192000, description="every file is resampled to this rate (Hz)")
    chunk_seconds: float = Field(1.0, ge=0.1, le=30, description="files are cut into chunks of this length (s)")
    n_mels: int = Field(64, ge=8, le=256, description="mel bands of the log-mel spectrogram")
    n_fft: int = Field(1024, ge=64, le=8192, description="FFT size of the spectrogram")
    hop_length: int = Field(256, ge=16, le=4096, description="samples between spectrogram frames")
    silence_dbfs: float = Field(-60.0, le=0, description="a file whose RMS is below this (dBFS) is reported silent")


class DataSpec(CamelModel):
    # Required, without a schema-level "required": a validator refuses the
    # missing value with what to write (the CRD then still defaults spec and
    # spec.data to {}, and the operator and the webhook name the field).
    source: str | None = Field(
        None,
        min_length=1,
        validate_default=True,
        description=("required: builtin:digits (classification), builtin:tones (vae), an ImageFolder path or a "
                     "folder of audio files, or a file:/// URI; under the operator: a path relative to, or absolute "
                     "under, <artifactRoot>/<namespace>/"),
    )
    split: SplitSpec = Field(default_factory=SplitSpec, description="used when the source is not pre-split")
    image_size: int = Field(32, ge=8, le=1024, description="images are resized to this square size (px)")
    batch_size: int = Field(64, ge=1, le=65536, description="samples per batch per worker")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes per training worker")
    augment: list[str] = Field(
        default_factory=list,
        description=("training-split augmentations, by name: classification hflip, crop, rotation, colorjitter; "
                     "vae gain, shift, noise, mask; custom: the task's own"),
    )
    audio: AudioSpec | None = Field(
        None, description="audio settings (task vae or custom; default: 16 kHz, 1 s chunks, 64 mel bands)"
    )

    @field_validator("source")
    @classmethod
    def _source_given(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError(f"required: {DATA_SOURCE_HINT}")
        return value


class TargetSpec(CamelModel):
    metric: str | None = Field(
        None, min_length=1,
        description=("the metric the pipeline must reach, by name: one the task reports (classification val_acc, "
                     "val_top5, val_loss, test_acc, test_top5, test_loss; vae val_recon, val_loss, test_recon, "
                     "test_loss; custom: a declared metric); default: the task's primary (val_acc, val_recon, the "
                     "custom task's first val_ metric)"),
    )
    value: float = Field(
        DEFAULT_TARGET_VALUE, ge=0,
        description="a metric to maximize: at least this; to minimize (a loss): at most this",
    )
    # Which way is better, from the task's catalog (set by PipelineSpec);
    # None: a target outside a spec, read with the classification catalog.
    _lower_is_better: bool | None = PrivateAttr(None)

    def met(self, value: float | None) -> bool:
        """``value`` reaches the target in the metric's direction (at most the
        value for a metric to minimize, at least it otherwise)."""
        if value is None:
            return False
        lower = self._lower_is_better
        if lower is None:
            known = CLASSIFICATION.get(self.metric or CLASSIFICATION.primary)
            lower = known.lower_is_better if known is not None else False
        return value <= self.value if lower else value >= self.value


class KlAnnealSpec(CamelModel):
    """The KL weight's warm-up (mirrors the job config's ``vae.klAnneal``)."""

    schedule: Literal["linear", "cyclical", "none"] = Field(
        "linear", description="linear: 0 to beta over warmupEpochs; cyclical: that rise `cycles` times; none: beta"
    )
    warmup_epochs: float = Field(5.0, gt=0, le=10000, description="epochs over which the KL weight rises to beta")
    cycles: int = Field(4, ge=1, le=1000, description="rises over the run (cyclical schedule)")


class VaeSpec(CamelModel):
    """The vae task's loss, previews and export (mirrors the job config's ``vae``)."""

    latent_dim: int = Field(16, ge=2, le=1024, description="size of the latent space")
    beta: float = Field(1.0, ge=0, le=1000, description="weight of the KL term at full strength")
    free_bits: float = Field(0.1, ge=0, le=100, description="nats per latent dimension under which KL is not pushed")
    kl_anneal: KlAnnealSpec = Field(default_factory=KlAnnealSpec, description="the KL weight's warm-up")
    preview_every: int = Field(5, ge=1, le=100000, description="write audio previews every N epochs (and at the last)")
    preview_clips: int = Field(3, ge=1, le=32, description="validation clips reconstructed in each preview")
    prior_samples: int = Field(2, ge=0, le=32, description="clips sampled from the prior in each preview")
    griffin_lim_iters: int = Field(32, ge=1, le=1000, description="Griffin-Lim iterations turning a spectrogram into audio")
    export_parts: list[Literal["decoder", "encoder", "model"]] = Field(
        default_factory=lambda: list[Literal["decoder", "encoder", "model"]](["decoder"]), min_length=1,
        description="the parts exported in Finalization",
    )


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
    fixed: list[str] = Field(
        default_factory=list,
        description=("settings Diagnostics never changes, as job-config paths (e.g. model.name for a model "
                     "that must stay small for its deployment target; allowed: the paths its recommendations "
                     "change: train.lr, train.epochs, model.name, data.batchSize, ...)"),
    )

    @field_validator("fixed")
    @classmethod
    def _known_settings(cls, value: list[str]) -> list[str]:
        # Imported here: the diagnosis package imports the spec.
        from trainpipe_operator.diagnosis.settings import PATHS

        unknown = [path for path in value if path not in PATHS]
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))} is not a setting Diagnostics changes; "
                             f"allowed: {', '.join(sorted(PATHS))}")
        return list(dict.fromkeys(value))


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
    overfit_gap: float = Field(
        0.1, gt=0, le=1, description="train - val accuracy gap that signals overfitting (classification)"
    )
    reproducibility: bool = Field(False, description="re-run the baseline with the same seed and compare losses")
    gpu_utilization: GpuUtilizationGateSpec = Field(
        default_factory=GpuUtilizationGateSpec,
        description="the gpu-utilization check: enabled (default true), or off with a reason",
    )
    stall_timeout: str = Field(
        STALL_TIMEOUT_DEFAULT, pattern=DURATION_PATTERN,
        description=("a running training job whose heartbeat has not moved for this long (5s to 24h; never less "
                     "than 10 of its measured steps) is declared hung: stopped and resubmitted from its last "
                     "checkpoint as the next attempt (runtime.maxAttempts)"),
    )
    start_timeout: str = Field(
        START_TIMEOUT_DEFAULT, pattern=DURATION_PATTERN,
        description=("a training job running this long (from when its launcher first reports it RUNNING; under "
                     "`trainpipe run`, from its submission) without its first heartbeat (imports, data loading, "
                     "the model and the process group set up; 5s to 24h) is declared hung, as for stallTimeout"),
    )

    @field_validator("stall_timeout", "start_timeout", mode="before")
    @classmethod
    def _timeout_range(cls, value: Any, info: ValidationInfo) -> Any:
        field, waited_for, default = {
            "stall_timeout": ("stallTimeout", "go without completing a step or a validation batch",
                              STALL_TIMEOUT_DEFAULT),
            "start_timeout": ("startTimeout", "take from running to its first step (data download and loading "
                              "included)", START_TIMEOUT_DEFAULT),
        }[str(info.field_name)]
        if isinstance(value, str) and not STALL_TIMEOUT_MIN <= parse_duration(value) <= STALL_TIMEOUT_MAX:
            raise ValueError(f"{value!r} is outside the allowed range 5s to 24h for spec.gates.{field}; give the "
                             f"longest time a healthy job may {waited_for}, with a margin (default {default})")
        return value

    @property
    def stall_seconds(self) -> float:
        return parse_duration(self.stall_timeout)

    @property
    def start_seconds(self) -> float:
        return parse_duration(self.start_timeout)

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
    queue_name: str | None = Field(
        None, min_length=1, max_length=63, pattern=NAME_PATTERN,
        description=("runtime rayjob: the Kueue LocalQueue its RayJobs are queued in (label kueue.x-k8s.io/queue-name; "
                     "created suspended, Kueue admits them); none: the operator's default queue, if it has one"))

    @field_validator("queue_name", mode="before")
    @classmethod
    def _queue_name(cls, value: Any) -> Any:
        return _pattern_check(value, NAME_PATTERN, "a Kueue LocalQueue name: a DNS-1123 label (lowercase letters, "
                                                   "digits and '-', starting and ending with a letter or digit, at most "
                                                   "63 characters)")


class ApprovalSpec(CamelModel):
    required: bool = Field(False, description="a person must approve before the pipeline succeeds")


def redact_uri(uri: str) -> str:
    """``uri`` with any user information replaced by ``***``: what an error
    message may show of a tracking URI someone wrote a password into."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "(not a URL)"
    if "@" not in parts.netloc:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, "***@" + host, parts.path, "", ""))


def redact_userinfo(text: str) -> str:
    """Every ``scheme://user:password@`` in ``text`` shown as ``scheme://***@``
    (a --set line quoted in an error, say)."""
    return re.sub(r"(://)[^/@\s]*@", r"\1***@", text)


def tracking_uri_problem(uri: str) -> str | None:
    """What is wrong with an MLflow tracking URI, or None. Credentials never
    go into the spec: they come from the environment (MLFLOW_TRACKING_TOKEN,
    or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        return f"{redact_uri(uri)!r} is not a URL ({exc}); expected http(s)://host[:port][/path]"
    if parts.scheme not in ("http", "https"):
        return (f"{redact_uri(uri)!r}: the scheme must be http or https (got {parts.scheme or 'none'!r}); "
                "expected http(s)://host[:port][/path] of an MLflow tracking server")
    if "@" in parts.netloc:
        return (f"{redact_uri(uri)!r} holds user information (credentials): remove it; the server's credentials "
                "come from the environment (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD; under the operator: its Secret), never from the spec")
    if not parts.hostname:
        return f"{uri!r} names no host; expected http(s)://host[:port][/path]"
    if parts.query or parts.fragment:
        return (f"{redact_uri(uri)!r} has a query or fragment: remove it (credentials never go into the spec); "
                "expected http(s)://host[:port][/path]")
    if port == 0:
        return f"{uri!r}: port 0 is not a port; expected http(s)://host[:port][/path]"
    return None


def registered_model_problem(name: str) -> str | None:
    """MLflow's rules for a registered model's name, checked before any server
    sees it: not blank, no '/' or ':', not a path that normalizes to
    something else ('.', '..', 'a/../b'), at most 256 characters."""
    if not name.strip():
        return "a registered model name must not be blank"
    if len(name) > MAX_REGISTERED_MODEL_NAME:
        return f"{name[:40]!r}...: at most {MAX_REGISTERED_MODEL_NAME} characters (MLflow's limit)"
    if "/" in name or ":" in name:
        return f"{name!r}: MLflow model names cannot contain '/' or ':'"
    if name in (".", "..") or any(ord(c) < 32 for c in name):
        return f"{name!r} is not a usable model name: give letters, digits, '.', '_', '-' or spaces"
    return None


class MlflowTrackingSpec(CamelModel):
    """The MLflow tracking server the pipeline's runs go to, and the
    registered model Finalization adds a version to."""

    tracking_uri: str = Field(..., min_length=1, max_length=2048, description=(
        "http(s)://host[:port][/path] of the MLflow tracking server; no credentials in it (they come from "
        "MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"))
    experiment: str | None = Field(None, min_length=1, max_length=500, description=(
        "the MLflow experiment (created when missing); default: <namespace>/<name> under the operator "
        "(which allows only names under <namespace>/), the pipeline's name with trainpipe run"))
    registered_model: str | None = Field(None, min_length=1, max_length=MAX_REGISTERED_MODEL_NAME, description=(
        "the registered model Finalization adds a version to (alias candidate; champion once approved); "
        "default: <namespace>.<name> under the operator (which allows only names starting <namespace>.), "
        "the pipeline's name with trainpipe run. MLflow's rules: no '/' or ':'"))

    @model_validator(mode="before")
    @classmethod
    def _uri(cls, data: Any) -> Any:
        # Before validation, so the error shows the URI with any credentials
        # in it replaced (the default message would quote the value as given).
        if isinstance(data, dict):
            key = "trackingUri" if "trackingUri" in data else "tracking_uri"
            uri = data.get(key)
            if isinstance(uri, str) and uri:
                problem = tracking_uri_problem(uri)
                if problem:
                    _fail("MlflowTrackingSpec", (key,), redact_uri(uri), problem)
        return data

    @field_validator("registered_model")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        problem = registered_model_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value


WANDB_NAME_PATTERN = r"^[^/\\#?%:]+$"


class WandbTrackingSpec(CamelModel):
    """The Weights & Biases project the pipeline's jobs log to (one W&B run
    per job, grouped by pipeline run)."""

    project: str = Field(..., min_length=1, max_length=128, pattern=WANDB_NAME_PATTERN,
                         description="the W&B project; no '/', '\\', '#', '?', '%' or ':'")
    entity: str | None = Field(None, min_length=1, max_length=128, pattern=WANDB_NAME_PATTERN,
                               description="the W&B team or user; default: the API key's default entity")
    mode: Literal["online", "offline"] = Field(
        "offline", description="offline (default): runs are written under each job's folder, for `wandb sync`; "
        "online: sent to W&B (needs WANDB_API_KEY in the jobs' environment)")

    @field_validator("project", "entity", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        return _pattern_check(value, WANDB_NAME_PATTERN, "a W&B name: no '/', '\\', '#', '?', '%' or ':'")


class TrackingSpec(CamelModel):
    """Experiment tracking (off when absent): runs in MLflow and/or W&B, and
    the registered model. Tracking never decides a gate and never stops the
    pipeline: an unreachable server sets the TrackingDegraded condition."""

    mlflow: MlflowTrackingSpec | None = Field(None, description="an MLflow tracking server: runs and the registry")
    wandb: WandbTrackingSpec | None = Field(None, description="a Weights & Biases project: one run per job")
    step_every: int = Field(50, ge=1, le=1_000_000,
                            description="log per-step metrics (step/train_loss, step/lr) every N optimizer steps")
    log_checkpoints: bool = Field(False, description="upload best_model.pt and last_model.pt as artifacts")

    @model_validator(mode="after")
    def _a_destination(self) -> TrackingSpec:
        if self.mlflow is None and self.wandb is None:
            raise ValueError("name where runs go: mlflow (trackingUri) and/or wandb (project); "
                             "or remove spec.tracking to turn tracking off")
        return self


class PipelineSpec(CamelModel):
    seed: int = Field(42, ge=0, le=2**32 - 1, description="seeds every random source")
    task: Literal["classification", "vae", "custom"] = Field(
        "classification",
        description="classification (images), vae (a generative model of small audio datasets), or custom (customTask)",
    )
    custom_task: CustomTaskSpec | None = Field(
        None, description="task custom only (required there): the task's import path and metrics"
    )
    model: ModelSpec = Field(default_factory=ModelSpec, validate_default=True, description="the model")
    data: DataSpec = Field(
        default_factory=dict,  # validated: a missing data.source is named
        validate_default=True, description="the dataset (data.source is required)",
    )
    target: TargetSpec = Field(default_factory=TargetSpec, validate_default=True,
                               description="what production-ready means")
    vae: VaeSpec | None = Field(None, description="task vae only: loss, previews, export (defaults apply when absent)")
    baseline: BaselineSpec = Field(default_factory=BaselineSpec, description="Phase 2 settings")
    optimization: OptimizationSpec = Field(default_factory=OptimizationSpec, description="Phase 4 limits")
    finalization: FinalizationSpec = Field(default_factory=FinalizationSpec, description="Phase 5 settings")
    gates: GatesSpec = Field(default_factory=GatesSpec, description="gate thresholds")
    budget: BudgetSpec = Field(default_factory=BudgetSpec, description="time limits")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="per-job resources")
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, description="where jobs run")
    approval: ApprovalSpec = Field(default_factory=ApprovalSpec, description="human approval")
    tracking: TrackingSpec | None = Field(
        None, description="experiment tracking in MLflow and/or W&B, and the model registry (off when absent)")
    suspend: bool = Field(False, description=(
        "true: the running job is stopped at a checkpoint and no job starts (held time does not count against "
        "the budget); false again: the pipeline resumes the same phase from that checkpoint"))
    ttl_seconds_after_finished: int | None = Field(None, ge=0, le=10 * 365 * 86400, description=(
        "seconds after a pipeline Succeeded or Failed when its jobs and Ray resources (RayJobs, Ray job "
        "submissions) are removed; the pipeline and its run directory stay. None: kept"))

    @field_validator("ttl_seconds_after_finished", mode="before")
    @classmethod
    def _ttl(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ValueError(f"{value} is negative: give a number of seconds >= 0 (0: remove at once), "
                             "or leave it out to keep the jobs")
        return value

    # Each rule below reads spec.task (validated first: fields validate in
    # order), so each reports at its own field, among the manifest's other
    # problems. A task that failed validation skips them (its own error says why).

    @model_validator(mode="wrap")
    @classmethod
    def _custom_task_required(cls, data: Any, handler: Any) -> Any:
        """``task: custom`` without ``customTask``, reported at ``customTask``
        next to the manifest's other problems (a field validator of a
        missing field would name it custom_task)."""
        missing = (isinstance(data, dict) and data.get("task") == "custom"
                   and data.get("customTask", data.get("custom_task")) is None)
        problem = _field_error(("customTask",), None, CUSTOM_TASK_REQUIRED)
        try:
            spec = handler(data)
        except ValidationError as exc:
            if not missing:
                raise
            raise ValidationError.from_exception_data(exc.title, [*exc.errors(), problem]) from None  # type: ignore[list-item]
        if missing:
            raise ValidationError.from_exception_data(cls.__name__, [problem])
        return spec

    @field_validator("custom_task")
    @classmethod
    def _custom_task_for_custom(cls, value: CustomTaskSpec | None, info: ValidationInfo) -> CustomTaskSpec | None:
        task = info.data.get("task")
        if task is not None and task != "custom" and value is not None:
            raise ValueError(f"only read when spec.task is 'custom' (it is {task!r}): remove it")
        return value

    @field_validator("model")
    @classmethod
    def _model_of_task(cls, value: ModelSpec, info: ValidationInfo) -> ModelSpec:
        catalog = _catalog(info)
        if catalog is None:
            return value
        if value.name is None:
            return value.model_copy(update={"name": catalog.default_model})
        if not catalog.allows_model(value.name):
            _fail("ModelSpec", ("name",), value.name,
                  f"{value.name!r} is not a model of task {catalog.task}; allowed: {quoted(catalog.models or ())}")
        return value

    @field_validator("data")
    @classmethod
    def _data_of_task(cls, value: DataSpec, info: ValidationInfo) -> DataSpec:
        task = info.data.get("task")
        catalog = _catalog(info)
        errors = []
        if catalog is not None:
            for i, name in enumerate(value.augment):
                if not catalog.allows_augmentation(name):
                    errors.append(_field_error(("augment", i), name, (
                        f"{name!r} is not an augmentation of task {catalog.task}; "
                        f"allowed: {quoted(catalog.augmentations or ())}")))
            if value.source is not None and not catalog.allows_dataset(value.source):
                errors.append(_field_error(("source",), value.source, (
                    f"{value.source!r} is not a built-in dataset of task {catalog.task}; "
                    f"use {' or '.join(catalog.datasets or ())}, or a path")))
        if task == "classification" and value.audio is not None:
            errors.append(_field_error(("audio",), value.audio.dump(),
                                       "only read by task vae or custom (spec.task is 'classification'): remove it"))
        _raise("DataSpec", errors)
        return value

    @field_validator("target")
    @classmethod
    def _target_of_task(cls, value: TargetSpec, info: ValidationInfo) -> TargetSpec:
        catalog = _catalog(info)
        if catalog is None:
            return value
        name = value.metric or catalog.primary
        metric = catalog.get(name)
        if metric is None or not metric.targetable:
            _fail("TargetSpec", ("metric",), name,
                  f"{name!r} is not a metric task {catalog.task} can target; allowed: {quoted(catalog.targetable())}")
        if metric.split == "test" and catalog.tracked(name) is metric:
            _fail("TargetSpec", ("metric",), name,
                  f"{name!r} is measured once, on the test split, and task {catalog.task} reports no "
                  f"val_{name.removeprefix('test_')} to track it by until then; declare it, or target a val_ metric")
        if metric.is_fraction and value.value > 1:
            raise ValueError(
                f"value: a target for {name} ({metric.description}) is a fraction in [0, 1], got {value.value:g}"
            )
        resolved = value if value.metric == name else value.model_copy(update={"metric": name})
        resolved._lower_is_better = metric.lower_is_better
        return resolved

    @field_validator("vae")
    @classmethod
    def _vae_for_vae(cls, value: VaeSpec | None, info: ValidationInfo) -> VaeSpec | None:
        task = info.data.get("task")
        if value is not None and task is not None and task != "vae":
            raise ValueError(f"only read when spec.task is 'vae' (it is {task!r}): remove it")
        return value

    def catalog(self) -> TaskCatalog:
        """The task's catalog: its metrics, directions, models (``trainpipe_operator.tasks``)."""
        return catalog_for_task(self.task, self.custom_task.metrics if self.custom_task is not None else None)

    @property
    def target_metric(self) -> str:
        """The target's metric name (the task's primary when the manifest names none)."""
        return self.target.metric or self.catalog().primary

    @property
    def model_name(self) -> str:
        """The model's name (the task's default when the manifest names none)."""
        return self.model.name or self.catalog().default_model


def _catalog(info: ValidationInfo) -> TaskCatalog | None:
    """The catalog of the task validated so far; None when the task (or a
    custom task's declaration) is itself invalid: its own error says why."""
    task = info.data.get("task")
    if task not in TASKS:
        return None
    if task == "custom":
        custom = info.data.get("custom_task")
        if custom is None:
            return None
        return catalog_for_task("custom", custom.metrics)
    return catalog_for_task(task)


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
    spec: PipelineSpec = Field(default_factory=dict, validate_default=True)  # validated: data.source is named
    status: PipelineStatus | None = None

    @classmethod
    def from_manifest(cls, data: Any) -> TrainingPipeline:
        return cls.model_validate(data)
