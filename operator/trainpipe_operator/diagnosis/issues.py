"""Phase 3, Diagnostics: name the primary issue from a run's evidence.

``diagnose`` is a pure function of (evidence, spec, GPU utilization, data
report). Every rule that fires becomes a :class:`Signal` (issue, signal,
measured value, threshold) so the report shows why; the primary issue is the
issue of the highest-priority signal, the others are secondary.

Priority, highest first, and why:

1. **infrastructure** (a crash that is not numerical: data loading, missing
   file, OOM, an interrupted run). Nothing measured after a crash is a
   property of the model. It is reported as ``crash`` (seed 001: "Training
   crashes -> crashes.md"), quoting the last error the training log holds,
   or, for out-of-memory, ``resource-inefficiency``, with
   ``infrastructure_broken`` set: the decision is "Baseline again".
2. **nan-loss**: once the loss or the gradients went non-finite, every later
   metric is measured on a damaged model; fixing the numerics comes first.
3. **data-quality, strong** (leakage suspect: val acc >= 0.999 or files
   duplicated across splits; NaN/Inf samples): when the validation split is
   compromised the metric every other rule reads cannot be trusted.
4. **convergence-stall**: a model that does not learn can look both
   under- and over-fitted; raising the learning signal comes before tuning
   capacity or regularization.
5. **overfitting**, then 6. **underfitting**: overfitting first because a
   gap above ``gates.overfitGap`` means capacity is already enough (adding
   more, the underfitting remedy, would widen the gap).
7. **data-quality, weak** (val metric unstable between epochs): noisy, and
   often a symptom of a too-high learning rate rather than of the data.
8. **resource-inefficiency** (GPU utilization under ``gates.gpuUtilMin``):
   costs time, not accuracy, so it never outranks an accuracy problem.

Every figure is read by name through the task's catalog (``spec.task``): the
target's metric and its direction, its train counterpart. The accuracy rules
(leakage at val acc >= 0.999, val acc unstable, the train-val accuracy gap)
run for classification only; other tasks' overfitting is the relative
train-val loss gap over ``OVERFIT_LOSS_GAP`` (seed 004).

A ``vae`` pipeline (``spec.task``) is diagnosed by ``diagnosis/vae.py``: the
same priorities, with **posterior-collapse** between the strong data-quality
signals and convergence-stall (a collapsed posterior makes every later
reading about the latent code meaningless, and its fix differs from a stall's).
"""

from __future__ import annotations

import math
import re
import statistics
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trainpipe_operator.diagnosis.direction import (
    finite,
    metric_from_evidence,
    target_met,
)
from trainpipe_operator.gates.thresholds import (
    LEAKAGE_VAL_ACC,
    NO_LEARNING_DECREASE,
    OVERFIT_LOSS_GAP,
)
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_operator.tasks import Metric, TaskCatalog, catalog_for
from trainpipe_trainer.contract.data_report import DataReport
from trainpipe_trainer.contract.evidence import Evidence

IssueKind = Literal[
    "crash",
    "nan-loss",
    "data-quality",
    "posterior-collapse",
    "convergence-stall",
    "overfitting",
    "underfitting",
    "resource-inefficiency",
]
ISSUES: tuple[IssueKind, ...] = (
    "crash",
    "nan-loss",
    "data-quality",
    "posterior-collapse",
    "convergence-stall",
    "overfitting",
    "underfitting",
    "resource-inefficiency",
)

# Thresholds that are not in the spec (the spec holds overfitGap and gpuUtilMin).
# loss flat = decrease under NO_LEARNING_DECREASE; leakage suspect at LEAKAGE_VAL_ACC: the
# same bars as the gates (gates/thresholds.py), so Baseline and Diagnostics agree.
LOSS_DECREASE_MIN = NO_LEARNING_DECREASE
LEAK_VAL_ACC = LEAKAGE_VAL_ACC
SKIPPED_STEPS_MAX = 0  # any skipped (non-finite) step fires nan-loss
GRAD_NORM_GROWTH_MAX = 10.0  # max epoch grad norm / first epoch grad norm
DIVERGENCE_RATIO = 1.5  # final / initial train loss
TREND_WINDOW = 4  # epochs looked at for "val loss rising while train falls"
VAL_RISE_MIN = 0.02  # relative rise of val loss over the window's minimum
VAL_ACC_STD_MAX = 0.03  # detrended std of val acc over the second half of training

