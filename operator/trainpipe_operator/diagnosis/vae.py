"""Phase 3 for the ``vae`` task: the primary issue of a VAE run (seed 004).

``diagnose`` sends a pipeline whose task is ``vae`` here. The engine's rules
(crash, nan-loss, loss flat, GPU utilization) are the classifier's; the
others read what a VAE measures: ``val_kl`` (posterior collapse),
``loss_gap`` (overfitting), the target metric (by name and direction, from
the task's catalog) against its train counterpart (``train_recon`` for
``val_recon``, the train loss for ``val_loss``: under/overfitting), and the
data report's chunk leakage.

Priority, highest first (``Signal.rank``): crash, nan-loss, strong
data-quality (identical files or chunks of one file in two splits, NaN/Inf
samples), **posterior-collapse**, convergence-stall, overfitting,
underfitting, resource-inefficiency. The thresholds are the gates'
(``gates/thresholds.py``): the gate that fails ``posterior-collapse`` and
the diagnosis that names it draw the line in the same place.
"""

from __future__ import annotations

from trainpipe_operator.diagnosis.direction import (
    finite,
    metric_from_evidence,
    target_met,
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
from trainpipe_operator.gates.thresholds import OVERFIT_LOSS_GAP, POSTERIOR_COLLAPSE_KL
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_operator.tasks import Metric, catalog_for
from trainpipe_trainer.contract.data_report import DataReport
from trainpipe_trainer.contract.evidence import Evidence


def _vae_measure(evidence: Evidence, metric: Metric, gpu_util: float | None) -> Measurements:
    m = _measure(evidence, metric, gpu_util)
    last = evidence.epochs[-1] if evidence.epochs else None
    if last is None:
        return m
    return m.model_copy(update={
        "val_kl": last.metric("val_kl"),
        "val_recon": last.metric("val_recon"),
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
    catalog = catalog_for(spec)
    metric = catalog.tracked(spec.target.metric or catalog.primary)
    m = _vae_measure(evidence, metric, gpu_util)
    metric_value = metric_from_evidence(evidence, metric)
    signals: list[Signal] = []
    last_error = last_error_line(log_text)
    crash, infra = _crash(evidence, signals, last_error)
    _nan_rules(evidence, signals)
    _vae_data_rules(data_report, signals)
    _collapse_rules(evidence, m, signals)
    _stall_rules(m, signals)
    _vae_fit_rules(evidence, m, spec, metric, metric_value, signals)
    _resource_rule(m, spec, signals)
    return conclude(evidence, spec, signals, m, metric, metric_value, crash, infra, last_error, catalog.task)


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
    metric: Metric,
    metric_value: float | None,
    signals: list[Signal],
) -> None:
    if m.loss_gap is not None and m.loss_gap > OVERFIT_LOSS_GAP:
        signals.append(Signal(
            issue="overfitting", signal="loss-gap", value=round(m.loss_gap, 4), threshold=OVERFIT_LOSS_GAP,
            message=f"val loss exceeds train loss by {m.loss_gap:.1%} at the last epoch (> {OVERFIT_LOSS_GAP:.0%})",
        ))
    rise = _val_loss_rise(evidence)
    if rise is not None and rise > VAL_RISE_MIN:
        signals.append(Signal(
            issue="overfitting", signal="val-loss-rising", value=round(rise, 4), threshold=VAL_RISE_MIN,
            message=f"val loss rose {rise:.1%} over the last {TREND_WINDOW} epochs while train loss fell",
        ))
    target = spec.target.value
    if metric_value is None or target_met(metric_value, target, metric):
        return
    # the target's train counterpart: the final train loss for val_loss, train_recon for val_recon
    train = m.train_metric
    if train is None:
        return
    train_name = "train loss" if metric.name == "val_loss" else "train_" + metric.name.removeprefix("val_")
    if target_met(train, target, metric):
        signals.append(Signal(
            issue="overfitting", signal="train-meets-target", value=round(train, 4), threshold=target,
            message=(f"{train_name} {train:.4f} meets the target {target:g} "
                     f"but {metric.name} {metric_value:.4f} does not"),
        ))
    elif m.loss_gap is None or m.loss_gap <= OVERFIT_LOSS_GAP:
        signals.append(Signal(
            issue="underfitting", signal="both-above-target", value=round(metric_value, 4), threshold=target,
            message=(f"{train_name} {train:.4f} and {metric.name} {metric_value:.4f} both miss the target {target:g}"
                     + (f", gap {m.loss_gap:.1%} <= {OVERFIT_LOSS_GAP:.0%}" if m.loss_gap is not None else "")
                     + ": the model lacks capacity or training time"),
        ))
