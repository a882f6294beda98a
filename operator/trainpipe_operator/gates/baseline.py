"""Phase 2, the post-baseline gate (seed 000): the execution checks, the report,
the decision and the optional reproducibility re-run; and the decision itself.

Check ids: the execution checks (see ``execution``), then report, decision,
reproducible.
"""

from __future__ import annotations

from trainpipe_operator.gates.checks import (
    Check,
    GateResult,
    failed,
    is_finite,
    missing_sections,
    passed,
    quotes_figure,
    skipped,
    warned,
)
from trainpipe_operator.gates.execution import (
    FINISHED,
    best_val,
    execution_checks,
    loss_decrease_ratio,
    nonfinite_epochs,
    train_losses,
)
from trainpipe_operator.gates.inputs import GpuMeasurement, RunFiles
from trainpipe_operator.gates.thresholds import NO_LEARNING_DECREASE
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_operator.tasks import CLASSIFICATION, Metric, TaskCatalog, catalog_for
from trainpipe_trainer.contract.evidence import Evidence

GATE = "post-baseline"
PHASE = "Baseline"
REPORT_SECTIONS = (
    "Configuration", "Final Metrics", "Training Profile", "Checkpoints",
    "Learning Curves", "Decision", "Environment",
)
DECISIONS = ("deploy-baseline", "optimize", "fix")
# The re-run matches "to 3 decimals" when every epoch's train loss differs by
# less than half a unit in the 3rd decimal; "to 2 decimals" likewise.
REPRO_MATCH_3DP = 5e-4
REPRO_MATCH_2DP = 5e-3


def _quoted_metrics(catalog: TaskCatalog) -> list[Metric]:
    """The task's validation metrics a report quotes besides val_loss (informational ones aside)."""
    return [m for m in catalog.of_split("val") if m.name != "val_loss" and m.targetable]


def report_figures(evidence: Evidence, catalog: TaskCatalog = CLASSIFICATION) -> dict[str, float]:
    """The figures baseline_results.md must quote as evidence.json holds them:
    best val accuracy (classification) or the best of each of the task's
    validation metrics (by name), best val loss, final train loss."""
    if catalog.task == "classification":
        figures: dict[str, float | None] = {"best val accuracy": evidence.best_val_acc}
    else:
        figures = {f"best {m.name}": best_val(evidence, m) for m in _quoted_metrics(catalog)}
    figures.update({"best val loss": evidence.best_val_loss, "final train loss": train_losses(evidence)[1]})
    return {name: value for name, value in figures.items() if value is not None and is_finite(value)}


def check_report(files: RunFiles, evidence: Evidence | None = None, catalog: TaskCatalog = CLASSIFICATION) -> Check:
    """Every section seed 000 asks for, and the run's figures in them: a report
    whose numbers are not the evidence's is not the report of this run."""
    ev = files.at(files.report_path)
    best = ("best val accuracy" if catalog.task == "classification"
            else ", ".join(f"best {m.name}" for m in _quoted_metrics(catalog)))
    threshold = ", ".join(REPORT_SECTIONS) + f"; the evidence's {best}, best val loss, final train loss"
    if not files.report_text or not files.report_text.strip():
        return failed("report", 0, threshold, ev, "baseline_results.md is missing or empty.")
    missing = missing_sections(files.report_text, REPORT_SECTIONS)
    present = len(REPORT_SECTIONS) - len(missing)
    if missing:
        return failed("report", present, threshold, ev,
                      f"baseline_results.md lacks the section(s): {', '.join(missing)}.")
    figures = report_figures(evidence, catalog) if evidence is not None else {}
    unquoted = [f"{name} {value:.4f}" for name, value in figures.items()
                if not quotes_figure(files.report_text, value)]
    if unquoted:
        return failed("report", present, threshold, ev,
                      f"baseline_results.md does not quote the evidence's {', '.join(unquoted)}.")
    return passed("report", present, threshold, ev,
                  f"baseline_results.md has all {len(REPORT_SECTIONS)} sections and the run's figures.")


def check_decision(decision: str | None, files: RunFiles) -> Check:
    """A decision the phase machine can take, and the report's Decision
    section says the same (the reader acts on the report)."""
    ev = files.at(files.report_path)
    threshold = " | ".join(DECISIONS) + ", as the report's Decision section says"
    if not decision:
        return failed("decision", None, threshold, ev, "No decision was recorded for the next phase.")
    if decision not in DECISIONS:
        return failed("decision", decision, threshold, ev,
                      f"Decision {decision!r} is not one of {', '.join(DECISIONS)}.")
    section = _section(files.report_text or "", "Decision")
    if decision not in section:
        return failed("decision", decision, threshold, ev,
                      f"The decision taken is {decision!r}, but the report's Decision section does not say so.")
    where = {
        "deploy-baseline": "target met: on to Finalization",
        "optimize": "on to Diagnostics, then Optimization",
        "fix": "the run failed: Diagnostics, then Baseline again",
    }[decision]
    return passed("decision", decision, threshold, ev, f"Decision: {decision} ({where}).")


def _section(text: str, name: str) -> str:
    """The body of the first heading containing ``name``, up to the next heading."""
    lines = text.splitlines()
    out: list[str] = []
    inside = False
    for line in lines:
        if line.lstrip().startswith("#"):
            if inside:
                break
            inside = name.lower() in line.lower()
            continue
        if inside:
            out.append(line)
    return "\n".join(out)