NUMERIC_EXCEPTIONS = frozenset({"NonFiniteTrainingError", "FloatingPointError"})
OOM_MARKERS = ("out of memory", "outofmemoryerror", "cannot allocate memory", "memoryerror")
CRASH_SIGNALS = frozenset({"crash", "crash-oom", "run-interrupted"})
STRONG_DATA_SIGNALS = frozenset({
    "val-acc-near-perfect", "duplicates-across-splits", "non-finite-samples", "chunk-leakage",
})

_RANK: dict[str, float] = {
    "crash": -1,
    "nan-loss": 0,
    "posterior-collapse": 1.5,
    "convergence-stall": 2,
    "overfitting": 3,
    "underfitting": 4,
    "resource-inefficiency": 6,
}

Value = float | int | str | bool | None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Signal(_Model):
    """One rule that fired."""

    issue: IssueKind
    signal: str
    value: Value = None
    threshold: Value = None
    message: str = ""

    @property
    def rank(self) -> float:
        """Priority (lower: more important); see the module docstring."""
        if self.signal in CRASH_SIGNALS:
            return -1
        if self.issue == "data-quality":
            return 1 if self.signal in STRONG_DATA_SIGNALS else 5
        return _RANK[self.issue]


class Measurements(_Model):
    """What the rules (and the recommendations' gain estimates) read."""

    epochs: int = 0
    train_loss: float | None = None
    train_acc: float | None = None
    val_acc: float | None = None
    best_val_acc: float | None = None
    best_val_loss: float | None = None
    acc_gap: float | None = Field(default=None, description="train_acc - val_acc at the last epoch")
    loss_decrease: float | None = Field(default=None, description="(initial - final) / initial train loss")
    gpu_util: float | None = None
    val_still_improving: bool = Field(default=False, description="the best epoch is one of the last two")
    loss_gap: float | None = Field(default=None, description="(val_loss - train_loss) / train_loss at the last epoch")
    val_metric: float | None = Field(default=None, description="the tracked target metric at the last epoch")
    train_metric: float | None = Field(
        default=None, description="its train counterpart at the last epoch (train_loss for val_loss, ...)"
    )
    # the vae task's, at the last epoch (None for other tasks)
    val_kl: float | None = Field(default=None, description="nats per sample, before beta and free bits")
    val_recon: float | None = None
    active_units: float | None = None
    kl_weight: float | None = None


class Diagnosis(_Model):
    task: str = Field(default="classification", description="the pipeline's task: it picks the remedies")
    primary_issue: IssueKind
    summary: str = Field(description="one line: the primary issue and why")
    why: str = Field(default="", description="the deciding signal's message")
    signals: list[Signal] = Field(default_factory=list)
    secondary_issues: list[IssueKind] = Field(default_factory=list)
    infrastructure_broken: bool = False
    run_failed: bool = Field(default=False, description="the run's status is failed (numerical or not)")
    crash: str | None = Field(default=None, description="'Type: message' of a non-numerical crash")
    last_error: str | None = Field(default=None, description="the training log's last error line, quoted")
    metric: str = Field(description="the tracked target metric (val_acc for a test_acc target)")
    lower_is_better: bool = False
    metric_kind: str | None = Field(
        default=None, description="the metric's kind (fraction, loss, ...); None: loss when lower is better, else fraction"
    )
    metric_value: float | None = None
    target_value: float
    measurements: Measurements = Field(default_factory=Measurements)

    @property
    def target(self) -> Metric:
        """The tracked metric, with its direction and kind."""
        kind = self.metric_kind or ("loss" if self.lower_is_better else "fraction")
        split = "test" if self.metric.startswith("test_") else "val"
        return Metric(self.metric, "min" if self.lower_is_better else "max", kind,  # type: ignore[arg-type]
                      self.metric, split)  # type: ignore[arg-type]

    def signals_for(self, issue: IssueKind) -> list[Signal]:
        return [s for s in self.signals if s.issue == issue]

    def fired(self, signal: str) -> bool:
        return any(s.signal == signal for s in self.signals)

    @property
    def leak_suspected(self) -> bool:
        return any(s.signal in STRONG_DATA_SIGNALS for s in self.signals)


