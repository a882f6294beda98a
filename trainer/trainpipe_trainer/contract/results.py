"""What the one-process jobs leave for the gates: ``preflight.json``
(Planning gate, check ``preflight``), ``test_evaluation.json`` and
``export.json`` (Finalization gate: ``test-evaluated``, ``exported``,
``export-parity``; ``deployment-guide`` is written from ``export.json``).

Pure pydantic, like the rest of the contract: the control plane reads these
without importing torch. Each document is written through a temporary file
and a rename (``write``), so a reader never sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from trainpipe_trainer.contract.json_file import write_model_json

PREFLIGHT_FILE = "preflight.json"
TEST_EVALUATION_FILE = "test_evaluation.json"
EXPORT_FILE = "export.json"

PARITY_RTOL = 1e-3
PARITY_ATOL = 1e-5

_T = TypeVar("_T", bound="_Result")


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def write(self, path: str | Path) -> Path:
        """Write as JSON through a temporary file and a rename: never half-written."""
        return write_model_json(self, path)

    @classmethod
    def read(cls: type[_T], path: str | Path) -> _T:
        with open(path, encoding="utf-8") as handle:
            return cls.model_validate(json.load(handle))


# ------------------------------------------------------------------ preflight
class SplitBatchCheck(_Result):
    """One real batch from one split's DataLoader."""

    ok: bool
    error: str | None = None
    samples: int = Field(default=0, description="samples in the split")
    batch_shape: list[int] | None = None
    skipped: bool = Field(default=False, description="the split is empty because its fraction is 0")


class PreflightReport(_Result):
    """A real batch per split, labels in range, one finite forward/backward pass.

    ``ok`` is true only when every split yielded a batch, every label is in
    ``[0, num_classes)``, and the loss and every gradient are finite.
    """

    ok: bool
    model: str = ""
    num_classes: int | None = None
    batch_shape: list[int] = Field(default_factory=list, description="the train batch, NCHW")
    batch_dtype: str = ""
    labels_in_range: bool = False
    loss: float | None = Field(default=None, description="cross-entropy of the train batch (NaN as null)")
    loss_finite: bool = False
    grads_finite: bool = False
    params_with_nonfinite_grad: list[str] = Field(default_factory=list)
    params_without_grad: list[str] = Field(
        default_factory=list, description="trainable parameters the loss did not reach"
    )
    splits: dict[str, SplitBatchCheck] = Field(
        default_factory=dict, description="train/val/test: did one batch load (test: decode only)"
    )
    device: str = "cpu"
    seconds: float = 0.0
    error: str | None = None
    log_path: str = "logs/preflight.log"


# ------------------------------------------------------------ test evaluation
class ClassMetrics(_Result):
    class_name: str
    precision: float
    recall: float
    f1: float
    support: int


class TestEvaluation(_Result):
    """The held-out test split, evaluated once with the final checkpoint.

    ``confusion_matrix[i][j]``: samples of true class ``i`` predicted as ``j``.
    Per-class metrics are computed from it; ``macro_f1`` averages the F1 of
    the classes that occur as a target or a prediction.
    """

    __test__ = False  # not a pytest test class despite the name

    split: Literal["test"] = "test"
    task: str = "classification"
    samples: int
    metrics: dict[str, float | None] = Field(
        default_factory=dict, description="the task's test metrics by name (test_acc, test_loss, test_recon, ...)"
    )
    accuracy: float | None = None
    top5: float | None = Field(None, description="top-k accuracy with k = min(5, class count)")
    loss: float | None = Field(description="mean loss (cross-entropy; the VAE: negative ELBO); null when not finite")
    per_class: list[ClassMetrics] = Field(default_factory=list)
    macro_f1: float | None = None
    confusion_matrix: list[list[int]] = Field(default_factory=list)
    classes: list[str] = Field(default_factory=list)
    checkpoint: str
    checkpoint_epoch: int | None = None
    checkpoint_val_loss: float | None = None
    model: str = ""
    data_source: str = ""
    split_fingerprint: str = Field(default="", description="the data report's: the same split as training")
    confusion_png: str | None = "confusion_matrix.png"
    evaluated_at: str


