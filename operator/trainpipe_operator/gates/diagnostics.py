"""Phase 3, the diagnostics-complete gate: a root cause named on evidence,
3-5 recommendations, diagnostic_report.md written with what a reader acts on.

Check ids: root-cause-named, recommendations-present, report-written.

``root-cause-named`` reads the diagnosis: the primary issue must be backed by
a rule that fired on a measurement; the fallback "no rule fired, treated as
underfitting" warns. ``report-written`` reads the report the runner wrote:
it must name the primary issue, every recommendation and the decision taken,
so a report that drifted from the diagnosis fails.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainpipe_operator.diagnosis.issues import Diagnosis
from trainpipe_operator.gates.checks import Check, GateResult, failed, first_few, passed, warned
from trainpipe_operator.gates.inputs import join_path

GATE = "diagnostics-complete"
PHASE = "Diagnostics"
REPORT = "diagnostic_report.md"
# The accepted primary issues (docs/gates.md, Diagnostics): diagnosis/issues.py's
# eight (posterior-collapse: the vae task's); "divergence" is nan-loss's other name, "near-optimal" the diagnosis that
# nothing worth fixing is left.
KNOWN_ISSUES = (
    "crash", "nan-loss", "divergence", "convergence-stall", "overfitting", "underfitting",
    "data-quality", "resource-inefficiency", "near-optimal", "posterior-collapse",
)
RECOMMENDATIONS_MIN = 3
RECOMMENDATIONS_MAX = 5
FALLBACK_SIGNAL = "no-rule-fired"


def check_root_cause(diagnosis: Diagnosis | None, evidence: str) -> Check:
    threshold = " | ".join(KNOWN_ISSUES) + ", backed by a rule that fired"
    primary = diagnosis.primary_issue if diagnosis is not None else None
    if diagnosis is None or not primary:
        return failed("root-cause-named", None, threshold, evidence, "No primary issue was identified.")
    if primary not in KNOWN_ISSUES:
        return warned("root-cause-named", primary, threshold, evidence,
                      f"Primary issue {primary!r} is not one of the known issues; "
                      "read the report for its evidence.")
    backing = [sig for sig in diagnosis.signals_for(primary) if sig.signal != FALLBACK_SIGNAL]
    if not backing:
        return warned("root-cause-named", primary, threshold, evidence,
                      f"No rule fired on the evidence; the shortfall is treated as {primary} "
                      f"({diagnosis.why}). The root cause is a guess: read the learning curves.")
    first = backing[0]
    return passed("root-cause-named", primary, threshold, evidence,
                  f"Primary issue: {primary} ({first.signal}: {first.message}).")


def check_recommendations(recommendations: Sequence[object], evidence: str) -> Check:
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


def check_report(diagnosis: Diagnosis | None, recommendations: Sequence[object], report_text: str | None,
                 decision: tuple[str, str] | None, evidence: str) -> Check:
    threshold = "diagnostic_report.md names the primary issue, every recommendation and the decision"
    if not report_text or not report_text.strip():
        return failed("report-written", False, threshold, evidence, "diagnostic_report.md is missing or empty.")
    text = report_text.lower()
    missing = []
    if diagnosis is not None and diagnosis.primary_issue.lower() not in text:
        missing.append(f"the primary issue {diagnosis.primary_issue!r}")
    for rec in recommendations:
        title = getattr(rec, "title", None)
        if isinstance(title, str) and " ".join(title.split()).lower() not in text:
            missing.append(f"the recommendation {title!r}")
    if decision is not None and decision[0].lower() not in text:
        missing.append(f"the decision {decision[0]!r}")
    if missing:
        return failed("report-written", False, threshold, evidence,
                      f"diagnostic_report.md does not name {first_few(missing, 3)}.")
    return passed("report-written", True, threshold, evidence,
                  "diagnostic_report.md names the primary issue, every recommendation and the decision.")


def evaluate_diagnostics(
    diagnosis: Diagnosis | None,
    recommendations: Sequence[object],
    report_text: str | None,
    decision: tuple[str, str] | None = None,
    *,
    run_dir: str = "",
    iteration: int = 0,
) -> GateResult:
    evidence = join_path(run_dir, REPORT)
    return GateResult(gate=GATE, phase=PHASE, iteration=iteration, checks=[
        check_root_cause(diagnosis, evidence),
        check_recommendations(list(recommendations), evidence),
        check_report(diagnosis, recommendations, report_text, decision, evidence),
    ])