def diagnose(
    evidence: Evidence,
    spec: PipelineSpec,
    gpu_util: float | None = None,
    data_report: DataReport | None = None,
    log_text: str | None = None,
) -> Diagnosis:
    """Every rule of docs/gates.md's "Diagnosis rules" table, the primary issue by priority.

    ``gpu_util`` (percent) falls back to ``evidence.gpu_util_mean``; None (a
    CPU run) fires no resource rule. ``log_text`` is the run's log
    (``logs/training.log``, else the job's output): a crash quotes its last
    error line. A ``vae`` run goes to ``diagnosis.vae.diagnose_vae``.
    """
    catalog = catalog_for(spec)
    if catalog.task == "vae":
        from trainpipe_operator.diagnosis.vae import diagnose_vae  # here: it imports this module

        return diagnose_vae(evidence, spec, gpu_util, data_report, log_text)
    metric = catalog.tracked(spec.target.metric or catalog.primary)
    m = _measure(evidence, metric, gpu_util)
    metric_value = metric_from_evidence(evidence, metric)
    signals: list[Signal] = []
    last_error = last_error_line(log_text)
    crash, infra = _crash(evidence, signals, last_error)
    _nan_rules(evidence, signals)
    _data_rules(evidence, m, data_report, signals, catalog)
    _stall_rules(m, signals)
    _fit_rules(evidence, m, spec, metric, metric_value, signals, catalog)
    _resource_rule(m, spec, signals)
    return conclude(evidence, spec, signals, m, metric, metric_value, crash, infra, last_error, catalog.task)


def _resource_rule(m: Measurements, spec: PipelineSpec, signals: list[Signal]) -> None:
    if finite(m.gpu_util) and m.gpu_util < spec.gates.gpu_util_min:
        signals.append(Signal(
            issue="resource-inefficiency", signal="gpu-util-low", value=round(m.gpu_util, 1),
            threshold=spec.gates.gpu_util_min,
            message=f"mean GPU utilization {m.gpu_util:.0f}% < {spec.gates.gpu_util_min:.0f}%",
        ))


def conclude(
    evidence: Evidence,
    spec: PipelineSpec,
    signals: list[Signal],
    m: Measurements,
    metric: Metric,
    metric_value: float | None,
    crash: str | None,
    infra: bool,
    last_error: str | None,
    task: str,
) -> Diagnosis:
    """The diagnosis from the signals that fired: the primary issue by rank
    (rule order breaks ties), the others secondary; no signal at all is
    treated as underfitting. ``metric`` is the tracked target metric, with
    the direction and kind the task's catalog gives it."""
    if not signals:
        met = target_met(metric_value, spec.target.value, metric)
        signals.append(Signal(
            issue="underfitting", signal="no-rule-fired", value=_round(metric_value),
            threshold=spec.target.value,
            message=(
                f"no rule fired; {metric.name} {_fmt(metric_value)} "
                + ("meets" if met else "misses")
                + f" the target {spec.target.value:g}: the remaining shortfall is treated as underfitting"
            ),
        ))
    ordered = sorted(signals, key=lambda s: s.rank)  # stable: rule order breaks ties
    primary = ordered[0]
    secondary: list[IssueKind] = []
    for s in ordered[1:]:
        if s.issue != primary.issue and s.issue not in secondary:
            secondary.append(s.issue)
    summary = (
        f"infrastructure broken: {primary.message}" if infra else f"{primary.issue}: {primary.message}"
    )
    return Diagnosis(
        task=task,
        primary_issue=primary.issue,
        summary=summary,
        why=primary.message,
        signals=signals,
        secondary_issues=secondary,
        infrastructure_broken=infra,
        run_failed=evidence.status == "failed",
        crash=crash,
        last_error=last_error if crash else None,
        metric=metric.name,
        lower_is_better=metric.lower_is_better,
        metric_kind=metric.kind,
        metric_value=metric_value,
        target_value=spec.target.value,
        measurements=m,
    )


# -- measurements -------------------------------------------------------------


def _train_counterpart(name: str) -> str:
    """``val_acc`` -> ``train_acc``, ``val_recon`` -> ``train_recon``."""
    return "train_" + name.removeprefix("val_")


