"""Which way is better for a metric. Every comparison of a target metric in
the diagnosis package goes through here, so a ``val_loss`` target (lower is
better) is never compared as if it were an accuracy (higher is better).

During Diagnostics and Optimization the held-out test split is never read
(seed 001: the test set is evaluated once, in Finalization), so a
``test_acc`` target is tracked through its validation proxy ``val_acc``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeGuard

from trainpipe_trainer.contract.evidence import Evidence


def tracked_metric(metric: str) -> str:
    """The metric measured before Finalization: ``test_acc`` -> ``val_acc``."""
    return "val_acc" if metric == "test_acc" else metric


def lower_is_better(metric: str) -> bool:
    return metric.endswith("_loss")


def finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def improvement(new: float | None, old: float | None, metric: str) -> float:
    """How much better ``new`` is than ``old`` (positive: better, in metric units).

    A missing or non-finite ``new`` is minus infinity (never an improvement);
    a missing ``old`` with a finite ``new`` is plus infinity.
    """
    if not finite(new):
        return -math.inf
    if not finite(old):
        return math.inf
    return old - new if lower_is_better(metric) else new - old


def is_better(new: float | None, old: float | None, metric: str) -> bool:
    return improvement(new, old, metric) > 0


def target_met(value: float | None, target: float, metric: str) -> bool:
    if not finite(value):
        return False
    return value <= target if lower_is_better(metric) else value >= target


def shortfall(value: float | None, target: float, metric: str) -> float:
    """Distance still to go to the target (0 when met; the whole target when unknown)."""
    if not finite(value):
        return target if not lower_is_better(metric) else math.inf
    gap = value - target if lower_is_better(metric) else target - value
    return max(gap, 0.0)


def room(value: float | None, metric: str, fallback_loss: float | None = None) -> float:
    """The most any change could still gain: 1 - accuracy, or the loss itself."""
    if lower_is_better(metric):
        if finite(value):
            return max(value, 0.0)
        return fallback_loss if finite(fallback_loss) and fallback_loss > 0 else 1.0
    if finite(value):
        return min(max(1.0 - value, 0.0), 1.0)
    return 1.0


def best_of(values: Iterable[float | None], metric: str) -> float | None:
    usable: list[float] = [v for v in values if finite(v)]
    if not usable:
        return None
    return min(usable) if lower_is_better(metric) else max(usable)


def metric_from_evidence(evidence: Evidence, metric: str) -> float | None:
    """The run's best value of ``metric`` (its tracked proxy for ``test_acc``)."""
    metric = tracked_metric(metric)
    if metric == "val_loss":
        if finite(evidence.best_val_loss):
            return evidence.best_val_loss
        return best_of((e.val_loss for e in evidence.epochs), metric)
    if metric == "val_acc":
        if finite(evidence.best_val_acc):
            return evidence.best_val_acc
        return best_of((e.val_acc for e in evidence.epochs), metric)
    raise ValueError(f"unknown target metric {metric!r}")
