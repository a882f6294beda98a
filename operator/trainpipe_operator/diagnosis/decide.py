"""The decisions after Diagnostics and after an Optimization iteration
(docs/gates.md, "After Diagnostics" and "After Optimization"; seed 001's
decision tree). Pure functions.

After Diagnostics, in this order:

1. infrastructure broken (a non-numerical crash, an interrupted run)
   -> ``baseline-again``: the evidence says nothing about the model.
2. the run failed numerically (primary nan-loss, status failed) ->
   ``baseline-again`` with the nan-loss changes applied (seed 001, Workflow 4:
   "diagnose NaN loss, recommend reduce LR, enable gradient clipping ->
   Phase 2 (restart)"): there is no baseline metric to optimize from.
3. no recommendation carries an automatic change (leakage, corrupt data:
   every one ``requires_human``) -> ``baseline-again``: a person fixes the
   data, then the baseline is measured again. A phase machine with nobody to
   fix it fails the pipeline there.
4. the target is already met -> ``finalize``.
5. the expected gain, the sum of the automatic recommendations' gains capped
   at the room left, as a fraction (accuracy: absolute; loss: relative to the
   current loss): > 5% -> ``optimize`` (clear path); < 3% -> ``finalize``
   (near-optimal); 3%-5% -> ``optimize``: the tree leaves that band open, and
   one iteration is bounded by ``maxIterations`` and undone by
   "no improvement -> Diagnostics", so trying costs less than settling.

After an Optimization iteration (``history[-1]`` is the one just finished):

1. target met -> ``finalize``.
2. no improvement over the previous iteration (or the baseline) ->
   ``diagnose`` (wrong diagnosis?), unless the iterations are used up:
   ``finalize`` with the best result.
3. this and the previous iteration each gained less than
   ``optimization.minImprovement`` -> ``finalize`` with the best (diminishing
   returns).
4. improved but short of the target -> ``iterate`` while
   ``iteration < optimization.maxIterations``, else ``finalize`` with the best.

"Better" follows the target metric's direction, from the task's catalog
(lower for a loss: val_loss, the VAE's val_recon).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from trainpipe_operator.diagnosis.direction import (
    finite,
    improvement,
    is_better,
    relative,
    room,
    target_met,
    tracked_metric,
)
from trainpipe_operator.diagnosis.issues import Diagnosis
from trainpipe_operator.diagnosis.recommendations import Recommendation
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_operator.tasks import Metric

CLEAR_PATH_GAIN = 0.05
NEAR_OPTIMAL_GAIN = 0.03

AfterDiagnostics = Literal["optimize", "finalize", "baseline-again"]
AfterOptimization = Literal["finalize", "iterate", "diagnose"]


@dataclass(frozen=True)
class IterationResult:
    """One Optimization iteration's outcome, in the target metric.

    ``iteration`` counts from 1. ``previous_value`` is the previous
    iteration's value (None on the first: the baseline is the previous).
    ``metric_value`` is None when the run produced no usable metric.
    """

    iteration: int
    metric_value: float | None
    baseline_value: float | None
    previous_value: float | None = None


def expected_gain(diagnosis: Diagnosis, recommendations: Sequence[Recommendation]) -> tuple[float, float]:
    """(absolute gain in metric units, the same as a fraction for the 5%/3% bars:
    absolute for a fraction, relative to the current value otherwise)."""
    actionable = [r for r in recommendations if r.changes]
    cap = room(diagnosis.metric_value, diagnosis.target, diagnosis.measurements.train_loss)
    total = min(sum(r.expected_gain for r in actionable), cap)
    if relative(diagnosis.target):
        value = diagnosis.metric_value
        scale = value if finite(value) and value > 0 else 1.0
        return total, total / scale
    return total, total


def decide_after_diagnostics(
    diagnosis: Diagnosis, recommendations: Sequence[Recommendation]
) -> tuple[AfterDiagnostics, str]:
    if diagnosis.infrastructure_broken:
        return "baseline-again", (
            f"{diagnosis.summary}; fix the infrastructure and rerun Baseline"
        )
    if diagnosis.primary_issue == "nan-loss" and diagnosis.run_failed:
        fixes = ", ".join(c.describe() for r in recommendations for c in r.changes) or "the fixes"
        return "baseline-again", (
            f"the baseline failed numerically ({diagnosis.summary}); rerun Baseline with {fixes}"
        )
    actionable = [r for r in recommendations if r.changes]
    if not actionable:
        titles = "; ".join(r.title for r in recommendations) or "none"
        return "baseline-again", (
            f"no automatic change can fix {diagnosis.primary_issue} ({diagnosis.summary}); "
            f"a person must act ({titles}), then rerun Baseline"
        )
    metric, value, target = diagnosis.target, diagnosis.metric_value, diagnosis.target_value
    if target_met(value, target, metric):
        return "finalize", f"{metric.name} {value:.4f} already meets the target {target:g}"
    total, fraction = expected_gain(diagnosis, recommendations)
    unit = (" (relative to the current loss)" if diagnosis.lower_is_better
            else " (relative to the current value)" if relative(metric) else "")
    what = f"expected gain {fraction:.1%}{unit} from {len(actionable)} recommendation(s)"
    if fraction > CLEAR_PATH_GAIN:
        return "optimize", f"clear path: {what} > {CLEAR_PATH_GAIN:.0%}"
    if fraction < NEAR_OPTIMAL_GAIN:
        return "finalize", f"near-optimal: {what} < {NEAR_OPTIMAL_GAIN:.0%}; finalize with the current config"
    return "optimize", (
        f"{what} is between {NEAR_OPTIMAL_GAIN:.0%} and {CLEAR_PATH_GAIN:.0%}: not a clear path, "
        "not near-optimal either; optimize (one bounded iteration; no improvement returns to Diagnostics)"
    )


def best_result(history: Sequence[IterationResult], spec: PipelineSpec) -> tuple[int, float | None]:
    """(iteration, value) of the best result so far; iteration 0 is the baseline."""
    metric = tracked_metric(spec)
    best_i, best_v = 0, history[0].baseline_value if history else None
    for r in history:
        if is_better(r.metric_value, best_v, metric):
            best_i, best_v = r.iteration, r.metric_value
    return best_i, best_v


def decide_after_optimization(
    history: Sequence[IterationResult], spec: PipelineSpec
) -> tuple[AfterOptimization, str]:
    if not history:
        raise ValueError("decide_after_optimization needs at least one iteration")
    metric = tracked_metric(spec)
    name = metric.name
    target = spec.target.value
    limit = spec.optimization.max_iterations
    min_gain = spec.optimization.min_improvement
    current = history[-1]
    best_i, best_v = best_result(history, spec)
    best = "the baseline" if best_i == 0 else f"iteration {best_i}"
    best_text = f"accept the best, {best} ({name} {_fmt(best_v)})"
    if target_met(current.metric_value, target, metric):
        return "finalize", f"target met: {name} {_fmt(current.metric_value)} {metric.relation} {target:g}"
    gain = _gain(current, metric)
    exhausted = current.iteration >= limit
    if gain <= 0:
        versus = "previous iteration" if current.previous_value is not None else "baseline"
        what = (
            f"no improvement: {name} {_fmt(current.metric_value)} vs {_fmt(_previous(current))} "
            f"({versus})"
        )
        if exhausted:
            return "finalize", f"{what}, and {current.iteration}/{limit} iterations used: {best_text}"
        return "diagnose", f"{what}: back to Diagnostics (wrong diagnosis?)"
    if len(history) >= 2 and gain < min_gain and _gain(history[-2], metric) < min_gain:
        return "finalize", (
            f"diminishing returns: the last two iterations each gained less than {min_gain:g} "
            f"({_gain(history[-2], metric):+.4f}, {gain:+.4f}): {best_text}"
        )
    short = f"improved by {gain:+.4f} to {_fmt(current.metric_value)} but short of the target {target:g}"
    if exhausted:
        return "finalize", f"{short}; {current.iteration}/{limit} iterations used: {best_text}"
    return "iterate", f"{short}: iterate ({current.iteration}/{limit})"


def _previous(result: IterationResult) -> float | None:
    return result.previous_value if result.previous_value is not None else result.baseline_value


def _gain(result: IterationResult, metric: Metric) -> float:
    return improvement(result.metric_value, _previous(result), metric)


def _fmt(value: float | None) -> str:
    return f"{value:.4f}" if finite(value) else "n/a"