def _measure(evidence: Evidence, metric: Metric, gpu_util: float | None) -> Measurements:
    epochs = evidence.epochs
    last = epochs[-1] if epochs else None
    initial = evidence.initial_train_loss if finite(evidence.initial_train_loss) else (
        epochs[0].train_loss if epochs else None
    )
    final = evidence.final_train_loss if finite(evidence.final_train_loss) else (
        last.train_loss if last else None
    )
    decrease = None
    if finite(initial) and finite(final) and initial > 0:
        decrease = (initial - final) / initial
    val_accs = [e.val_acc for e in epochs if finite(e.val_acc)]
    val_losses = [e.val_loss for e in epochs if finite(e.val_loss)]
    improving = False
    if len(epochs) >= 2:
        series = [e.metric(metric.name) for e in epochs]
        usable = [(i, v) for i, v in enumerate(series) if finite(v)]
        if usable:
            pick = min if metric.lower_is_better else max
            best_index = pick(usable, key=lambda iv: iv[1])[0]
            improving = best_index >= len(epochs) - 2
    # val_loss's counterpart is the run's final train loss (as the trainer recorded it)
    train_metric = final if metric.name == "val_loss" else (
        last.metric(_train_counterpart(metric.name)) if last else None)
    util = gpu_util if gpu_util is not None else evidence.gpu_util_mean
    return Measurements(
        epochs=len(epochs),
        train_loss=final if finite(final) else None,
        train_acc=last.train_acc if last and finite(last.train_acc) else None,
        val_acc=last.val_acc if last and finite(last.val_acc) else None,
        best_val_acc=max(val_accs) if val_accs else None,
        best_val_loss=min(val_losses) if val_losses else None,
        acc_gap=last.acc_gap if last and finite(last.acc_gap) else None,
        loss_decrease=decrease,
        gpu_util=util if finite(util) else None,
        val_still_improving=improving,
        loss_gap=last.loss_gap if last and finite(last.loss_gap) else None,
        val_metric=last.metric(metric.name) if last else None,
        train_metric=train_metric if finite(train_metric) else None,
    )


# -- rules --------------------------------------------------------------------


# "2024-01-01 12:00:00,000 ERROR Training failed", "ERROR: ...", "Traceback" and
# the exception line that ends it ("OSError: [Errno 2] No such file ...").
_ERROR_LINE = re.compile(r"(\bERROR\b|\bCRITICAL\b|\bFATAL\b)")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b(:.*)?$")


def last_error_line(log_text: str | None) -> str | None:
    """The last error in a log: the last exception line of a traceback, else the
    last line logged at ERROR (or worse), stripped and clipped; None when the
    log holds no error."""
    if not log_text:
        return None
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return _clip(line)
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            return _clip(line)
    return None


def _crash(evidence: Evidence, signals: list[Signal], last_error: str | None) -> tuple[str | None, bool]:
    """A crash that is not numerical breaks the infrastructure, not the model."""
    exc = evidence.exception
    if evidence.status == "interrupted":
        signals.append(Signal(
            issue="resource-inefficiency", signal="run-interrupted", value=evidence.reason or "interrupted",
            threshold="completed",
            message=f"the run was interrupted ({evidence.reason or 'no reason given'}); resume or rerun it",
        ))
        return None, True
    if evidence.status != "failed":
        return None, False
    text = f"{exc.type}: {exc.message}" if exc else (evidence.reason or "failed without an exception")
    if exc is not None and (exc.type in NUMERIC_EXCEPTIONS or "non-finite" in exc.message.lower()):
        return None, False  # numerical: a nan-loss rule reports it
    oom = any(marker in f"{text} {last_error or ''}".lower() for marker in OOM_MARKERS)
    quoted = f"; the log's last error: {last_error!r}" if last_error and last_error not in text else ""
    signals.append(Signal(
        issue="resource-inefficiency" if oom else "crash",
        signal="crash-oom" if oom else "crash",
        value=_clip(text),
        threshold="no exception",
        message=f"the run crashed with {_clip(text)} (not a numerical failure){quoted}",
    ))
    return text, True


