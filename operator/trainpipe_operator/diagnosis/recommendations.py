"""Phase 3's recommendations: 3-5 concrete changes to the training config,
ranked by expected impact (high first), then effort (low first).

Each :class:`Recommendation` carries ``expected_gain``: an estimate, in the
units of the target metric (accuracy points as a fraction, or loss; always
positive = better), of what it could win. The estimate is a fixed share of
the quantity its issue can recover, measured on the run:

* overfitting: the train-val gap in the target metric (accuracy gap; loss gap
  for a loss target)
* underfitting: the shortfall to the target
* nan-loss, convergence-stall: the room left (1 - a fraction, or the loss itself)
* resource-inefficiency: 0 (it buys time, not accuracy)
* data-quality: 0 (fixing a leak lowers the measured metric)
* crash: 0 (the run must first finish)

and never more than the room left. ``decide_after_diagnostics`` reads the sum
of these against the 5% / 3% bars (docs/gates.md, "After Diagnostics").

Only the primary issue's remedies are proposed, plus one for a secondary
resource-inefficiency (orthogonal to accuracy): the other secondaries' remedies
pull the other way (more capacity vs more regularization), so they are only
listed in the report.

Models and augmentations are the task's (its catalog: a larger or smaller
model along its ladder, its own augmentations); a custom task's are its own
business, so no recommendation changes them.

Data-quality problems (leakage, corrupt samples) and a crash have no safe
automatic change: those recommendations have ``changes=[]`` and
``requires_human=True``. A list with no automatic change sends the pipeline
back to Baseline (``decide_after_diagnostics``), never to Optimization.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainpipe_operator.diagnosis.direction import finite, room, shortfall
from trainpipe_operator.diagnosis.issues import Diagnosis, IssueKind
from trainpipe_operator.diagnosis.settings import (
    LR_MAX,
    LR_MIN,
    TrainSettings,
)
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_operator.tasks import TaskCatalog, catalog_for

Impact = Literal["high", "medium", "low"]
Effort = Literal["low", "medium", "high"]
IMPACT_ORDER: dict[str, int] = {"high": 0, "medium": 1, "low": 2}
EFFORT_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
MIN_RECOMMENDATIONS = 3
MAX_RECOMMENDATIONS = 5
WEIGHT_DECAY_CAP = 0.5
OVERFIT_AUGMENTATIONS = ("hflip", "crop", "rotation")
# Per task: the augmentations added first against overfitting, then the one
# tried when those are all on, and why.
OVERFIT_AUGMENT: dict[str, tuple[tuple[str, ...], str, str]] = {
    "classification": (OVERFIT_AUGMENTATIONS, "colorjitter",
                       " Drop hflip/rotation where orientation carries the label (digits, text)."),
    "vae": (("gain", "shift", "noise"), "mask",
            " Gain and time shifts keep the timbre; noise and masking make the decoder fill gaps."),
}

__all__ = [
    "ConfigChange",
    "Recommendation",
    "TrainSettings",
    "rank_key",
    "recommend",
]


class ConfigChange(BaseModel):
    """Set the job-config field at ``path`` (camelCase, e.g. ``train.weightDecay``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    old: Any = None
    new: Any = None
    recommendation_id: str = ""
    note: str = Field(default="", description="why a change was skipped (apply), or a remark")

    def describe(self) -> str:
        return f"{self.path}: {fmt_value(self.old)} -> {fmt_value(self.new)}"


class Recommendation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    issue: IssueKind
    title: str
    rationale: str
    changes: list[ConfigChange] = Field(default_factory=list)
    expected_impact: Impact
    expected_gain: float = Field(ge=0, description="absolute, in the target metric; positive = better")
    effort: Effort
    requires_human: bool = False

    @model_validator(mode="after")
    def _concrete(self) -> Recommendation:
        if not self.changes and not self.requires_human:
            raise ValueError(f"recommendation {self.id!r} has no change: mark it requires_human")
        return self


def rank_key(rec: Recommendation, primary: str | None = None) -> tuple[int, int, int, float]:
    """Impact desc, effort asc; ties: the primary issue's first, then gain desc."""
    return (
        IMPACT_ORDER[rec.expected_impact],
        EFFORT_ORDER[rec.effort],
        0 if primary is None or rec.issue == primary else 1,
        -rec.expected_gain,
    )


def recommend(
    diagnosis: Diagnosis, current: TrainSettings, spec: PipelineSpec
) -> list[Recommendation]:
    """3-5 recommendations for the diagnosis, ranked (see ``rank_key``). A
    ``vae`` diagnosis takes its remedies from ``vae_recommendations``."""
    by_issue = _BY_ISSUE
    if diagnosis.task == "vae":
        # imported here: vae_recommendations imports this module
        from trainpipe_operator.diagnosis.vae_recommendations import VAE_BY_ISSUE

        by_issue = VAE_BY_ISSUE
    ctx = _Context(diagnosis, current, spec)
    if diagnosis.infrastructure_broken:
        recs = _crash_oom(ctx) if diagnosis.fired("crash-oom") else _crash(ctx)
    else:
        recs = by_issue[diagnosis.primary_issue](ctx)
        if (
            diagnosis.primary_issue not in ("nan-loss", "resource-inefficiency")
            and not diagnosis.leak_suspected
            and "resource-inefficiency" in diagnosis.secondary_issues
        ):
            extra = _ranked(_resource(ctx), diagnosis.primary_issue)
            if extra and len(recs) < MAX_RECOMMENDATIONS:
                # for the target metric a throughput change is low impact: it ranks last
                recs.append(extra[0].model_copy(update={
                    "expected_impact": "low",
                    "rationale": extra[0].rationale + " (Secondary issue: saves time, no accuracy gain.)",
                }))
    recs = _changeable(_dedupe(recs), spec)
    if len(recs) < MIN_RECOMMENDATIONS and not diagnosis.infrastructure_broken:
        recs += [r for r in _changeable(_fillers(ctx), spec) if r.id not in {x.id for x in recs}]
    return _ranked(recs, diagnosis.primary_issue)[:MAX_RECOMMENDATIONS]


def _changeable(recs: list[Recommendation], spec: PipelineSpec) -> list[Recommendation]:
    """Without the recommendations that would change a setting the user holds
    fixed (``spec.optimization.fixed``): those are never recommended, so the
    report lists only what Optimization may apply."""
    fixed = set(spec.optimization.fixed)
    return [r for r in recs if not fixed.intersection(c.path for c in r.changes)]


# -- context and builders -----------------------------------------------------


class _Context:
    def __init__(self, diagnosis: Diagnosis, settings: TrainSettings, spec: PipelineSpec) -> None:
        self.d = diagnosis
        self.s = settings
        self.spec = spec
        self.catalog: TaskCatalog = catalog_for(spec)
        m = diagnosis.measurements
        metric = diagnosis.target
        self.room = room(diagnosis.metric_value, metric, m.train_loss)
        short = shortfall(diagnosis.metric_value, diagnosis.target_value, metric)
        self.shortfall = min(short, self.room)
        self.gap = min(max(_gap(diagnosis), 0.0), self.room)

    def gain(self, share: float, basis: float) -> float:
        return round(max(0.0, min(share * basis, self.room)), 4)

    def rec(
        self,
        issue: IssueKind,
        name: str,
        title: str,
        rationale: str,
        changes: list[tuple[str, Any]],
        impact: Impact,
        gain: float,
        effort: Effort,
        requires_human: bool = False,
    ) -> Recommendation | None:
        """None when every change is a no-op (nothing left to change)."""
        rid = f"{issue}/{name}"
        concrete = [
            ConfigChange(path=path, old=self.s.get(path), new=new, recommendation_id=rid)
            for path, new in changes
            if new is not None and new != self.s.get(path)
        ]
        if changes and not concrete and not requires_human:
            return None
        return Recommendation(
            id=rid, issue=issue, title=title, rationale=rationale, changes=concrete,
            expected_impact=impact, expected_gain=gain, effort=effort,
            requires_human=requires_human or not concrete,
        )


def _gap(d: Diagnosis) -> float:
    """The train-val gap in the target metric's units (positive: val is worse)."""
    m = d.measurements
    if d.metric == "val_loss" or (d.lower_is_better and d.task == "classification"):
        return (m.best_val_loss - m.train_loss) if m.best_val_loss is not None and m.train_loss is not None else 0.0
    if d.metric == "val_acc":
        return m.acc_gap or 0.0
    if finite(m.val_metric) and finite(m.train_metric):
        return m.val_metric - m.train_metric if d.lower_is_better else m.train_metric - m.val_metric
    # no train counterpart reported: the relative loss gap, in the metric's units
    if finite(m.loss_gap) and finite(d.metric_value):
        return abs(m.loss_gap * d.metric_value)
    return 0.0


def _scale_lr(lr: float, factor: float) -> float:
    return _sig(min(max(lr * factor, LR_MIN), LR_MAX))


def _sig(value: float) -> float:
    return float(f"{value:.3g}")


def _more_warmup(s: TrainSettings) -> float:
    nxt = 1.0 if s.warmup_epochs < 1 else s.warmup_epochs + 1
    return min(nxt, max(s.epochs - 1, 0) / 2) if s.epochs > 1 else s.warmup_epochs


def _keep(*recs: Recommendation | None) -> list[Recommendation]:
    return [r for r in recs if r is not None]


# -- per issue ----------------------------------------------------------------


def _nan_loss(c: _Context) -> list[Recommendation]:
    s, basis = c.s, c.room
    clip = 1.0 if s.grad_clip_norm is None or s.grad_clip_norm > 1.0 else max(0.1, s.grad_clip_norm / 2)
    return _keep(
        c.rec("nan-loss", "check-data", "Fix or remove the samples holding NaN/Inf",
              "The data report found non-finite samples: no learning rate makes NaN inputs finite.",
              [], "high", 0.0, "low", requires_human=True) if c.d.fired("non-finite-samples") else None,
        c.rec("nan-loss", "lower-lr", f"Lower the learning rate 10x ({s.lr:g} -> {_scale_lr(s.lr, 0.1):g})",
              "Non-finite losses or exploding gradients are the signature of a step size the loss "
              "surface cannot take; 10x lower is the standard first fix.",
              [("train.lr", _scale_lr(s.lr, 0.1))], "high", c.gain(0.4, basis), "low"),
        c.rec("nan-loss", "grad-clip",
              "Enable gradient clipping at norm 1.0" if s.grad_clip_norm is None
              else f"Clip gradients at norm {clip:g}",
              "Clipping bounds the size of one update, so a single bad batch cannot blow up the "
              "weights." + ("" if s.grad_clip_norm is None or s.grad_clip_norm > 1.0
                            else f" Clipping at {s.grad_clip_norm:g} was not enough, so tighten it."),
              [("train.gradClipNorm", clip)], "medium", c.gain(0.2, basis), "low"),
        c.rec("nan-loss", "warmup", f"Warm the learning rate up over {_more_warmup(s):g} epoch(s)",
              "Early steps, with freshly initialized weights and optimizer statistics, are where "
              "divergence usually starts; a warmup ramps the step size in.",
              [("train.warmupEpochs", _more_warmup(s))], "medium", c.gain(0.15, basis), "low"),
    )


def _convergence_stall(c: _Context) -> list[Recommendation]:
    s, basis = c.s, c.room
    factor = 10.0 if s.lr < 1e-4 else 3.0
    bigger = c.catalog.bigger_model(s.model_name)
    return _keep(
        c.rec("convergence-stall", "raise-lr",
              f"Raise the learning rate {factor:g}x ({s.lr:g} -> {_scale_lr(s.lr, factor):g})",
              "The train loss barely moved: the steps are too small to make progress"
              + (" (the learning rate is tiny)." if factor == 10 else "."),
              [("train.lr", _scale_lr(s.lr, factor))], "high", c.gain(0.5, basis), "low"),
        c.rec("convergence-stall", "adamw", "Switch the optimizer from SGD to AdamW",
              "Adaptive steps escape flat regions SGD crawls through, with less tuning of the lr.",
              [("train.optimizer", "adamw")], "medium", c.gain(0.25, basis), "low"),
        c.rec("convergence-stall", "bigger-model", f"Use a larger model ({s.model_name} -> {bigger})",
              "A model with too little capacity cannot lower the loss further whatever the lr.",
              [("model.name", bigger)], "medium", c.gain(0.2, basis), "medium") if bigger else None,
        c.rec("convergence-stall", "warmup", f"Warm the learning rate up over {_more_warmup(s):g} epoch(s)",
              "With a higher lr, a warmup keeps the first steps stable.",
              [("train.warmupEpochs", _more_warmup(s))], "low", c.gain(0.05, basis), "low"),
    )


def _overfitting(c: _Context) -> list[Recommendation]:
    s, gap = c.s, c.gap
    wd = 0.05 if s.weight_decay == 0 else _sig(min(s.weight_decay * 10, WEIGHT_DECAY_CAP))
    first, then, why = OVERFIT_AUGMENT.get(c.catalog.task, ((), "", ""))
    missing = [a for a in first if a not in s.augment]
    if not missing and then and then not in s.augment:
        missing = [then]
    dropout = 0.3 if s.dropout < 0.3 else min(0.5, round(s.dropout + 0.2, 2))
    patience = min(5, s.epochs // 4) if s.patience is None and s.epochs >= 4 else None
    smaller = c.catalog.smaller_model(s.model_name) if c.catalog.is_largest_model(s.model_name) else None
    gap_text = f"train-val gap {gap:.3f}"
    return _keep(
        c.rec("overfitting", "augmentation", f"Add data augmentation ({', '.join(missing)})",
              f"More varied training samples are the most direct cure for memorization ({gap_text})." + why,
              [("data.augment", [*s.augment, *missing])], "high", c.gain(0.35, gap), "low")
        if missing else None,
        c.rec("overfitting", "weight-decay", f"Raise weight decay ({s.weight_decay:g} -> {wd:g})",
              f"Stronger L2 regularization shrinks the weights the model uses to memorize ({gap_text}).",
              [("train.weightDecay", wd)], "high", c.gain(0.3, gap), "low"),
        c.rec("overfitting", "dropout", f"Raise dropout ({s.dropout:g} -> {dropout:g})",
              "Dropout keeps units from co-adapting to the training set.",
              [("train.dropout", dropout)], "medium", c.gain(0.2, gap), "low") if s.dropout < 0.5 else None,
        c.rec("overfitting", "smaller-model", f"Use a smaller model ({s.model_name} -> {smaller})",
              "Fewer parameters leave less room to memorize a small dataset.",
              [("model.name", smaller)], "medium", c.gain(0.15, gap), "medium") if smaller else None,
        c.rec("overfitting", "early-stopping", f"Stop early (patience {patience} epochs)",
              "Stops once val loss has not improved for a few epochs: the best checkpoint is kept "
              "and the epochs spent memorizing are saved.",
              [("train.patience", patience)], "low", c.gain(0.02, gap), "low") if patience else None,
    )


def _underfitting(c: _Context) -> list[Recommendation]:
    s, short = c.s, c.shortfall
    bigger = c.catalog.bigger_model(s.model_name)
    improving = c.d.measurements.val_still_improving
    epochs = min(s.epochs * 2, 100000)
    lr = _scale_lr(s.lr, 3.0)
    regularized = s.dropout > 0 or s.weight_decay > 1e-3
    return _keep(
        c.rec("underfitting", "bigger-model", f"Use a larger model ({s.model_name} -> {bigger})",
              f"Train and val both miss the target by a similar margin (shortfall {short:.3f}): "
              "the model lacks capacity.",
              [("model.name", bigger)], "high", c.gain(0.5, short), "medium") if bigger else None,
        c.rec("underfitting", "longer-training", f"Train longer ({s.epochs} -> {epochs} epochs)",
              "The validation metric was still improving at the last epoch; more epochs continue the curve."
              if improving else "More epochs give the optimizer time to fit the training set.",
              [("train.epochs", epochs)], "high" if improving else "medium",
              c.gain(0.4 if improving else 0.3, short), "low"),
        c.rec("underfitting", "raise-lr", f"Raise the learning rate 3x ({s.lr:g} -> {lr:g})",
              "A larger step size fits faster within the same epoch budget.",
              [("train.lr", lr)], "medium", c.gain(0.2, short), "low"),
        c.rec("underfitting", "less-regularization", "Reduce regularization (dropout 0, weight decay /10)",
              "Regularization fights fitting; an underfitted model needs less of it.",
              [("train.dropout", 0.0), ("train.weightDecay", _sig(s.weight_decay / 10))],
              "medium", c.gain(0.15, short), "low") if regularized else None,
    )


def _resource(c: _Context) -> list[Recommendation]:
    s = c.s
    util = c.d.measurements.gpu_util
    where = f"GPU utilization {util:.0f}%" if util is not None else "GPU utilization is low"
    workers = 4 if s.num_workers < 4 else min(s.num_workers * 2, 64)
    batch = min(s.batch_size * 2, 65536)
    every = 5 if s.checkpoint_every < 5 else s.checkpoint_every * 2
    return _keep(
        c.rec("resource-inefficiency", "loader-workers", f"Use {workers} data-loader workers",
              f"{where}: the GPU waits on data; parallel loading keeps it fed.",
              [("data.numWorkers", workers)], "high", 0.0, "low"),
        c.rec("resource-inefficiency", "larger-batch", f"Double the batch size ({s.batch_size} -> {batch})",
              f"{where}: larger batches give the GPU more work per launch. Watch the lr: "
              "the linear scaling rule suggests raising it with the batch for SGD.",
              [("data.batchSize", batch)], "medium", 0.0, "low"),
        c.rec("resource-inefficiency", "pin-memory", "Pin host memory for transfers",
              "Pinned buffers make host-to-GPU copies asynchronous.",
              [("data.pinMemory", True)], "medium", 0.0, "low") if not s.pin_memory else None,
        c.rec("resource-inefficiency", "amp", "Enable mixed precision (amp: auto)",
              "bf16/fp16 halves memory traffic and uses tensor cores.",
              [("train.amp", "auto")], "medium", 0.0, "low") if s.amp == "off" else None,
        c.rec("resource-inefficiency", "checkpoint-less-often",
              f"Write periodic checkpoints every {every} epochs",
              "Each checkpoint write pauses training; best/last checkpoints are still kept.",
              [("train.checkpointEvery", every)], "low", 0.0, "low"),
    )


def _data_quality(c: _Context) -> list[Recommendation]:
    d, s = c.d, c.s
    recs: list[Recommendation | None] = []
    if d.fired("duplicates-across-splits"):
        n = next(x.value for x in d.signals if x.signal == "duplicates-across-splits")
        recs.append(c.rec("data-quality", "fix-splits", f"Remove the {n} duplicate group(s) across splits",
                          "Identical files in train and val let the model be graded on what it memorized; "
                          "deduplicate, then re-split (by source/subject where samples are related).",
                          [], "high", 0.0, "medium", requires_human=True))
    if d.fired("val-acc-near-perfect"):
        recs.append(c.rec("data-quality", "inspect-leakage", "Check the validation split for leakage",
                          "Near-perfect val accuracy usually means val overlaps train or a feature "
                          "(file name, border, metadata) gives the label away.",
                          [], "high", 0.0, "medium", requires_human=True))
    if d.fired("non-finite-samples"):
        recs.append(c.rec("data-quality", "fix-nonfinite", "Fix or remove the samples holding NaN/Inf",
                          "Non-finite inputs poison the loss; see the data report's nonfinite_samples.",
                          [], "high", 0.0, "low", requires_human=True))
    if d.fired("val-acc-unstable") and not d.leak_suspected:  # no tuning against a leaked val split
        recs.append(c.rec("data-quality", "lower-lr", f"Lower the learning rate 2x ({s.lr:g} -> {_scale_lr(s.lr, 0.5):g})",
                          "Val accuracy swinging between epochs is often a step size too large for the "
                          "final phase of training.",
                          [("train.lr", _scale_lr(s.lr, 0.5))], "medium", c.gain(0.1, c.room), "low"))
        recs.append(c.rec("data-quality", "larger-batch",
                          f"Double the batch size ({s.batch_size} -> {min(s.batch_size * 2, 65536)})",
                          "Larger batches average out gradient noise.",
                          [("data.batchSize", min(s.batch_size * 2, 65536))], "low", c.gain(0.05, c.room), "low"))
        recs.append(c.rec("data-quality", "enlarge-val", "Enlarge the validation split / inspect labels",
                          "A small or mislabelled validation set makes the metric itself noisy.",
                          [], "medium", 0.0, "medium", requires_human=True))
    recs.append(c.rec("data-quality", "inspect-labels", "Inspect a sample of labels per class",
                      "Suspect labels cap every metric; a look at 20 samples per class finds systematic errors.",
                      [], "medium", 0.0, "medium", requires_human=True))
    recs.append(c.rec("data-quality", "rerun-planning", "Rerun the Planning gate on the fixed data",
                      "The data report (duplicates, non-finite samples, class balance) confirms the fix "
                      "before a new baseline.",
                      [], "low", 0.0, "low", requires_human=True))
    return _keep(*recs)


def _crash(c: _Context) -> list[Recommendation]:
    crash = c.d.crash or "an exception"
    logged = f" The log's last error: {c.d.last_error}." if c.d.last_error and c.d.last_error not in crash else ""
    return _keep(
        c.rec("crash", "fix-crash", f"Fix the crash: {crash}",
              "The run failed for a reason that is not numerical (data loading, a missing file, "
              "configuration); read the traceback in evidence.json and logs/training.log." + logged,
              [], "high", 0.0, "medium", requires_human=True),
        c.rec("crash", "loader-in-process", "Load data in the training process (numWorkers 0)",
              "Errors inside loader workers surface with their real traceback when loading runs in "
              "the main process.",
              [("data.numWorkers", 0)], "medium", 0.0, "low") if c.s.num_workers > 0 else None,
        c.rec("crash", "check-source", "Check the data source is reachable and complete",
              "Rerun the Planning gate: its data report names unreadable files and missing classes.",
              [], "medium", 0.0, "low", requires_human=True),
    )


def _crash_oom(c: _Context) -> list[Recommendation]:
    s = c.s
    batch = max(1, s.batch_size // 2)
    smaller = c.catalog.smaller_model(s.model_name)
    return _keep(
        c.rec("resource-inefficiency", "smaller-batch", f"Halve the batch size ({s.batch_size} -> {batch})",
              "The run ran out of memory; activations scale with the batch.",
              [("data.batchSize", batch)], "high", 0.0, "low"),
        c.rec("resource-inefficiency", "grad-accumulation",
              f"Accumulate gradients over {s.grad_accum_steps * 2} steps",
              "Keeps the effective batch size (and so the tuned lr) while the per-step batch halves.",
              [("train.gradAccumSteps", min(s.grad_accum_steps * 2, 1024))], "medium", 0.0, "low"),
        c.rec("resource-inefficiency", "amp", "Enable mixed precision (amp: auto)",
              "Half-precision activations take half the memory.",
              [("train.amp", "auto")], "medium", 0.0, "low") if s.amp == "off" else None,
        c.rec("resource-inefficiency", "smaller-model", f"Use a smaller model ({s.model_name} -> {smaller})",
              "Fewer parameters and activations fit the device.",
              [("model.name", smaller)], "medium", 0.0, "medium") if smaller else None,
        c.rec("resource-inefficiency", "check-memory", f"Check the device's memory: {c.d.crash}",
              "Another process may hold the GPU, or workers.memory may be too small for the loader.",
              [], "low", 0.0, "low", requires_human=True),
    )


def _fillers(c: _Context) -> list[Recommendation]:
    """Generic, safe changes used only when an issue's own remedies are exhausted."""
    s, issue = c.s, c.d.primary_issue
    basis = c.shortfall or c.gap or c.room
    return _keep(
        c.rec(issue, "cosine-schedule", "Use a cosine learning-rate schedule",
              "Decaying the lr to zero settles the weights in a flatter minimum.",
              [("train.scheduler", "cosine")], "low", c.gain(0.05, basis), "low") if s.scheduler != "cosine" else None,
        c.rec(issue, "fine-lr", f"Halve the learning rate ({s.lr:g} -> {_scale_lr(s.lr, 0.5):g})",
              "A smaller final step size refines the fit.",
              [("train.lr", _scale_lr(s.lr, 0.5))], "low", c.gain(0.05, basis), "low"),
        c.rec(issue, "longer-training", f"Train longer ({s.epochs} -> {min(s.epochs * 2, 100000)} epochs)",
              "More epochs at the current settings.",
              [("train.epochs", min(s.epochs * 2, 100000))], "low", c.gain(0.05, basis), "low"),
        c.rec(issue, "warmup", f"Warm the learning rate up over {_more_warmup(s):g} epoch(s)",
              "A warmup stabilizes the first epochs.",
              [("train.warmupEpochs", _more_warmup(s))], "low", c.gain(0.02, basis), "low"),
    )


_BY_ISSUE: dict[str, Callable[[_Context], list[Recommendation]]] = {
    "crash": _crash,
    "nan-loss": _nan_loss,
    "convergence-stall": _convergence_stall,
    "overfitting": _overfitting,
    "underfitting": _underfitting,
    "resource-inefficiency": _resource,
    "data-quality": _data_quality,
}


def _dedupe(recs: list[Recommendation]) -> list[Recommendation]:
    seen: set[str] = set()
    out = []
    for r in recs:
        if r.id not in seen:
            seen.add(r.id)
            out.append(r)
    return out


def _ranked(recs: list[Recommendation], primary: str | None) -> list[Recommendation]:
    return sorted(recs, key=lambda r: rank_key(r, primary))


def fmt_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)
