"""The admission webhook's pure parts: the spec rules, the approval's
checks, the signed record, and the handlers with the authorizer's answer
given (the real SubjectAccessReview is in tests/integration/test_approval.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, get_args

import kopf
import pytest

from trainpipe_operator.admission import approval, rules
from trainpipe_operator.admission.approval import (
    APPROVE_ANNOTATION,
    LEGACY_ANNOTATION,
    RECORD_ANNOTATION,
    ApprovalError,
    ApprovalKey,
    ApprovalRecord,
)
from trainpipe_operator.admission.webhook import Webhook
from trainpipe_operator.controller.settings import OperatorSettings
from trainpipe_operator.spec.pipeline import PipelineSpec

RAY = {"type": "ray", "ray": {"address": "http://ray:8265"}}
DATA = {"source": "builtin:digits"}


def settings(**kw: Any) -> OperatorSettings:
    s = OperatorSettings()
    s.ray_address = None
    s.ray_allowed_addresses = [RAY["ray"]["address"]]
    s.operator_user = "system:serviceaccount:trainpipe-system:trainpipe"
    for key, value in kw.items():
        setattr(s, key, value)
    return s


# ------------------------------------------------------------------ rules

@pytest.mark.parametrize(("spec", "message"), [
    ({"runtime": {"type": "local"}}, "spec.runtime.type: 'local' runs with `trainpipe run`"),
    ({}, "spec.runtime.type: 'local'"),  # the default runtime is local
    ({"runtime": {"type": "ray"}}, "spec.runtime.ray.address: empty, and the operator has no default"),
    ({"runtime": {"type": "rayjob", "ray": {"tokenSecret": "t"}}}, "spec.runtime.ray.tokenSecret: only read when"),
    ({"runtime": RAY, "data": {"split": {"train": 0.5, "val": 0.1, "test": 0.1}}},
     "spec.data.split: train + val + test must sum to 1.0"),
    ({"runtime": RAY, "gates": {"gpuUtilWarn": 90, "gpuUtilMin": 50}}, "spec.gates: gpuUtilWarn (90) must not exceed"),
    ({"runtime": RAY, "target": {"metric": "val_acc", "value": 1.5}}, "spec.target: value: a target for val_acc"),
    ({"runtime": RAY, "budget": {"maxDuration": "0s"}}, "spec.budget.maxDuration: '0s' is zero"),
    ({"runtime": RAY, "task": "detection"}, "spec.task: 'detection' is not a task trainpipe runs"),
])
def test_a_rule_refuses_naming_the_field(spec: dict[str, Any], message: str) -> None:
    problems = rules.check_spec(spec, "team-a", settings())
    assert any(p.startswith(message) for p in problems), problems
    assert all(p.startswith("spec.") for p in problems), problems


@pytest.mark.parametrize("spec", [
    {"runtime": RAY, "data": DATA},
    {"runtime": {"type": "rayjob"}, "target": {"metric": "test_acc", "value": 0.8}, "data": DATA},
    {"runtime": {"type": "ray", "ray": {"tokenSecret": "t"}}, "data": DATA},  # the operator's default address
])
def test_a_sound_spec_passes_every_rule(spec: dict[str, Any]) -> None:
    assert rules.check_spec(spec, "team-a", settings(ray_address="http://default:8265")) == []


@pytest.mark.parametrize(("spec", "message"), [
    ({"runtime": RAY, "data": {"source": "../team-b/data"}}, "spec.data.source: "),
    ({"runtime": RAY, "data": {"source": "/srv/artifacts/team-b/data"}}, "spec.data.source: "),
    ({"runtime": RAY, "model": {"pretrained": "file:///etc/passwd"}}, "spec.model.pretrained: "),
    ({"runtime": {"type": "ray", "ray": {"address": "http://evil.example:8265"}}}, "spec.runtime.ray.address: "),
])
def test_the_webhook_refuses_what_crosses_the_tenancy_boundary(spec: dict[str, Any], message: str) -> None:
    problems = rules.check_spec(spec, "team-a", settings(artifact_root=Path("/srv/artifacts")))
    assert [p for p in problems if p.startswith(message)], problems


def test_a_target_metric_the_task_does_not_produce_is_refused_with_the_allowed_ones() -> None:
    table = {"classification": ("val_acc", "val_loss", "test_acc"), "detection": ("map",)}
    original = rules.TASK_METRICS
    rules.TASK_METRICS = table
    try:
        problems = rules.target_metric_of_task({"task": "detection", "target": {"metric": "val_acc"}}, "ns", None)
    finally:
        rules.TASK_METRICS = original
    assert problems == ["spec.target.metric: 'val_acc' is not produced by task 'detection'; allowed: map"]


def test_every_task_has_its_metrics_and_every_target_metric_comes_from_a_task() -> None:
    from trainpipe_operator.tasks import BUILTIN

    assert set(rules.TASK_METRICS) == set(get_args(PipelineSpec.model_fields["task"].annotation))
    for task, catalog in BUILTIN.items():
        assert rules.TASK_METRICS[task] == catalog.targetable()
        for metric in catalog.targetable():  # and the spec accepts each of them
            source = "builtin:digits" if task == "classification" else "builtin:tones"
            spec = PipelineSpec.model_validate({"task": task, "data": {"source": source},
                                                "target": {"metric": metric, "value": 0.5}})
            assert spec.target.metric == metric


def test_a_rule_is_added_by_listing_it() -> None:
    def no_team_b(spec: dict[str, Any], namespace: str, s: Any) -> list[str]:
        return ["metadata.namespace: team-b may not train"] if namespace == "team-b" else []

    assert rules.check_spec({"runtime": RAY, "data": DATA}, "team-b", settings(), (*rules.RULES, no_team_b)) == [
        "metadata.namespace: team-b may not train"]


# --------------------------------------------------------------- approval

KEY = ApprovalKey(b"k" * 32)
AWAITING = {"phase": "AwaitingApproval", "runId": "run-1"}


def record(**kw: Any) -> ApprovalRecord:
    fields = {"user": "alice", "user_uid": "u1", "run_id": "run-1", "time": "2026-12-02T07:00:00+00:00",
              "namespace": "team-a", "name": "p", "object_uid": "uid-p"}
    return ApprovalRecord(**{**fields, **kw})


@pytest.mark.parametrize(("status", "requested", "fragment"), [
    (None, "run-1", "is in phase Pending, not AwaitingApproval"),
    ({"phase": "Finalization", "runId": "run-1"}, "run-1", "is in phase Finalization"),
    ({"phase": "Succeeded", "runId": "run-1"}, "run-1", "is in phase Succeeded"),
    (AWAITING, "run-0", "names run 'run-0', but TrainingPipeline team-a/p waits for the approval of run 'run-1'"),
])
def test_an_approval_before_the_results_or_for_another_run_is_refused(status: Any, requested: str,
                                                                      fragment: str) -> None:
    problem = approval.request_problem(status, requested, "team-a", "p")
    assert problem is not None and fragment in problem and problem.startswith(APPROVE_ANNOTATION)


def test_an_approval_of_the_run_awaiting_it_is_taken() -> None:
    assert approval.request_problem(AWAITING, "run-1", "team-a", "p") is None


def test_the_record_verifies_only_as_signed_for_its_object() -> None:
    signed = KEY.sign(record())
    assert KEY.verify(signed, "team-a", "p", "uid-p") == record()
    tampered = json.dumps({**json.loads(signed), "user": "mallory"})
    with pytest.raises(ApprovalError, match="does not carry this operator's signature"):
        KEY.verify(tampered, "team-a", "p", "uid-p")
    with pytest.raises(ApprovalError, match="signature"):
        ApprovalKey(b"x" * 32).verify(signed, "team-a", "p", "uid-p")  # another operator, or a restart
    with pytest.raises(ApprovalError, match="not this pipeline"):
        KEY.verify(signed, "team-a", "p", "uid-of-a-recreated-p")
    with pytest.raises(ApprovalError, match="not an approval record"):
        KEY.verify("yes", "team-a", "p", "uid-p")


def test_the_review_asks_for_the_users_own_identity_and_the_verb_approve() -> None:
    body = approval.subject_access_review({"username": "alice", "uid": "u1", "groups": ["team-a"],
                                           "extra": {"scopes": ("x",)}}, "team-a", "p")
    assert body["spec"] == {"user": "alice", "uid": "u1", "groups": ["team-a"], "extra": {"scopes": ["x"]},
                            "resourceAttributes": {"group": "trainpipe.io", "resource": "trainingpipelines",
                                                   "verb": "approve", "namespace": "team-a", "name": "p"}}


@pytest.mark.parametrize(("old", "new", "operation", "fragment"), [
    (None, {APPROVE_ANNOTATION: "run-1"}, "CREATE", "created unapproved"),
    (None, {RECORD_ANNOTATION: KEY.sign(record())}, "CREATE", "created unapproved"),
    ({}, {LEGACY_ANNOTATION: "true"}, "UPDATE", "no longer approves"),
    ({}, {RECORD_ANNOTATION: json.dumps({"user": "alice"})}, "UPDATE", "written by the trainpipe webhook only"),
    ({}, {RECORD_ANNOTATION: ApprovalKey(b"x" * 32).sign(record())}, "UPDATE", "written by the trainpipe webhook"),
    ({}, {APPROVE_ANNOTATION: "run-1"}, "UPDATE", "was not checked by the trainpipe mutating webhook"),
])
def test_the_validating_webhook_refuses_approvals_it_did_not_take(old: Any, new: dict[str, str], operation: str,
                                                                  fragment: str) -> None:
    problems = approval.annotation_problems(old, new, operation, KEY, "team-a", "p", "uid-p")
    assert any(fragment in p for p in problems), problems


def test_the_validating_webhook_lets_its_own_record_and_unchanged_annotations_through() -> None:
    signed = KEY.sign(record())
    assert approval.annotation_problems({}, {RECORD_ANNOTATION: signed}, "UPDATE", KEY, "team-a", "p", "uid-p") == []
    stale = {RECORD_ANNOTATION: "written while no webhook ran", LEGACY_ANNOTATION: "true"}
    assert approval.annotation_problems(stale, stale, "UPDATE", KEY, "team-a", "p", "uid-p") == []


@pytest.mark.parametrize(("annotations", "key", "run_id", "fragment"), [
    ({}, None, "run-1", "it is off (chart value webhook.enabled)"),
    ({RECORD_ANNOTATION: KEY.sign(record())}, None, "run-1", "it is off"),  # no webhook: nothing verifies
    ({LEGACY_ANNOTATION: "true"}, KEY, "run-1", "kubectl annotate tp p -n team-a trainpipe.io/approve=run-1"),
    ({RECORD_ANNOTATION: ApprovalKey(b"x" * 32).sign(record())}, KEY, "run-1", "approval not accepted"),
    ({RECORD_ANNOTATION: KEY.sign(record(run_id="run-0"))}, KEY, "run-1", "names run 'run-0', not 'run-1'"),
])
def test_the_operator_acts_only_on_a_record_it_signed_for_this_run(annotations: dict[str, str], key: Any,
                                                                   run_id: str, fragment: str) -> None:
    found, message = approval.verified_approval(annotations, key, "team-a", "p", "uid-p", run_id)
    assert found is None and fragment in message, message


def test_the_operator_acts_on_a_verified_record() -> None:
    found, message = approval.verified_approval({RECORD_ANNOTATION: KEY.sign(record())}, KEY, "team-a", "p",
                                                "uid-p", "run-1")
    assert found == record() and message == ""


# ---------------------------------------------------------------- handlers

def body(annotations: dict[str, str] | None = None, status: dict[str, Any] | None = None,
         spec: dict[str, Any] | None = None) -> kopf.Body:
    return kopf.Body({"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
                      "metadata": {"name": "p", "namespace": "team-a", "uid": "uid-p",
                                   "annotations": annotations or {}},
                      "spec": spec or {"runtime": RAY, "data": DATA}, "status": status or {}})


def webhook(allowed: bool, asked: list[dict[str, Any]] | None = None) -> Webhook:
    def review(request: dict[str, Any]) -> tuple[bool, str]:
        if asked is not None:
            asked.append(request)
        return allowed, "" if allowed else "no RBAC rule"

    return Webhook(settings(), KEY, review)


ALICE = {"username": "alice", "uid": "u1", "groups": ["team-a"]}


def take(hook: Webhook, old: kopf.Body, new: kopf.Body, operation: str = "UPDATE") -> dict[str, Any]:
    patch = kopf.Patch()
    asyncio.run(hook.take_approval(body=new, old=old, operation=operation, userinfo=ALICE, patch=patch))
    return dict(patch)


def test_an_allowed_approval_is_replaced_by_the_signed_record() -> None:
    asked: list[dict[str, Any]] = []
    patch = take(webhook(True, asked), body(status=AWAITING), body({APPROVE_ANNOTATION: "run-1"}, AWAITING))
    annotations = patch["metadata"]["annotations"]
    assert annotations[APPROVE_ANNOTATION] is None  # consumed
    found = KEY.verify(annotations[RECORD_ANNOTATION], "team-a", "p", "uid-p")
    assert (found.user, found.user_uid, found.run_id) == ("alice", "u1", "run-1")
    assert [a["spec"]["user"] for a in asked] == ["alice"]


@pytest.mark.parametrize(("allowed", "old_status", "annotations", "operation", "code", "fragment"), [
    (False, AWAITING, {APPROVE_ANNOTATION: "run-1"}, "UPDATE", 403, "user 'alice' may not approve"),
    (True, {"phase": "Baseline", "runId": "run-1"}, {APPROVE_ANNOTATION: "run-1"}, "UPDATE", 409, "not AwaitingApproval"),
    (True, AWAITING, {APPROVE_ANNOTATION: "run-2"}, "UPDATE", 409, "names run 'run-2'"),
    (True, None, {APPROVE_ANNOTATION: "run-1"}, "CREATE", 403, "an approval in the manifest is refused"),
])
def test_an_approval_is_refused(allowed: bool, old_status: Any, annotations: dict[str, str], operation: str,
                                code: int, fragment: str) -> None:
    with pytest.raises(kopf.AdmissionError) as refused:
        take(webhook(allowed), body(status=old_status), body(annotations, old_status), operation)
    assert refused.value.code == code and fragment in str(refused.value)


def test_an_update_that_approves_nothing_asks_nobody() -> None:
    asked: list[dict[str, Any]] = []
    same = {APPROVE_ANNOTATION: "run-1"}  # stored while no webhook ran: unchanged, not an approval now
    assert take(webhook(False, asked), body(same, AWAITING), body(same, AWAITING)) == {}
    assert take(webhook(False, asked), body(status=AWAITING), body({"x": "y"}, AWAITING)) == {}
    assert asked == []


def test_the_spec_rules_run_on_a_changed_spec_only() -> None:
    hook = webhook(True)
    local = {"runtime": {"type": "local"}}
    with pytest.raises(kopf.AdmissionError, match="spec.runtime.type"):
        asyncio.run(hook.validate(body=body(spec=local), old=None, operation="CREATE"))
    with pytest.raises(kopf.AdmissionError, match="spec.runtime.type"):
        asyncio.run(hook.validate(body=body(spec=local), old=body(), operation="UPDATE"))
    # An object the rules would refuse today is still updated (finalizer removal at deletion).
    asyncio.run(hook.validate(body=body({"x": "y"}, spec=local), old=body(spec=local), operation="UPDATE"))


def test_only_the_operator_and_cluster_admins_write_status() -> None:
    hook = webhook(True)
    old, new = body(status=AWAITING), body(status={**AWAITING, "phase": "Succeeded"})
    with pytest.raises(kopf.AdmissionError, match="written by the trainpipe operator") as refused:
        asyncio.run(hook.guard_status(body=new, old=old, userinfo={"username": "mallory", "groups": []}))
    assert refused.value.code == 403
    for user in ({"username": hook.settings.operator_user, "groups": []},
                 {"username": "admin", "groups": ["system:masters"]}):
        asyncio.run(hook.guard_status(body=new, old=old, userinfo=user))


# -------------------------------------------------------------- reconciler

def awaiting_pipeline(annotations: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
            "metadata": {"name": "p", "namespace": "team-a", "uid": "uid-p", "generation": 1,
                         "annotations": annotations},
            "spec": {"runtime": {"type": "rayjob"}, "approval": {"required": True}, "data": DATA},
            "status": {"phase": "AwaitingApproval", "runId": "run-1", "startedAt": "2026-12-02T07:00:00+00:00"}}


@pytest.mark.parametrize(("key", "annotations", "fragment"), [
    (None, {LEGACY_ANNOTATION: "true"}, "it is off (chart value webhook.enabled)"),
    (None, {RECORD_ANNOTATION: KEY.sign(record(namespace="team-a", name="p"))}, "it is off"),
    (KEY, {LEGACY_ANNOTATION: "true"}, "kubectl annotate tp p -n team-a trainpipe.io/approve=run-1"),
    (KEY, {RECORD_ANNOTATION: json.dumps({"user": "mallory", "run_id": "run-1"})}, "approval not accepted"),
])
def test_the_reconciler_moves_nothing_on_an_approval_the_webhook_did_not_sign(
        tmp_path: Any, key: Any, annotations: dict[str, str], fragment: str) -> None:
    from trainpipe_operator.controller.reconcile import Reconciler

    reconciler = Reconciler(settings(artifact_root=tmp_path), approval_key=key)
    result = reconciler.reconcile(awaiting_pipeline(annotations))
    assert result.status.phase == "AwaitingApproval" and result.status.approval is None
    assert fragment in result.status.message, result.status.message
    assert not (tmp_path / "team-a" / "p-uid-p" / "approval.json").exists()