def _nan_rules(evidence: Evidence, signals: list[Signal]) -> None:
    epochs = evidence.epochs
    bad = [e.num for e in epochs if not (math.isfinite(e.train_loss) and math.isfinite(e.val_loss))]
    if bad:
        signals.append(Signal(
            issue="nan-loss", signal="non-finite-loss", value=len(bad), threshold=0,
            message=f"non-finite train/val loss in epoch(s) {', '.join(map(str, bad[:5]))}",
        ))
    skipped = max(evidence.skipped_steps_total, sum(e.skipped_steps for e in epochs))
    if skipped > SKIPPED_STEPS_MAX:
        signals.append(Signal(
            issue="nan-loss", signal="skipped-steps", value=skipped, threshold=SKIPPED_STEPS_MAX,
            message=f"{skipped} step(s) skipped for a non-finite loss or gradient",
        ))
    exc = evidence.exception
    if exc is not None and (exc.type in NUMERIC_EXCEPTIONS or "non-finite" in exc.message.lower()):
        signals.append(Signal(
            issue="nan-loss", signal="non-finite-training-error", value=exc.type, threshold="no exception",
            message=f"the run failed with {exc.type}: {_clip(exc.message)}",
        ))
    norms = [e.grad_norm_mean for e in epochs if e.grad_norm_mean is not None]
    if any(not math.isfinite(n) for n in norms):
        signals.append(Signal(
            issue="nan-loss", signal="grad-norm-non-finite", value="nan/inf", threshold="finite",
            message="an epoch's mean gradient norm is non-finite",
        ))
    else:
        first = next((n for n in norms if n > 0), None)
        if first is not None:
            growth = max(norms) / first
            if growth > GRAD_NORM_GROWTH_MAX:
                signals.append(Signal(
                    issue="nan-loss", signal="grad-norm-exploding", value=round(growth, 2),
                    threshold=GRAD_NORM_GROWTH_MAX,
                    message=f"gradient norm grew {growth:.1f}x over the first epoch's (> {GRAD_NORM_GROWTH_MAX:g}x)",
                ))
    initial, final = evidence.initial_train_loss, evidence.final_train_loss
    if finite(initial) and finite(final) and initial > 0:
        ratio = final / initial
        if ratio > DIVERGENCE_RATIO:
            signals.append(Signal(
                issue="nan-loss", signal="train-loss-diverging", value=round(ratio, 3),
                threshold=DIVERGENCE_RATIO,
                message=f"train loss rose {ratio:.2f}x from the first epoch (> {DIVERGENCE_RATIO:g}x): diverging",
            ))


def _data_rules(
    evidence: Evidence, m: Measurements, report: DataReport | None, signals: list[Signal], catalog: TaskCatalog
) -> None:
    classification = catalog.task == "classification"
    if classification and m.best_val_acc is not None and m.best_val_acc >= LEAK_VAL_ACC:
        # The Planning gate compared every sample's content hash across the
        # splits: when it found none shared, a perfect score is an easy task,
        # not proven leakage, and stays a weak signal.
        if report is not None and not report.duplicates_across_splits:
            signals.append(Signal(
                issue="data-quality", signal="val-acc-perfect-splits-disjoint", value=round(m.best_val_acc, 4),
                threshold=LEAK_VAL_ACC,
                message=(f"val accuracy {m.best_val_acc:.4f} >= {LEAK_VAL_ACC}, but no sample is shared "
                         "between splits (data report): an easy task rather than leakage"),
            ))
        else:
            signals.append(Signal(
                issue="data-quality", signal="val-acc-near-perfect", value=round(m.best_val_acc, 4),
                threshold=LEAK_VAL_ACC,
                message=f"val accuracy {m.best_val_acc:.4f} >= {LEAK_VAL_ACC}: leakage between splits suspected",
            ))
    if report is not None:
        if report.duplicates_across_splits:
            n = len(report.duplicates_across_splits)
            signals.append(Signal(
                issue="data-quality", signal="duplicates-across-splits", value=n, threshold=0,
                message=f"{n} group(s) of identical files lie in more than one split (leakage)",
            ))
        if report.nonfinite_samples:
            n = len(report.nonfinite_samples)
            signals.append(Signal(
                issue="data-quality", signal="non-finite-samples", value=n, threshold=0,
                message=f"{n} sample(s) hold NaN/Inf values",
            ))
    std = _val_acc_instability(evidence) if classification else None
    if std is not None and std > VAL_ACC_STD_MAX:
        signals.append(Signal(
            issue="data-quality", signal="val-acc-unstable", value=round(std, 4), threshold=VAL_ACC_STD_MAX,
            message=f"val accuracy swings between epochs (detrended std {std:.3f} > {VAL_ACC_STD_MAX})",
        ))


