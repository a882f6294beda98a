"""Phase 3 (Diagnostics) and Phase 4 (Optimization) logic: pure functions of
the evidence, the spec and the current settings. No torch, numpy or ray.

- ``diagnose``: evidence -> :class:`Diagnosis` (primary issue, the signals)
- ``recommend``: diagnosis + settings -> 3-5 ranked :class:`Recommendation`
- ``apply_recommendations``: settings + recommendations -> new settings
- ``decide_after_diagnostics`` / ``decide_after_optimization``: the next phase
- ``render_diagnostic_report`` / ``render_optimization_results``: the markdown
"""

from trainpipe_operator.diagnosis.apply import ApplyPlan, apply_recommendations, plan_changes
from trainpipe_operator.diagnosis.decide import (
    IterationResult,
    best_result,
    decide_after_diagnostics,
    decide_after_optimization,
    expected_gain,
)
from trainpipe_operator.diagnosis.issues import Diagnosis, IssueKind, Signal, diagnose
from trainpipe_operator.diagnosis.recommendations import (
    ConfigChange,
    Recommendation,
    recommend,
)
from trainpipe_operator.diagnosis.report import (
    render_diagnostic_report,
    render_optimization_results,
)
from trainpipe_operator.diagnosis.settings import TrainSettings

__all__ = [
    "ApplyPlan",
    "ConfigChange",
    "Diagnosis",
    "IssueKind",
    "IterationResult",
    "Recommendation",
    "Signal",
    "TrainSettings",
    "apply_recommendations",
    "best_result",
    "decide_after_diagnostics",
    "decide_after_optimization",
    "diagnose",
    "expected_gain",
    "plan_changes",
    "recommend",
    "render_diagnostic_report",
    "render_optimization_results",
]
