"""Phase 4, the optimization-complete gate: the comparison with the baseline is
written and the run is healthy (Phase 2's execution checks).

Check ids: comparison-written, then the execution checks (see ``execution``).
"""

from __future__ import annotations

from trainpipe_operator.gates.checks import Check, GateResult, failed, passed
from trainpipe_operator.gates.execution import execution_checks
from trainpipe_operator.gates.inputs import GpuMeasurement, RunFiles
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_trainer.contract.evidence import Evidence

GATE = "optimization-complete"
PHASE = "Optimization"
RESULTS = "optimization_results.md"


def check_comparison(results_text: str | None, files: RunFiles) -> Check:
    ev = files.at(RESULTS)
    threshold = "optimization_results.md compares with the baseline"
    if not results_text or not results_text.strip():
        return failed("comparison-written", False, threshold, ev, "optimization_results.md is missing or empty.")
    if "baseline" not in results_text.lower():
        return failed("comparison-written", False, threshold, ev,
                      "optimization_results.md does not compare with the baseline.")
    return passed("comparison-written", True, threshold, ev,
                  "optimization_results.md compares this iteration with the baseline.")


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
) -> GateResult:
    checks = [check_comparison(results_text, files)]
    checks += execution_checks(evidence, files, gpu, spec, phase_budget_seconds,
                               checkpoint_every=checkpoint_every)
    return GateResult(gate=GATE, phase=PHASE, checks=checks, iteration=iteration)