def _val_acc_instability(evidence: Evidence) -> float | None:
    """Std of val acc around its linear trend over the second half of training."""
    values = [e.val_acc for e in evidence.epochs if finite(e.val_acc)]
    n = len(values)
    if n < 4:
        return None
    window = values[-max(4, n // 2):]
    xs = list(range(len(window)))
    slope, intercept = _fit_line(xs, window)
    residuals = [y - (slope * x + intercept) for x, y in zip(xs, window, strict=True)]
    return math.sqrt(sum(r * r for r in residuals) / (len(window) - 2))


def _stall_rules(m: Measurements, signals: list[Signal]) -> None:
    if m.loss_decrease is not None and m.loss_decrease < LOSS_DECREASE_MIN:
        signals.append(Signal(
            issue="convergence-stall", signal="loss-flat", value=round(m.loss_decrease, 4),
            threshold=LOSS_DECREASE_MIN,
            message=f"train loss fell {m.loss_decrease:.1%} from the first epoch (< {LOSS_DECREASE_MIN:.0%})",
        ))


def _fit_rules(
    evidence: Evidence,
    m: Measurements,
    spec: PipelineSpec,
    metric: Metric,
    metric_value: float | None,
    signals: list[Signal],
    catalog: TaskCatalog,
) -> None:
    classification = catalog.task == "classification"
    gap_max = spec.gates.overfit_gap
    target = spec.target.value
    if classification and m.acc_gap is not None and m.acc_gap > gap_max:
        signals.append(Signal(
            issue="overfitting", signal="acc-gap", value=round(m.acc_gap, 4), threshold=gap_max,
            message=f"train-val accuracy gap {m.acc_gap:.3f} > {gap_max:g}",
        ))
    if not classification and m.loss_gap is not None and m.loss_gap > OVERFIT_LOSS_GAP:
        signals.append(Signal(
            issue="overfitting", signal="loss-gap", value=round(m.loss_gap, 4), threshold=OVERFIT_LOSS_GAP,
            message=f"val loss exceeds train loss by {m.loss_gap:.0%} (> {OVERFIT_LOSS_GAP:.0%}) at the last epoch",
        ))
    rise = _val_loss_rise(evidence)
    if rise is not None and rise > VAL_RISE_MIN:
        signals.append(Signal(
            issue="overfitting", signal="val-loss-rising", value=round(rise, 4), threshold=VAL_RISE_MIN,
            message=(
                f"val loss rose {rise:.1%} over the last {TREND_WINDOW} epochs while train loss fell"
            ),
        ))
    train_value = m.train_metric
    if train_value is None or metric_value is None or target_met(metric_value, target, metric):
        return
    if classification:
        close = m.acc_gap is None or m.acc_gap <= gap_max
        gap_text = f", gap {m.acc_gap:.3f} <= {gap_max:g}" if m.acc_gap is not None else ""
    else:
        close = m.loss_gap is None or m.loss_gap <= OVERFIT_LOSS_GAP
        gap_text = f", loss gap {m.loss_gap:.0%} <= {OVERFIT_LOSS_GAP:.0%}" if m.loss_gap is not None else ""
    train_name = {"val_loss": "loss", "val_acc": "accuracy"}.get(metric.name, _train_counterpart(metric.name))
    if target_met(train_value, target, metric):
        signals.append(Signal(
            issue="overfitting", signal="train-meets-target", value=round(train_value, 4), threshold=target,
            message=(
                f"train {train_name} {train_value:.4f} meets the "
                f"target {target:g} but {metric.name} {metric_value:.4f} does not"
            ),
        ))
    elif close:
        signals.append(Signal(
            issue="underfitting", signal="both-below-target", value=round(metric_value, 4), threshold=target,
            message=(
                f"train {train_value:.4f} and {metric.name} {metric_value:.4f} both miss the target {target:g}"
                + gap_text
            ),
        ))


def _val_loss_rise(evidence: Evidence) -> float | None:
    """Relative rise of val loss over the window's minimum, when val rises and train falls."""
    window = evidence.epochs[-TREND_WINDOW:]
    if len(evidence.epochs) < 3 or len(window) < 3:
        return None
    val = [e.val_loss for e in window]
    train = [e.train_loss for e in window]
    if not all(math.isfinite(v) for v in val + train):
        return None
    xs = list(range(len(window)))
    val_slope, _ = _fit_line(xs, val)
    train_slope, _ = _fit_line(xs, train)
    low = min(val)
    if val_slope <= 0 or train_slope >= 0 or low <= 0 or val[-1] <= low:
        return None
    return (val[-1] - low) / low


# -- helpers ------------------------------------------------------------------


def _fit_line(xs: list[int], ys: list[float]) -> tuple[float, float]:
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return slope, mean_y - slope * mean_x


def _round(value: float | None) -> float | None:
    return round(value, 4) if finite(value) else None


def _fmt(value: float | None) -> str:
    return f"{value:.4f}" if finite(value) else "n/a"


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
