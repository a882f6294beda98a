"""``diagnostic_report.md`` (Phase 3) and ``optimization_results.md`` (Phase 4).

Figures are the task's metrics by name (its catalog): a classifier's report
shows accuracies, a VAE's its reconstruction and KL, a custom task's the
metrics it declares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainpipe_operator.diagnosis.direction import (
    finite,
    improvement,
    metric_from_evidence,
    target_met,
    tracked_metric,
)
from trainpipe_operator.diagnosis.issues import Diagnosis
from trainpipe_operator.diagnosis.recommendations import ConfigChange, Recommendation, fmt_value
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_operator.tasks import Metric, TaskCatalog, catalog_for
from trainpipe_trainer.contract.evidence import Evidence


def render_diagnostic_report(
    diagnosis: Diagnosis,
    recommendations: Sequence[Recommendation],
    evidence: Evidence,
    iteration: int,
    decision: tuple[str, str] | None = None,
    fixed: Sequence[str] = (),
) -> str:
    """``fixed``: the settings the user holds fixed (``spec.optimization.fixed``),
    which no recommendation changes; named so a reader knows why a remedy is absent."""
    d, m = diagnosis, diagnosis.measurements
    lines = [
        f"# Diagnostic report: {evidence.job_name} (iteration {iteration})",
        "",
        "## Summary",
        "",
        f"- **Primary issue: {d.primary_issue}**"
        + (" (infrastructure broken)" if d.infrastructure_broken else "")
        + f": {_cell(d.why or d.summary)}",
        f"- Secondary issues: {', '.join(d.secondary_issues) or 'none'}",
        f"- Infrastructure broken: {'yes' if d.infrastructure_broken else 'no'}",
        f"- Run: status {evidence.status}, {m.epochs}/{evidence.epochs_planned} epochs"
        + (f", reason: {_cell(evidence.reason)}" if evidence.reason else ""),
        f"- Target: {d.metric} {'<=' if d.lower_is_better else '>='} {d.target_value:g}; "
        f"measured {_num(d.metric_value)}",
        _measured_line(d),
        "",
        "## Signals",
        "",
        "| issue | signal | value | threshold | detail |",
        "|---|---|---|---|---|",
    ]
    for s in sorted(d.signals, key=lambda s: s.rank):
        lines.append(
            f"| {s.issue} | {s.signal} | {_cell(_val(s.value))} | {_cell(_val(s.threshold))} | {_cell(s.message)} |"
        )
    lines += [
        "",
        "## Recommendations",
        "",
        "Ranked by expected impact (high first), then effort (low first). Expected gain is "
        f"absolute, in {d.metric} (positive = better).",
        "",
        "| rank | title | changes | expected impact | expected gain | effort | rationale |",
        "|---|---|---|---|---|---|---|",
    ]
    if fixed:
        lines[-3:-3] = [f"Held fixed by spec.optimization.fixed, so never recommended: {', '.join(fixed)}.", ""]
    for rank, r in enumerate(recommendations, start=1):
        changes = "<br>".join(_cell(c.describe()) for c in r.changes) or "_requires a person_"
        lines.append(
            f"| {rank} | {_cell(r.title)} | {changes} | {r.expected_impact} | {r.expected_gain:.4f} | "
            f"{r.effort} | {_cell(r.rationale)} |"
        )
    if not recommendations:
        lines.append("| - | none | - | - | - | - | - |")
    lines += ["", "## Decision", ""]
    if decision is None:
        lines.append("_pending_")
    else:
        lines.append(f"**{decision[0]}**: {decision[1]}")
    return "\n".join(lines) + "\n"


def render_optimization_results(
    baseline: Evidence,
    previous: Evidence | None,
    current: Evidence,
    changes: Sequence[ConfigChange],
    iteration: int,
    spec: PipelineSpec,
    decision: tuple[str, str] | None = None,
    skipped: Sequence[ConfigChange] = (),
) -> str:
    """``previous`` None: the first iteration, compared with the baseline only."""
    catalog = catalog_for(spec)
    metric = tracked_metric(spec)
    target = spec.target.value
    runs = [("baseline", _snapshot(baseline, metric, catalog))]
    if previous is not None:
        runs.append((f"iteration {iteration - 1}", _snapshot(previous, metric, catalog)))
    cur = _snapshot(current, metric, catalog)
    runs.append((f"iteration {iteration}", cur))
    base = runs[0][1]
    prev = runs[-2][1]
    header = "| metric | " + " | ".join(name for name, _ in runs) + " | Δ vs baseline |"
    if previous is not None:
        header += " Δ vs previous |"
    lines = [
        f"# Optimization results: iteration {iteration}",
        "",
        "## Summary",
        "",
        f"- Target: {metric.name} {metric.relation} {target:g}: "
        + ("**met**" if target_met(cur["target"], target, metric) else "not met")
        + f" ({_num(cur['target'])})",
        f"- Versus baseline: {_delta(cur['target'], base['target'], metric)}"
        + (f"; versus previous: {_delta(cur['target'], prev['target'], metric)}" if previous is not None else ""),
        f"- Run: status {current.status}, {len(current.epochs)}/{current.epochs_planned} epochs",
        "",
        "## Comparison",
        "",
        header,
        "|---" * (len(runs) + (3 if previous is not None else 2)) + "|",
    ]
    for label, key in _rows(catalog):
        cells = [_num(snap[key], key) for _, snap in runs]
        row = f"| {label} | " + " | ".join(cells) + f" | {_diff(cur[key], base[key], key, catalog)} |"
        if previous is not None:
            row += f" {_diff(cur[key], prev[key], key, catalog)} |"
        lines.append(row)
    lines += ["", "## Applied changes", ""]
    if changes:
        lines += ["| path | old | new | recommendation |", "|---|---|---|---|"]
        lines += [
            f"| {c.path} | {_cell(fmt_value(c.old))} | {_cell(fmt_value(c.new))} | {c.recommendation_id} |"
            for c in changes
        ]
    else:
        lines.append("_none_")
    if skipped:
        lines += ["", "Skipped:", ""]
        lines += [f"- {_cell(c.describe())} ({c.recommendation_id}): {_cell(c.note)}" for c in skipped]
    lines += ["", "## Decision", ""]
    lines.append("_pending_" if decision is None else f"**{decision[0]}**: {decision[1]}")
    return "\n".join(lines) + "\n"


# -- helpers ------------------------------------------------------------------


def _measured_line(d: Diagnosis) -> str:
    """The run's figures the diagnosis read: accuracy for a classifier; the
    ELBO's parts, the loss gap and active units for a VAE; the target metric
    and its train counterpart for a custom task."""
    m = d.measurements
    gpu = f"{m.gpu_util:.0f}%" if m.gpu_util is not None else "n/a"
    if d.task == "vae":
        gap = f"{m.loss_gap:.1%}" if finite(m.loss_gap) else "n/a"
        return (f"- Last epoch: val_kl {_num(m.val_kl)} nats per sample, val_recon {_num(m.val_recon)}, "
                f"KL weight {_num(m.kl_weight)}, active units {_num(m.active_units)}, loss gap {gap}; "
                f"train loss {_num(m.train_loss)}, best val loss {_num(m.best_val_loss)}, GPU util {gpu}")
    if d.task == "classification":
        return (f"- Train acc {_num(m.train_acc)}, val acc {_num(m.val_acc)} (best {_num(m.best_val_acc)}), "
                f"best val loss {_num(m.best_val_loss)}, GPU util {gpu}")
    train = "train_" + d.metric.removeprefix("val_")
    return (f"- {train} {_num(m.train_metric)}, {d.metric} {_num(m.val_metric)} at the last epoch "
            f"(best {_num(d.metric_value)}), best val loss {_num(m.best_val_loss)}, "
            f"loss gap {_num(m.loss_gap)}, GPU util {gpu}")


def _rows(catalog: TaskCatalog) -> list[tuple[str, str]]:
    """(label, key) of the comparison's rows: the task's validation metrics by
    name (best per run), then the engine's figures."""
    if catalog.task == "classification":
        return [("val_acc", "val_acc"), ("val_loss", "val_loss"), ("train_loss", "train_loss"),
                ("gap (train-val acc)", "gap"), ("epochs", "epochs"), ("time (s)", "time")]
    names = [m.name for m in catalog.of_split("val")]
    return [*((n, n) for n in names), ("train_loss", "train_loss"),
            ("gap (val-train loss, relative)", "gap"), ("epochs", "epochs"), ("time (s)", "time")]


