"""Phase 3 for the ``vae`` task: the primary issue of a VAE run (seed 004).

``diagnose`` sends evidence whose task is ``vae`` here. The engine's rules
(crash, nan-loss, loss flat, GPU utilization) are the classifier's; the
others read what a VAE measures: ``val_kl`` (posterior collapse),
``loss_gap`` (overfitting), the target metric against the train loss
(under/overfitting), and the data report's chunk leakage.

Priority, highest first (``Signal.rank``): crash, nan-loss, strong
data-quality (identical files or chunks of one file in two splits, NaN/Inf
samples), **posterior-collapse**, convergence-stall, overfitting,
underfitting, resource-inefficiency. The thresholds are the gates'
(``gates/thresholds.py``): the gate that fails ``posterior-collapse`` and
the diagnosis that names it draw the line in the same place.
"""

from __future__ import annotations

from trainpipe_operator.diagnosis.direction import (
    best_of,
    finite,
    metric_from_evidence,
    target_met,
    tracked_metric,
)
from trainpipe_operator.diagnosis.issues import (
    TREND_WINDOW,
    VAL_RISE_MIN,
    Diagnosis,
    Measurements,
    Signal,
    _crash,
    _measure,
    _nan_rules,
    _resource_rule,
    _stall_rules,
    _val_loss_rise,
    conclude,
    last_error_line,
)
from trainpipe_operator.gates.thresholds import POSTERIOR_COLLAPSE_KL, VAE_LOSS_GAP_MAX
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_trainer.contract.data_report import DataReport
from trainpipe_trainer.contract.evidence import Evidence

# The vae task's metrics that may be a target; all are losses (lower is better).
VAE_METRICS = ("val_loss", "val_recon", "val_kl")


def vae_metric_value(evidence: Evidence, metric: str) -> float | None:
    """The run's best value of a target metric: val_loss as the engine
    records it, a task metric (val_recon, ...) as the lowest any epoch
    reported; None for a metric the VAE does not report (val_acc)."""
    if metric == "val_loss":
        return metric_from_evidence(evidence, metric)
    values = [e.metric(metric) for e in evidence.epochs]
    return best_of(values, "val_loss") if any(v is not None for v in values) else None


def _vae_measure(evidence: Evidence, gpu_util: float | None) -> Measurements:
    m = _measure(evidence, "val_loss", gpu_util)
    last = evidence.epochs[-1] if evidence.epochs else None
    if last is None:
        return m
    gap = last.loss_gap if finite(last.loss_gap) else None
    return m.model_copy(update={
        "val_kl": last.metric("val_kl"),
        "val_recon": last.metric("val_recon"),
        "loss_gap": gap,
        "active_units": last.metric("active_units"),
        "kl_weight": last.metric("kl_weight"),
    })


def diagnose_vae(
    evidence: Evidence,
    spec: PipelineSpec,
    gpu_util: float | None = None,
    data_report: DataReport | None = None,
    log_text: str | None = None,
) -> Diagnosis:
    """The primary issue of a VAE run; same arguments as ``diagnose``."""
    metric = tracked_metric(spec.target.metric)
    m = _vae_measure(evidence, gpu_util)
    metric_value = vae_metric_value(evidence, metric)
    signals: list[Signal] = []
    last_error = last_error_line(log_text)
    crash, infra = _crash(evidence, signals, last_error)
    _nan_rules(evidence, signals)
    _vae_data_rules(data_report, signals)
    _collapse_rules(evidence, m, signals)
    _stall_rules(m, signals)
    _vae_fit_rules(evidence, m, spec, metric, metric_value, signals)
    _resource_rule(m, spec, signals)
    return conclude(evidence, spec, signals, m, metric, metric_value, crash, infra, last_error,
                    lower=True if metric in VAE_METRICS else None)


