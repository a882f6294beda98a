"""Phase 4, the optimization-complete gate: the comparison with the baseline is
written and the run is healthy (Phase 2's execution checks).

Check ids: comparison-written, then the execution checks (see ``execution``).

``comparison-written`` reads optimization_results.md as the runner wrote it:
it must quote the baseline's and this iteration's target-metric figures as
the evidence holds them, so a comparison with the wrong numbers fails.
"""

from __future__ import annotations

from trainpipe_operator.diagnosis.direction import metric_from_evidence, tracked_metric
from trainpipe_operator.gates.checks import Check, GateResult, failed, passed, quotes_figure
from trainpipe_operator.gates.execution import execution_checks
from trainpipe_operator.gates.inputs import GpuMeasurement, RunFiles
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_trainer.contract.evidence import Evidence

GATE = "optimization-complete"
PHASE = "Optimization"
RESULTS = "optimization_results.md"


def check_comparison(results_text: str | None, files: RunFiles, evidence: Evidence | None = None,
                     baseline: Evidence | None = None, spec: PipelineSpec | None = None) -> Check:
    ev = files.at(RESULTS)
    threshold = "optimization_results.md compares with the baseline, quoting both runs' target metric"
    if not results_text or not results_text.strip():
        return failed("comparison-written", False, threshold, ev, "optimization_results.md is missing or empty.")
    if "baseline" not in results_text.lower():
        return failed("comparison-written", False, threshold, ev,
                      "optimization_results.md does not compare with the baseline.")
    if spec is not None:
        metric = tracked_metric(spec)
        figures = {"the baseline's": baseline, "this iteration's": evidence}
        missing = []
        for who, run in figures.items():
            value = metric_from_evidence(run, metric) if run is not None else None
            if value is not None and not quotes_figure(results_text, value):
                missing.append(f"{who} {metric.name} {value:.4f}")
        if missing:
            return failed("comparison-written", False, threshold, ev,
                          "optimization_results.md does not quote " + " nor ".join(missing) + " (evidence.json).")
    return passed("comparison-written", True, threshold, ev,
                  "optimization_results.md compares this iteration with the baseline, with the evidence's figures.")


def evaluate_optimization(
    evidence: Evidence,
    files: RunFiles,
    gpu: GpuMeasurement | None,
    spec: PipelineSpec,
    phase_budget_seconds: float | None,
    results_text: str | None,
    *,
    iteration: int = 0,
    checkpoint_every: int | None = 1,
    baseline: Evidence | None = None,
    keep_periodic: int | None = 3,
    preview_every: int | None = None,
) -> GateResult:
    checks = [check_comparison(results_text, files, evidence, baseline, spec)]
    checks += execution_checks(evidence, files, gpu, spec, phase_budget_seconds,
                               checkpoint_every=checkpoint_every, keep_periodic=keep_periodic,
                               preview_every=preview_every)
    return GateResult(gate=GATE, phase=PHASE, checks=checks, iteration=iteration)
