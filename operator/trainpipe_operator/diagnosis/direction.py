"""Which way is better for a metric. Every comparison of a target metric in
the diagnosis package goes through here, with the metric as the task's
catalog describes it (``trainpipe_operator.tasks.Metric``), so a loss (lower
is better: ``val_loss``, the VAE's ``val_recon``) is never compared as if it
were an accuracy (higher is better), whatever its name.

During Diagnostics and Optimization the held-out test split is never read
(seed 001: the test set is evaluated once, in Finalization), so a ``test_X``
target is tracked through its validation counterpart ``val_X``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeGuard

from trainpipe_operator.tasks import Metric, catalog_for
from trainpipe_trainer.contract.evidence import Evidence


def tracked_metric(spec: Any) -> Metric:
    """The metric measured before Finalization for ``spec``'s target:
    ``test_acc`` -> ``val_acc``, ``test_recon`` -> ``val_recon``."""
    catalog = catalog_for(spec)
    return catalog.tracked(spec.target.metric or catalog.primary)


def lower_is_better(metric: Metric) -> bool:
    return metric.lower_is_better


def finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def improvement(new: float | None, old: float | None, metric: Metric) -> float:
    """How much better ``new`` is than ``old`` (positive: better, in metric units).

    A missing or non-finite ``new`` is minus infinity (never an improvement);
    a missing ``old`` with a finite ``new`` is plus infinity.
    """
    return metric.improvement(new, old)


def is_better(new: float | None, old: float | None, metric: Metric) -> bool:
    return improvement(new, old, metric) > 0


def target_met(value: float | None, target: float, metric: Metric) -> bool:
    return metric.met(value, target)


def shortfall(value: float | None, target: float, metric: Metric) -> float:
    """Distance still to go to the target (0 when met; the whole target when unknown)."""
    if not finite(value):
        return target if not metric.lower_is_better else math.inf
    gap = value - target if metric.lower_is_better else target - value
    return max(gap, 0.0)


def relative(metric: Metric) -> bool:
    """Whether gains in this metric are judged relative to its value (a loss,
    an unbounded score) rather than in absolute points (a fraction)."""
    return metric.lower_is_better or not metric.is_fraction


def room(value: float | None, metric: Metric, fallback_loss: float | None = None) -> float:
    """The most any change could still gain: 1 - a fraction, a loss itself,
    or the size of an unbounded score."""
    if metric.lower_is_better:
        if finite(value):
            return max(value, 0.0)
        return fallback_loss if finite(fallback_loss) and fallback_loss > 0 else 1.0
    if metric.is_fraction:
        if finite(value):
            return min(max(1.0 - value, 0.0), 1.0)
        return 1.0
    return abs(value) if finite(value) and value != 0 else 1.0


def best_of(values: Iterable[float | None], metric: Metric) -> float | None:
    return metric.best(list(values))


def metric_from_evidence(evidence: Evidence, metric: Metric) -> float | None:
    """The run's best value of ``metric`` over its epochs (the evidence's own
    best for val_loss and val_acc, as the trainer recorded them)."""
    if metric.name == "val_loss" and finite(evidence.best_val_loss):
        return evidence.best_val_loss
    if metric.name == "val_acc" and finite(evidence.best_val_acc):
        return evidence.best_val_acc
    return best_of((e.metric(metric.name) for e in evidence.epochs), metric)