def _snapshot(evidence: Evidence, metric: Metric, catalog: TaskCatalog) -> dict[str, Any]:
    epochs = evidence.epochs
    last = epochs[-1] if epochs else None
    train_loss = evidence.final_train_loss if finite(evidence.final_train_loss) else (
        last.train_loss if last else None
    )
    total = evidence.timings.total_seconds or sum(e.epoch_seconds for e in epochs)
    snap: dict[str, Any] = {m.name: metric_from_evidence(evidence, m) for m in catalog.of_split("val")}
    snap.update({
        "target": metric_from_evidence(evidence, metric),
        "train_loss": train_loss,
        "gap": (last.acc_gap if catalog.task == "classification" else last.loss_gap) if last else None,
        "epochs": len(epochs),
        "time": total,
    })
    return snap


def _lower_better(key: str, catalog: TaskCatalog) -> bool:
    metric = catalog.get(key)
    if metric is not None:
        return metric.lower_is_better
    return key in {"train_loss", "gap", "time"}


def _diff(new: Any, old: Any, key: str, catalog: TaskCatalog) -> str:
    if not (finite(new) and finite(old)):
        return "n/a"
    delta = new - old
    if key == "epochs":
        return f"{delta:+d}"
    if key == "time":
        return f"{delta:+.1f}"
    if delta == 0:
        return "+0.0000"
    better = delta < 0 if _lower_better(key, catalog) else delta > 0
    return f"{delta:+.4f} ({'better' if better else 'worse'})"


def _delta(new: float | None, old: float | None, metric: Metric) -> str:
    if not (finite(new) and finite(old)):
        return "n/a"
    gain = improvement(new, old, metric)
    word = "better" if gain > 0 else "worse" if gain < 0 else "unchanged"
    return f"{new - old:+.4f} ({word})"


def _num(value: Any, key: str = "") -> str:
    if value is None:
        return "n/a"
    if key == "epochs":
        return str(value)
    if key == "time":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4f}" if finite(value) else str(value)
    return str(value)


def _val(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")
