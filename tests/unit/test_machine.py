"""The phase machine: the transition table, the errors for a decision a phase
cannot take, ``record``, the budget rule, and the workflows of seed 001
replayed decision by decision."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from trainpipe_operator.pipeline.machine import (
    TERMINAL,
    TRANSITIONS,
    TransitionError,
    budget_applies,
    budget_exhausted,
    next_phase,
    record,
)
from trainpipe_operator.spec.status import PHASES, Decision, PipelineStatus

# The master workflow (seed 001) as (phase, decision, next phase).
EXPECTED = [
    ("Pending", "start", "Planning"),
    ("Planning", "gate-passed", "Baseline"),
    ("Planning", "gate-failed", "Failed"),
    ("Baseline", "deploy-baseline", "Finalization"),  # baseline sufficient: skip 3 and 4
    ("Baseline", "optimize", "Diagnostics"),  # baseline insufficient
    ("Baseline", "fix", "Diagnostics"),  # baseline failed: diagnose, fix, restart 2
    ("Baseline", "gate-failed", "Failed"),
    ("Diagnostics", "optimize", "Optimization"),  # clear recommendations
    ("Diagnostics", "finalize", "Finalization"),  # baseline near-optimal
    ("Diagnostics", "baseline-again", "Baseline"),  # infrastructure issues
    ("Diagnostics", "gate-failed", "Failed"),
    ("Diagnostics", "budget-exhausted", "Finalization"),
    ("Optimization", "finalize", "Finalization"),  # target met, or diminishing returns
    ("Optimization", "iterate", "Diagnostics"),  # improved but insufficient
    ("Optimization", "diagnose", "Diagnostics"),  # no improvement: re-analyse
    ("Optimization", "gate-failed", "Failed"),
    ("Optimization", "budget-exhausted", "Finalization"),
    ("Finalization", "gate-passed", "Succeeded"),
    ("Finalization", "await-approval", "AwaitingApproval"),
    ("Finalization", "gate-failed", "Failed"),
    ("AwaitingApproval", "approved", "Succeeded"),
    ("AwaitingApproval", "gate-failed", "Failed"),
]
WHEN = "2025-01-02T03:04:05+00:00"


@pytest.mark.parametrize(
    ("phase", "decision", "target"),
    [(p, d, t) for p, decisions in TRANSITIONS.items() for d, t in decisions.items()],
)
def test_every_transition_leads_where_the_table_says(phase: str, decision: str, target: str) -> None:
    assert next_phase(phase, decision) == target
    status = PipelineStatus.model_validate({"phase": phase})
    assert record(status, decision, "why", when=WHEN) == target
    assert status.phase == target


@pytest.mark.parametrize(("phase", "decision", "target"), EXPECTED, ids=[f"{p}-{d}" for p, d, _ in EXPECTED])
def test_the_table_is_the_master_workflow(phase: str, decision: str, target: str) -> None:
    assert TRANSITIONS[phase][decision] == target


def test_the_table_has_no_transition_the_workflow_lacks() -> None:
    table = {(p, d, t) for p, decisions in TRANSITIONS.items() for d, t in decisions.items()}
    assert table == set(EXPECTED)


def test_every_phase_is_in_the_table_or_terminal() -> None:
    assert set(TERMINAL) == {"Succeeded", "Failed"}
    assert set(TRANSITIONS) | set(TERMINAL) == set(PHASES)
    for decisions in TRANSITIONS.values():
        assert set(decisions.values()) <= set(PHASES)


@pytest.mark.parametrize("phase", sorted(TRANSITIONS))
def test_a_decision_the_phase_cannot_take_lists_the_allowed_ones(phase: str) -> None:
    with pytest.raises(TransitionError) as caught:
        next_phase(phase, "dance")
    message = str(caught.value)
    assert phase in message and "'dance'" in message
    for allowed in TRANSITIONS[phase]:
        assert allowed in message
    assert isinstance(caught.value, ValueError)


def test_a_decision_from_another_phase_is_refused() -> None:
    with pytest.raises(TransitionError, match="allowed: start$"):
        next_phase("Pending", "gate-passed")
    with pytest.raises(TransitionError, match="deploy-baseline"):
        next_phase("Planning", "deploy-baseline")


@pytest.mark.parametrize("phase", TERMINAL)
@pytest.mark.parametrize("decision", sorted({d for decisions in TRANSITIONS.values() for d in decisions}))
def test_terminal_phases_take_no_decision(phase: str, decision: str) -> None:
    with pytest.raises(TransitionError, match=r"none \(terminal\)"):
        next_phase(phase, decision)


def test_record_appends_the_decision_and_moves_the_phase() -> None:
    status = PipelineStatus(phase="Baseline", iteration=2)
    assert record(status, "optimize", "val_acc 0.72 < target 0.8", when=WHEN) == "Diagnostics"
    assert status.decisions == [
        Decision(phase="Baseline", decision="optimize", reason="val_acc 0.72 < target 0.8", time=WHEN, iteration=2)
    ]
    assert status.phase == "Diagnostics"
    assert status.message == "val_acc 0.72 < target 0.8"
    assert status.finished_at is None


def test_record_stamps_the_current_time_when_none_is_given() -> None:
    status = PipelineStatus(phase="Pending")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    record(status, "start", "created")
    stamped = datetime.fromisoformat(status.decisions[0].time)
    assert stamped.tzinfo is not None
    assert before <= stamped <= datetime.now(timezone.utc) + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("phase", "decision", "terminal"),
    [("Finalization", "gate-passed", "Succeeded"), ("AwaitingApproval", "approved", "Succeeded"),
     ("Planning", "gate-failed", "Failed"), ("Optimization", "gate-failed", "Failed")],
)
def test_record_sets_finished_at_on_a_terminal_phase(phase: str, decision: str, terminal: str) -> None:
    status = PipelineStatus.model_validate({"phase": phase})
    record(status, decision, "done", when=WHEN)
    assert status.phase == terminal
    assert status.finished_at == WHEN


def test_record_without_a_time_sets_finished_at_to_now() -> None:
    status = PipelineStatus(phase="Finalization")
    record(status, "gate-passed", "all checks passed")
    assert status.finished_at is not None
    assert datetime.fromisoformat(status.finished_at).tzinfo is not None


def test_record_refuses_a_decision_and_leaves_the_status_alone() -> None:
    status = PipelineStatus(phase="Planning")
    with pytest.raises(TransitionError):
        record(status, "finalize", "no", when=WHEN)
    assert status.phase == "Planning"
    assert status.decisions == []
    assert status.message == ""
    assert status.finished_at is None


@pytest.mark.parametrize(
    ("elapsed", "budget", "exhausted"),
    [(3600.0, 3600.0, True), (3600.5, 3600.0, True), (50000.0, 43200.0, True), (3599.9, 3600.0, False),
     (0.0, 43200.0, False)],
    ids=["at", "just-over", "over", "just-under", "start"],
)
def test_budget_exhausted(elapsed: float, budget: float, exhausted: bool) -> None:
    assert budget_exhausted(elapsed, budget) is exhausted


@pytest.mark.parametrize("phase", PHASES)
def test_budget_applies_only_to_diagnostics_and_optimization(phase: str) -> None:
    assert budget_applies(phase) is (phase in ("Diagnostics", "Optimization"))


def _replay(steps: list[tuple[str, str] | tuple[str, str, int]]) -> PipelineStatus:
    """From Pending, record each (decision, expected next phase[, iteration])."""
    status = PipelineStatus()
    for i, step in enumerate(steps):
        decision, expected = step[0], step[1]
        if len(step) == 3:
            status.iteration = step[2]
        assert record(status, decision, f"step {i}", when=WHEN) == expected, (i, decision)
    assert [d.decision for d in status.decisions] == [s[0] for s in steps]
    return status


def test_fast_path_planning_baseline_finalization() -> None:
    status = _replay([
        ("start", "Planning"), ("gate-passed", "Baseline"), ("deploy-baseline", "Finalization"),
        ("gate-passed", "Succeeded"),
    ])
    assert [d.phase for d in status.decisions] == ["Pending", "Planning", "Baseline", "Finalization"]
    assert status.finished_at == WHEN


def test_typical_path_with_one_optimization() -> None:
    status = _replay([
        ("start", "Planning"), ("gate-passed", "Baseline"), ("optimize", "Diagnostics"),
        ("optimize", "Optimization", 1), ("finalize", "Finalization"), ("gate-passed", "Succeeded"),
    ])
    assert [d.phase for d in status.decisions] == [
        "Pending", "Planning", "Baseline", "Diagnostics", "Optimization", "Finalization",
    ]
    assert [d.iteration for d in status.decisions] == [0, 0, 0, 1, 1, 1]
    assert status.phase == "Succeeded"


def test_complex_path_iterates_then_accepts_diminishing_returns() -> None:
    status = _replay([
        ("start", "Planning"), ("gate-passed", "Baseline"), ("optimize", "Diagnostics"),
        ("optimize", "Optimization", 1), ("iterate", "Diagnostics"), ("optimize", "Optimization", 2),
        ("diagnose", "Diagnostics"), ("optimize", "Optimization", 3), ("finalize", "Finalization"),
        ("gate-passed", "Succeeded"),
    ])
    assert status.phase == "Succeeded"
    assert max(d.iteration for d in status.decisions) == 3


def test_baseline_failed_goes_through_diagnostics_and_back_to_baseline() -> None:
    status = _replay([
        ("start", "Planning"), ("gate-passed", "Baseline"), ("fix", "Diagnostics"),
        ("baseline-again", "Baseline"), ("optimize", "Diagnostics"), ("optimize", "Optimization", 1),
        ("finalize", "Finalization"), ("gate-passed", "Succeeded"),
    ])
    phases = [d.phase for d in status.decisions]
    assert phases[:5] == ["Pending", "Planning", "Baseline", "Diagnostics", "Baseline"]
    assert status.phase == "Succeeded"


def test_approval_waits_then_succeeds() -> None:
    status = _replay([
        ("start", "Planning"), ("gate-passed", "Baseline"), ("deploy-baseline", "Finalization"),
        ("await-approval", "AwaitingApproval"),
    ])
    assert status.finished_at is None  # waiting is not finished
    record(status, "approved", "approved by alice", when="2025-01-03T00:00:00+00:00")
    assert status.phase == "Succeeded"
    assert status.finished_at == "2025-01-03T00:00:00+00:00"
    assert status.decisions[-1].phase == "AwaitingApproval"
    assert status.decisions[-1].reason == "approved by alice"


def test_budget_exhausted_in_optimization_finalizes_the_best() -> None:
    status = _replay([
        ("start", "Planning"), ("gate-passed", "Baseline"), ("optimize", "Diagnostics"),
        ("optimize", "Optimization", 1), ("budget-exhausted", "Finalization"), ("gate-passed", "Succeeded"),
    ])
    assert status.phase == "Succeeded"


def test_a_failed_gate_ends_in_failed() -> None:
    status = _replay([("start", "Planning"), ("gate-failed", "Failed")])
    assert status.finished_at == WHEN
    with pytest.raises(TransitionError):
        record(status, "gate-passed", "too late", when=WHEN)