def check_reproducible(evidence: Evidence, rerun: Evidence | None, files: RunFiles, spec: PipelineSpec) -> Check:
    """Optional and never mandatory: the per-epoch train losses of a re-run with
    the same seed match to 3 decimals (pass), to 2 only (warn), or not (fail)."""
    ev = files.at("reproducibility/evidence.json")
    if not spec.gates.reproducibility:
        return skipped("reproducible", "not requested (spec.gates.reproducibility is false)", ev,
                       mandatory=False)
    threshold = REPRO_MATCH_3DP
    if rerun is None:
        return failed("reproducible", None, threshold, ev,
                      "A re-run was requested but there is no re-run evidence to compare.", mandatory=False)
    first = [e.train_loss for e in evidence.epochs]
    second = [e.train_loss for e in rerun.epochs]
    if not first or len(first) != len(second):
        return failed("reproducible", None, threshold, ev,
                      f"The runs differ in length ({len(first)} vs {len(second)} epochs).", mandatory=False)
    if not all(is_finite(a) and is_finite(b) for a, b in zip(first, second, strict=True)):
        return failed("reproducible", None, threshold, ev,
                      "A train loss is not finite in one of the runs.", mandatory=False)
    diffs = [abs(a - b) for a, b in zip(first, second, strict=True)]
    worst = max(diffs)
    epoch = evidence.epochs[diffs.index(worst)].num
    value = float(f"{worst:.3g}")
    if worst < REPRO_MATCH_3DP:
        return passed("reproducible", value, threshold, ev,
                      f"The re-run's train losses match to 3 decimals over {len(first)} epochs "
                      f"(largest difference {worst:.2e}).", mandatory=False)
    if worst < REPRO_MATCH_2DP:
        return warned("reproducible", value, threshold, ev,
                      f"The re-run's train losses match to 2 decimals but not 3 (largest difference "
                      f"{worst:.2e} at epoch {epoch}): minor nondeterminism.", mandatory=False)
    return failed("reproducible", value, threshold, ev,
                  f"The re-run's train losses diverge (largest difference {worst:.3g} at epoch {epoch}): "
                  "the run is not reproducible.", mandatory=False)


def evaluate_baseline(
    evidence: Evidence,
    files: RunFiles,
    gpu: GpuMeasurement | None,
    spec: PipelineSpec,
    phase_budget_seconds: float | None,
    decision: str | None,
    reproducibility: Evidence | None,
    *,
    checkpoint_every: int | None = 1,
    keep_periodic: int | None = 3,
    preview_every: int | None = None,
) -> GateResult:
    """``keep_periodic`` and ``preview_every`` (the job's train.keepPeriodic
    and vae.previewEvery) are read by a VAE run's checks only."""
    checks = execution_checks(evidence, files, gpu, spec, phase_budget_seconds,
                              checkpoint_every=checkpoint_every, keep_periodic=keep_periodic,
                              preview_every=preview_every)
    checks += [
        check_report(files, evidence, catalog_for(spec)),
        check_decision(decision, files),
        check_reproducible(evidence, reproducibility, files, spec),
    ]
    return GateResult(gate=GATE, phase=PHASE, checks=checks)


def target_value(evidence: Evidence, spec: PipelineSpec) -> tuple[str, float | None]:
    """(metric used, its best value) for a decision made before the test split
    is touched: a test_X target is judged on its proxy, the best val_X."""
    catalog = catalog_for(spec)
    used = catalog.tracked(spec.target_metric)
    return used.name, best_val(evidence, used)


def decide_after_baseline(evidence: Evidence, gate_passed_execution: bool, spec: PipelineSpec) -> tuple[str, str]:
    """(decision, reason): "fix" when the run crashed, went non-finite, did not
    learn or failed a mandatory execution check; "deploy-baseline" when the
    target is met; "optimize" otherwise."""
    if evidence.status not in FINISHED or not evidence.completed:
        detail = f": {evidence.reason}" if evidence.reason else ""
        return "fix", f"the baseline did not complete (status {evidence.status}{detail})"
    if not evidence.epochs:
        return "fix", "the baseline finished no epoch"
    bad = nonfinite_epochs(evidence)
    if bad:
        return "fix", f"non-finite losses ({bad[0]}): lower the learning rate or clip gradients"
    initial, final = train_losses(evidence)
    ratio = loss_decrease_ratio(evidence)
    if ratio is None or ratio < NO_LEARNING_DECREASE:
        shown = "n/a" if ratio is None else f"{ratio:.1%}"
        return "fix", (f"no learning: train loss {initial} -> {final} (decrease {shown}, "
                       f"under {NO_LEARNING_DECREASE:.0%})")
    if not gate_passed_execution:
        return "fix", "a mandatory execution check failed (see the post-baseline gate)"
    used, value = target_value(evidence, spec)
    target = spec.target
    proxy = (f" ({target.metric} is only measured at finalization; the best {used} stands in for it)"
             if target.metric != used else "")
    best = catalog_for(spec).metric(used).direction
    if value is not None and target.met(value):
        return "deploy-baseline", (f"target met: {best} {used} {value:.4f} vs target {target.metric} "
                                   f"{target.value}{proxy}")
    shown = "n/a" if value is None else f"{value:.4f}"
    return "optimize", f"target not met: {best} {used} {shown} vs target {target.metric} {target.value}{proxy}"
