"""Phase transitions as pure functions: (phase, decision) -> next phase, and
the budget rule. The runner (and the operator) call these; neither decides
anything on its own. Every decision is recorded with its reason and time.

    Planning -> Baseline -> (Diagnostics -> Optimization)* -> Finalization
             -> (AwaitingApproval) -> Succeeded, or Failed with a reason.
"""

from __future__ import annotations

from datetime import datetime, timezone

from trainpipe_operator.spec.status import Decision, PipelineStatus

TERMINAL = ("Succeeded", "Failed")

# decision -> next phase, per phase. A decision not listed is a bug, not a
# user error: next_phase raises.
TRANSITIONS: dict[str, dict[str, str]] = {
    "Pending": {"start": "Planning"},
    "Planning": {"gate-passed": "Baseline", "gate-failed": "Failed"},
    "Baseline": {
        "deploy-baseline": "Finalization",  # target met: skip Diagnostics and Optimization
        "optimize": "Diagnostics",
        "fix": "Diagnostics",  # then Baseline again with the fix applied
        "gate-failed": "Failed",
    },
    "Diagnostics": {
        "optimize": "Optimization",
        "finalize": "Finalization",
        "baseline-again": "Baseline",
        "gate-failed": "Failed",
        "budget-exhausted": "Finalization",
    },
    "Optimization": {
        "finalize": "Finalization",
        "iterate": "Diagnostics",  # analyse the improved run, refine, optimize again
        "diagnose": "Diagnostics",  # no improvement: re-analyse from the best
        "gate-failed": "Failed",
        "budget-exhausted": "Finalization",
    },
    "Finalization": {
        "gate-passed": "Succeeded",
        "await-approval": "AwaitingApproval",
        "gate-failed": "Failed",
    },
    "AwaitingApproval": {"approved": "Succeeded", "gate-failed": "Failed"},
}


class TransitionError(ValueError):
    """A decision that the current phase cannot take."""


def next_phase(phase: str, decision: str) -> str:
    try:
        return TRANSITIONS[phase][decision]
    except KeyError:
        allowed = ", ".join(TRANSITIONS.get(phase, {})) or "none (terminal)"
        raise TransitionError(f"phase {phase} cannot take decision {decision!r}; allowed: {allowed}") from None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record(status: PipelineStatus, decision: str, reason: str, when: str | None = None) -> str:
    """Append the decision to the status and move the phase; returns the new phase."""
    target = next_phase(status.phase, decision)
    status.decisions.append(
        Decision(phase=status.phase, decision=decision, reason=reason, time=when or now_iso(), iteration=status.iteration)
    )
    status.phase = target  # type: ignore[assignment]
    status.message = reason
    if target in TERMINAL:
        status.finished_at = when or now_iso()
    return target


def budget_exhausted(elapsed_seconds: float, budget_seconds: float) -> bool:
    return elapsed_seconds >= budget_seconds


def budget_left_at(budget_seconds: float, pipeline_started_at: str | None, run_started_at: str | None) -> float | None:
    """The pipeline budget that was left when a run started (what the run's
    ``duration`` check compares with); None when either time is unknown. Both
    are ISO times; one without a zone is UTC."""
    if not pipeline_started_at or not run_started_at:
        return None
    start, run = (_aware(datetime.fromisoformat(t)) for t in (pipeline_started_at, run_started_at))
    return max(budget_seconds - (run - start).total_seconds(), 0.0)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def budget_applies(phase: str) -> bool:
    """Past the budget the pipeline stops exploring and finalizes its best
    result. Checked when Diagnostics or Optimization is about to start (a
    baseline result exists by then); Planning and the first Baseline must
    still pass, and Finalization always completes. A job already running
    is not cut short: the check happens at phase boundaries."""
    return phase in ("Diagnostics", "Optimization")