# --------------------------------------------------------------------- export
class ExportArtifact(_Result):
    """One exported file. For ``torchscript`` the artifact is a
    ``torch.export`` program (``model.pt2``) where that works, else a traced
    TorchScript module (``model.ts``); ``kind`` says which and ``load`` how."""

    format: str = Field(description="as requested: onnx or torchscript")
    part: str | None = Field(default=None, description="the model part (the VAE: decoder, encoder, model)")
    kind: Literal["onnx", "torch.export", "torch.jit.trace"] | None = None
    path: str | None = Field(default=None, description="relative to the run directory")
    bytes: int = 0
    checker_ok: bool = Field(
        default=False, description="onnx: onnx.checker.check_model passed; others: loaded back and ran"
    )
    exporter: str | None = Field(default=None, description="the exporter used, e.g. torch.onnx.export(dynamo=False)")
    notes: list[str] = Field(default_factory=list)
    load: str = Field(default="", description="how to load it, one line of Python")
    error: str | None = None


class ParityCheck(_Result):
    """Exported model vs PyTorch (eval mode, fp32) on the same real inputs."""

    runtime: Literal["onnxruntime", "torchscript", "torch.export"]
    part: str | None = Field(default=None, description="the model part (the VAE: decoder, encoder, model)")
    samples: int = 0
    max_abs_diff: float | None = None
    rtol: float = PARITY_RTOL
    atol: float = PARITY_ATOL
    allclose: bool = False
    top1_agree: int = Field(default=0, description="inputs whose top-1 class is the same")
    top1_agree_all: bool = False
    top1_applicable: bool = Field(default=True, description="the output is class scores (false: a VAE's mel)")

    @property
    def agrees(self) -> bool:
        """allclose, the same top-1 class on every input where that applies, no error."""
        return self.allclose and (self.top1_agree_all or not self.top1_applicable) and self.error is None
    error: str | None = None


class Preprocessing(_Result):
    """What a caller does to an image before the model sees it."""

    image_size: int
    mean: list[float]
    std: list[float]
    channels: int = 3
    layout: str = "NCHW"
    dtype: str = "float32"
    scale: str = "[0,1] then normalize"
    resize: str = "to image_size x image_size, antialiased"


class ExportReport(_Result):
    """``ok``: every requested format was written and checked, and every
    parity check is allclose with the same top-1 class on every input."""

    ok: bool = False
    artifacts: list[ExportArtifact] = Field(default_factory=list)
    parity: list[ParityCheck] = Field(default_factory=list)
    input_shape: list[int | str] = Field(default_factory=list, description='"batch" when dynamic')
    input_name: str = "input"
    output_name: str = "logits"
    output: str = "unnormalised class scores (logits), shape [batch, len(classes)]; softmax for probabilities"
    opset: int | None = None
    dynamic_batch: bool = False
    preprocessing: Preprocessing | None = None
    classes: list[str] = Field(default_factory=list)
    parts: dict[str, str] = Field(
        default_factory=dict, description="the VAE: which exported file holds which part (decoder, encoder, model)"
    )

    def artifact(self, fmt: str) -> ExportArtifact | None:
        return next((a for a in self.artifacts if a.format == fmt), None)

    def parity_for(self, runtime: str) -> ParityCheck | None:
        return next((p for p in self.parity if p.runtime == runtime), None)

    def compute_ok(self) -> bool:
        artifacts_ok = bool(self.artifacts) and all(a.checker_ok and a.error is None for a in self.artifacts)
        parity_ok = len(self.parity) >= len(self.artifacts) and all(p.agrees for p in self.parity)
        return artifacts_ok and parity_ok
