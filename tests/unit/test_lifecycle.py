"""spec.suspend, spec.runtime.queueName and spec.ttlSecondsAfterFinished:
validation, held time (not budget), the Kueue shape of a queued RayJob,
the conditions, and when the TTL cleanup runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from trainpipe_operator.controller import suspend
from trainpipe_operator.controller.conditions import build_conditions
from trainpipe_operator.controller.handlers import running
from trainpipe_operator.kuberay.queue import QUEUE_LABEL, kueue_problems, waiting_for_admission
from trainpipe_operator.kuberay.rayjob import build_rayjob
from trainpipe_operator.kuberay.schema import (
    crd_missing_reason,
    kuberay_crd_path,
    validate_against_kuberay,
)
from trainpipe_operator.lifecycle import hold, ttl
from trainpipe_operator.spec.lifecycle_status import CleanupStatus, SuspensionStatus
from trainpipe_operator.spec.pipeline import ResourcesSpec, TrainingPipeline
from trainpipe_operator.spec.status import PipelineStatus
from trainpipe_trainer.contract.validation_errors import format_validation_error

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
OWNER = {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline", "name": "digits", "uid": "u-1"}
STORAGE = {"claimName": "trainpipe-artifacts", "mountPath": "/artifacts"}


def manifest(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline", "metadata": {"name": "digits"},
            "spec": {"data": {"source": "builtin:digits"}, **spec}}


def errors(**spec: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        TrainingPipeline.model_validate(manifest(**spec))
    return format_validation_error(caught.value, source="digits.yaml")


# ----------------------------------------------------------------- validation
def test_the_new_fields_default_to_running_kept_and_unqueued() -> None:
    spec = TrainingPipeline.model_validate(manifest()).spec
    assert (spec.suspend, spec.ttl_seconds_after_finished, spec.runtime.queue_name) == (False, None, None)
    spec = TrainingPipeline.model_validate(manifest(suspend=True, ttlSecondsAfterFinished=0,
                                                    runtime={"type": "rayjob", "queueName": "team-a"})).spec
    assert (spec.suspend, spec.ttl_seconds_after_finished, spec.runtime.queue_name) == (True, 0, "team-a")


def test_a_negative_ttl_is_refused_naming_the_field_and_what_is_allowed() -> None:
    (line,) = errors(ttlSecondsAfterFinished=-5)
    assert "spec.ttlSecondsAfterFinished" in line and "-5 is negative" in line and ">= 0" in line


@pytest.mark.parametrize("name", ["Team_A", "team.a", "-team", "a" * 64])
def test_a_queue_name_that_is_not_a_dns_label_is_refused_naming_the_field(name: str) -> None:
    (line,) = errors(runtime={"type": "rayjob", "queueName": name})
    assert "spec.runtime.queueName" in line
    assert "DNS-1123 label" in line or "63 characters" in line


def test_changing_the_live_fields_is_not_a_change_of_the_pinned_spec() -> None:
    base = TrainingPipeline.model_validate(manifest()).spec
    live = base.model_copy(update={"suspend": True, "ttl_seconds_after_finished": 60})
    assert suspend.pinned_part(base) == suspend.pinned_part(live)
    assert suspend.pinned_part(base) != suspend.pinned_part(base.model_copy(update={"seed": 7}))


# ----------------------------------------------------------------- held time
def test_held_time_is_not_budget() -> None:
    status = PipelineStatus(phase="Baseline", started_at=T0.isoformat())
    hold.enter(status, "Suspending", T0 + timedelta(minutes=10))
    assert hold.held_seconds(status, T0 + timedelta(minutes=11)) == 0  # the job still trains
    hold.enter(status, "Suspended", T0 + timedelta(minutes=11))
    assert hold.held_seconds(status, T0 + timedelta(minutes=41)) == 1800
    hold.leave(status, T0 + timedelta(minutes=41))
    hold.enter(status, "WaitingForAdmission", T0 + timedelta(minutes=50))
    hold.leave(status, T0 + timedelta(minutes=55))
    assert status.suspension is not None and status.suspension.held_seconds == 2100
    assert hold.effective_start(status, T0 + timedelta(hours=2)) == (T0 + timedelta(seconds=2100)).isoformat()


def test_a_hold_ends_where_another_begins_and_counts_once() -> None:
    status = PipelineStatus(phase="Baseline", started_at=T0.isoformat())
    hold.enter(status, "WaitingForAdmission", T0)
    hold.enter(status, "WaitingForAdmission", T0 + timedelta(seconds=30))  # still waiting: keeps its start
    hold.enter(status, "Suspended", T0 + timedelta(seconds=60))
    assert hold.held_seconds(status, T0 + timedelta(seconds=90)) == 90


def test_conditions_say_where_the_pipeline_is_held() -> None:
    status = PipelineStatus(phase="Baseline")
    status.suspension = SuspensionStatus(state="Suspended", phase="Baseline", epoch=3, since=T0.isoformat())
    (held,) = [c for c in build_conditions(status, 2, T0.isoformat()) if c.type == "Suspended"]
    assert (held.status, held.reason) == ("True", "Suspended") and "Baseline at epoch 3" in held.message
    status.suspension = SuspensionStatus(state="WaitingForAdmission", job="j-a1", since=T0.isoformat())
    types = {c.type: c for c in build_conditions(status, 2, T0.isoformat())}
    assert (types["Admitted"].status, types["Admitted"].reason) == ("False", "WaitingForAdmission")
    assert "Suspended" not in types
    assert not [c for c in build_conditions(PipelineStatus(), 1, T0.isoformat()) if c.type in ("Suspended", "Admitted")]


def test_the_stopped_epoch_is_the_last_one_the_job_recorded(tmp_path: Path) -> None:
    assert hold.stopped_epoch(tmp_path) is None
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.json").write_text('{"epochs": [{"epoch": 1}, {"epoch": 2}]}')
    assert hold.stopped_epoch(tmp_path) == 2
    (tmp_path / "evidence.json").write_text('{"epochs": [{"num": 1}, {"num": 2}, {"num": 3}]}')
    assert hold.stopped_epoch(tmp_path) == 3


def test_resuming_waits_until_the_stopped_job_has_ended() -> None:
    spec = TrainingPipeline.model_validate(manifest()).spec
    status = PipelineStatus(phase="Baseline", suspension=SuspensionStatus(state="Suspending", job="j-a1"))
    assert suspend.holding(spec, status)  # spec.suspend is false again, but the job is still stopping
    status.suspension = SuspensionStatus(state="Suspended")
    assert not suspend.holding(spec, status)
    assert suspend.holding(spec.model_copy(update={"suspend": True}), status)
    assert not suspend.holding(spec.model_copy(update={"suspend": True}), PipelineStatus(phase="Succeeded"))


# ----------------------------------------------------------------- Kueue
def queued(queue: str | None) -> dict[str, Any]:
    return build_rayjob("digits-baseline-a1", "ml", OWNER, "trainpipe-trainer:0.1", "/artifacts/job.yaml",
                        ResourcesSpec(workers=2), STORAGE, None, queue_name=queue)


def test_a_queued_rayjob_has_the_shape_kueue_requires() -> None:
    job = queued("team-a")
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a"
    assert job["spec"]["suspend"] is True and job["spec"]["shutdownAfterJobFinishes"] is True
    assert kueue_problems(job) == []
    assert waiting_for_admission(job)
    job["spec"]["suspend"] = False  # what Kueue does when it admits the job
    assert not waiting_for_admission(job)


def test_without_a_queue_the_rayjob_starts_at_once() -> None:
    job = queued(None)
    assert QUEUE_LABEL not in job["metadata"]["labels"] and "suspend" not in job["spec"]
    assert not waiting_for_admission(job)
    assert kueue_problems(job)[0].startswith("metadata.labels")


def test_what_kueue_would_refuse_is_named() -> None:
    job = queued("team-a")
    job["spec"]["shutdownAfterJobFinishes"] = False
    job["spec"]["clusterSelector"] = {"ray.io/cluster": "shared"}
    problems = kueue_problems(job)
    assert [p.split(":")[0] for p in problems] == ["spec.shutdownAfterJobFinishes", "spec.clusterSelector"]


def test_a_queued_rayjob_is_valid_against_kuberays_crd() -> None:
    path = kuberay_crd_path()
    if path is None:
        pytest.skip(crd_missing_reason())
    assert validate_against_kuberay(queued("team-a"), path) == []


# ----------------------------------------------------------------- TTL
def finished(when: datetime = T0) -> PipelineStatus:
    return PipelineStatus(phase="Succeeded", finished_at=when.isoformat(), run_id="r1")


def test_the_cleanup_waits_for_the_ttl_then_removes_once() -> None:
    calls: list[int] = []

    def remove() -> tuple[list[str], list[str]]:
        calls.append(1)
        return ["RayJob ml/digits-a1"], []

    status = finished()
    assert ttl.clean(status, 60, T0 + timedelta(seconds=59), remove) == [] and calls == []
    assert status.cleanup is not None and status.cleanup.due_at == (T0 + timedelta(seconds=60)).isoformat()
    (note,) = ttl.clean(status, 60, T0 + timedelta(seconds=60), remove)
    assert note[1] == "CleanedUp" and "RayJob ml/digits-a1" in note[2]
    assert status.cleanup.done_at and status.cleanup.removed == ["RayJob ml/digits-a1"]
    assert ttl.clean(status, 60, T0 + timedelta(hours=1), remove) == [] and calls == [1]


def test_a_job_still_stopping_or_a_failure_is_retried() -> None:
    status = finished()
    assert ttl.clean(status, 0, T0, lambda: ([], ["j-a1"])) == []
    assert status.cleanup is not None and not status.cleanup.done_at and "j-a1" in status.cleanup.message

    def broken() -> tuple[list[str], list[str]]:
        raise RuntimeError("connection refused")

    assert ttl.clean(status, 0, T0, broken) == []
    assert "connection refused" in status.cleanup.message and not status.cleanup.done_at
    assert ttl.clean(status, 0, T0, lambda: (["Ray job j-a1"], []))
    assert status.cleanup.done_at


def test_the_poll_timer_keeps_a_finished_pipeline_until_its_cleanup() -> None:
    done = finished().dump()
    assert not running(done, {})
    assert running(done, {"ttlSecondsAfterFinished": 30})
    cleaned = {**done, "cleanup": CleanupStatus(done_at=T0.isoformat()).dump()}
    assert not running(cleaned, {"ttlSecondsAfterFinished": 30})
    assert running({"phase": "Baseline"}, {})


def test_a_cleared_status_field_is_deleted_by_the_status_patch() -> None:
    from trainpipe_operator.controller.status_patch import merge_patch

    stored = {"phase": "Planning", "suspension": {"state": "WaitingForAdmission", "since": "t", "heldSeconds": 0}}
    new = {"phase": "Planning", "suspension": {"heldSeconds": 12.0}}
    # What did not change (the phase) is not sent.
    assert merge_patch(stored, new) == {"suspension": {"state": None, "since": None, "heldSeconds": 12.0}}
