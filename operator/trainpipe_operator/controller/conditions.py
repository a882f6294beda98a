"""Conditions in the Kubernetes API conventions' shape: one per gate (the
latest evaluation of that phase's gate), TargetMet (once Finalization's gate
has judged the target on the test split), TrackingDegraded (with
spec.tracking: whether the tracked record is complete) and Ready. A condition keeps its
lastTransitionTime while its status does not change."""

from __future__ import annotations

from trainpipe_operator.lifecycle import hold
from trainpipe_operator.spec.status import Condition, GateStatus, PipelineStatus

GATE_TYPES = {
    "planning": "PlanningGate", "baseline": "BaselineGate", "diagnostics": "DiagnosticsGate",
    "optimization": "OptimizationGate", "finalization": "FinalizationGate",
}


def _merge(previous: dict[str, Condition], new: Condition) -> Condition:
    old = previous.get(new.type)
    if old is not None and old.status == new.status:
        new.last_transition_time = old.last_transition_time
    return new


def build_conditions(status: PipelineStatus, generation: int | None, now: str) -> list[Condition]:
    previous = {c.type: c for c in status.conditions}
    latest: dict[str, tuple[str, GateStatus]] = {}
    for key, gate in status.gates.items():  # dict order is evaluation order
        latest[key.split(".")[0]] = (key, gate)
    out = []
    for prefix, (key, gate) in latest.items():
        failing = [c.id for c in gate.checks if c.result == "fail" and c.mandatory]
        passed = gate.passed
        out.append(_merge(previous, Condition(
            type=GATE_TYPES.get(prefix, prefix.capitalize() + "Gate"),
            status="True" if passed else "False",
            reason="Passed" if passed else "Failed",
            message=f"{key}: " + ("every mandatory check passed" if passed else "failed: " + ", ".join(failing)),
            last_transition_time=now, observed_generation=generation,
        )))
    target = target_condition(status, generation, now)
    if target is not None:
        out.append(_merge(previous, target))
    tracking = tracking_condition(status, generation, now)
    if tracking is not None:
        out.append(_merge(previous, tracking))
    out += [_merge(previous, c) for c in hold.conditions(status, generation, now)]  # Suspended, Admitted
    ready = status.phase == "Succeeded"
    out.append(_merge(previous, Condition(
        type="Ready", status="True" if ready else "False", reason=status.phase,
        message=status.message[:1000], last_transition_time=now, observed_generation=generation,
    )))
    extra = [c for c in status.conditions if c.type == "SpecApplied"]
    return out + extra


TARGET_CHECK = "target-met-on-test"


def target_condition(status: PipelineStatus, generation: int | None, now: str) -> Condition | None:
    """TargetMet from the production-ready gate's ``target-met-on-test``: True
    when the test split meets the target; False with reason AcceptedBest when
    the pipeline accepted its best result short of it (seed 001: the ceiling
    is documented and the best deployed), NotMet when it failed, NotMeasured
    when there was no test figure. None before Finalization's gate."""
    gate = status.gates.get("finalization")
    check = next((c for c in gate.checks if c.id == TARGET_CHECK), None) if gate else None
    if check is None:
        return None
    if check.result == "pass":
        state, reason = "True", "Met"
    elif check.value is None:
        state, reason = "False", "NotMeasured"
    elif check.result == "warn":
        state, reason = "False", "AcceptedBest"
    else:
        state, reason = "False", "NotMet"
    return Condition(type="TargetMet", status=state, reason=reason, message=check.message[:1000],
                     last_transition_time=now, observed_generation=generation)


def tracking_condition(status: PipelineStatus, generation: int | None, now: str) -> Condition | None:
    """TrackingDegraded: True while the control plane cannot reach its
    tracking server (or was refused), naming the server (never a credential)
    and what it will retry, or when a job could not reach its server (its run
    misses what it could not send); False otherwise. None without
    spec.tracking. Tracking never decides a gate: Ready does not read it."""
    tracking = status.tracking
    if tracking is None:
        return None
    parts = []
    if tracking.degraded:
        parts.append(tracking.degraded + (f" (to retry: {', '.join(tracking.pending)})" if tracking.pending else ""))
    if tracking.jobs_degraded:
        parts.append("; ".join(tracking.jobs_degraded.values()) + ": the job kept training, its run misses what it "
                     "could not send")
    if parts:
        return Condition(type="TrackingDegraded", status="True",
                         reason=tracking.degraded_reason if tracking.degraded else "ServerUnreachable",
                         message="; ".join(parts)[:1000], last_transition_time=now, observed_generation=generation)
    return Condition(type="TrackingDegraded", status="False", reason="Tracked",
                     message="every tracking call reached its server", last_transition_time=now,
                     observed_generation=generation)