def _vae_data_rules(report: DataReport | None, signals: list[Signal]) -> None:
    if report is None:
        return
    if report.duplicates_across_splits:
        n = len(report.duplicates_across_splits)
        signals.append(Signal(
            issue="data-quality", signal="duplicates-across-splits", value=n, threshold=0,
            message=f"{n} group(s) of identical audio files lie in more than one split (leakage)",
        ))
    leaks = report.audio.chunk_leakage if report.audio is not None else []
    if leaks:
        names = ", ".join(leak.path for leak in leaks[:3]) + (f" (and {len(leaks) - 3} more)" if len(leaks) > 3 else "")
        signals.append(Signal(
            issue="data-quality", signal="chunk-leakage", value=len(leaks), threshold=0,
            message=f"chunks of {len(leaks)} file(s) lie in more than one split ({names}): the split must be by file",
        ))
    if report.nonfinite_samples:
        n = len(report.nonfinite_samples)
        signals.append(Signal(
            issue="data-quality", signal="non-finite-samples", value=n, threshold=0,
            message=f"{n} audio file(s) hold NaN/Inf samples",
        ))


def _collapse_rules(evidence: Evidence, m: Measurements, signals: list[Signal]) -> None:
    """val_kl under the gate's bar at the last epoch: the encoder's code carries
    (almost) nothing, the decoder generates from its own prior."""
    if not evidence.epochs or m.val_kl is None or not finite(m.val_kl) or m.val_kl >= POSTERIOR_COLLAPSE_KL:
        return
    units = f", {m.active_units:g} active latent unit(s)" if m.active_units is not None else ""
    weight = f" at KL weight {m.kl_weight:g}" if m.kl_weight is not None else ""
    signals.append(Signal(
        issue="posterior-collapse", signal="kl-collapsed", value=round(m.val_kl, 4), threshold=POSTERIOR_COLLAPSE_KL,
        message=(f"val_kl {m.val_kl:.4f} nats per sample at epoch {evidence.epochs[-1].num}{weight} "
                 f"< {POSTERIOR_COLLAPSE_KL:g}{units}: posterior collapse, the decoder ignores the latent code"),
    ))


def _vae_fit_rules(
    evidence: Evidence,
    m: Measurements,
    spec: PipelineSpec,
    metric: str,
    metric_value: float | None,
    signals: list[Signal],
) -> None:
    if m.loss_gap is not None and m.loss_gap > VAE_LOSS_GAP_MAX:
        signals.append(Signal(
            issue="overfitting", signal="loss-gap", value=round(m.loss_gap, 4), threshold=VAE_LOSS_GAP_MAX,
            message=f"val loss exceeds train loss by {m.loss_gap:.1%} at the last epoch (> {VAE_LOSS_GAP_MAX:.0%})",
        ))
    rise = _val_loss_rise(evidence)
    if rise is not None and rise > VAL_RISE_MIN:
        signals.append(Signal(
            issue="overfitting", signal="val-loss-rising", value=round(rise, 4), threshold=VAL_RISE_MIN,
            message=f"val loss rose {rise:.1%} over the last {TREND_WINDOW} epochs while train loss fell",
        ))
    target = spec.target.value
    if metric != "val_loss" or metric_value is None or target_met(metric_value, target, metric):
        return
    train = m.train_loss
    if train is None:
        return
    if train <= target:
        signals.append(Signal(
            issue="overfitting", signal="train-meets-target", value=round(train, 4), threshold=target,
            message=f"train loss {train:.4f} meets the target {target:g} but val_loss {metric_value:.4f} does not",
        ))
    elif m.loss_gap is None or m.loss_gap <= VAE_LOSS_GAP_MAX:
        signals.append(Signal(
            issue="underfitting", signal="both-above-target", value=round(metric_value, 4), threshold=target,
            message=(f"train loss {train:.4f} and val_loss {metric_value:.4f} both miss the target {target:g}"
                     + (f", gap {m.loss_gap:.1%} <= {VAE_LOSS_GAP_MAX:.0%}" if m.loss_gap is not None else "")
                     + ": the model lacks capacity or training time"),
        ))
