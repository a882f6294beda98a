"""Phase 3, the diagnostics-complete gate: a root cause named, 3-5
recommendations, diagnostic_report.md written.

Check ids: root-cause-named, recommendations-present, report-written.
"""

from __future__ import annotations

from trainpipe_operator.gates.checks import Check, GateResult, failed, passed, warned
from trainpipe_operator.gates.inputs import join_path

GATE = "diagnostics-complete"
PHASE = "Diagnostics"
REPORT = "diagnostic_report.md"
# The accepted primary issues (docs/gates.md, Diagnostics): diagnosis/issues.py's
# six; "divergence" is nan-loss's other name, "near-optimal" the diagnosis that
# nothing worth fixing is left.
KNOWN_ISSUES = (
    "nan-loss", "divergence", "convergence-stall", "overfitting", "underfitting",
    "data-quality", "resource-inefficiency", "near-optimal",
)
RECOMMENDATIONS_MIN = 3
RECOMMENDATIONS_MAX = 5


def check_root_cause(primary_issue: str | None, evidence: str) -> Check:
    threshold = " | ".join(KNOWN_ISSUES)
    if not primary_issue or not primary_issue.strip():
        return failed("root-cause-named", None, threshold, evidence, "No primary issue was identified.")
    if primary_issue not in KNOWN_ISSUES:
        return warned("root-cause-named", primary_issue, threshold, evidence,
                      f"Primary issue {primary_issue!r} is not one of the known issues; "
                      "read the report for its evidence.")
    return passed("root-cause-named", primary_issue, threshold, evidence, f"Primary issue: {primary_issue}.")


def check_recommendations(recommendations: list, evidence: str) -> Check:
    """3-5 pass; 1-2 or more than 5 warn (a short or unranked list still gives a
    way forward); none fails."""
    count = len(recommendations or [])
    threshold = f"{RECOMMENDATIONS_MIN}-{RECOMMENDATIONS_MAX}"
    if count == 0:
        return failed("recommendations-present", 0, threshold, evidence, "No recommendation was written.")
    if count < RECOMMENDATIONS_MIN:
        return warned("recommendations-present", count, threshold, evidence,
                      f"Only {count} recommendation(s); {threshold} expected.")
    if count > RECOMMENDATIONS_MAX:
        return warned("recommendations-present", count, threshold, evidence,
                      f"{count} recommendations; rank them and keep the top {RECOMMENDATIONS_MAX}.")
    return passed("recommendations-present", count, threshold, evidence, f"{count} recommendations, ranked.")


def check_report(primary_issue: str | None, report_text: str | None, evidence: str) -> Check:
    threshold = "diagnostic_report.md written, naming the primary issue"
    if not report_text or not report_text.strip():
        return failed("report-written", False, threshold, evidence, "diagnostic_report.md is missing or empty.")
    if primary_issue and primary_issue.lower() not in report_text.lower():
        return warned("report-written", True, threshold, evidence,
                      f"diagnostic_report.md does not mention the primary issue {primary_issue!r}.")
    return passed("report-written", True, threshold, evidence, "diagnostic_report.md written.")


def evaluate_diagnostics(
    primary_issue: str | None,
    recommendations: list,
    report_text: str | None,
    *,
    run_dir: str = "",
    iteration: int = 0,
) -> GateResult:
    evidence = join_path(run_dir, REPORT)
    return GateResult(gate=GATE, phase=PHASE, iteration=iteration, checks=[
        check_root_cause(primary_issue, evidence),
        check_recommendations(recommendations, evidence),
        check_report(primary_issue, report_text, evidence),
    ])
