"""Approval as a Kubernetes permission, and the spec rules, through the
operator's admission webhook on the real API server (RBAC on): the chart's
webhook configurations, the operator as the chart's ServiceAccount, people
as users the admin impersonates (the webhook sees the impersonated user)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from trainpipe_operator.admission.approval import (
    APPROVE_ANNOTATION,
    LEGACY_ANNOTATION,
    RECORD_ANNOTATION,
)

from .operator_harness import (
    REPO,
    TOKEN_SECRET,
    Cluster,
    OperatorProcess,
    apply,
    get,
    install_webhook,
    kubectl,
    phase_of,
    pipeline_manifest,
    remove_webhook,
    wait_for,
    wait_phase,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APPROVER, EDITOR, STATUS_WRITER = "alice", "bob", "mallory"


@pytest.fixture(scope="module")
def webhook_operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator serving its webhook, the chart's configurations pointing
    at it, and the people: alice by examples/approver-rbac.yaml, bob who may
    edit pipelines but not approve, mallory who may also write their status."""
    operator = OperatorProcess(cluster.operator_kubeconfig, cluster.artifact_root,
                               tmp_path_factory.mktemp("webhook-operator"), webhook=True).start()
    kubectl(cluster.admin, "apply", "-n", "default", "-f", str(REPO / "examples" / "approver-rbac.yaml"))
    apply(cluster.admin, people_rbac())
    install_webhook(cluster.admin, operator)
    try:
        yield operator
    finally:
        # failurePolicy Fail: with the operator gone, the configuration would
        # refuse every later module's pipelines.
        remove_webhook(cluster.admin)
        operator.stop()


def people_rbac() -> list[dict[str, Any]]:
    def role(name: str, rules: list[dict[str, Any]], user: str) -> list[dict[str, Any]]:
        meta = {"name": name, "namespace": "default"}
        return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": rules},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}]

    edit = {"apiGroups": ["trainpipe.io"], "resources": ["trainingpipelines"],
            "verbs": ["get", "list", "watch", "create", "patch", "update"]}
    status = {"apiGroups": ["trainpipe.io"], "resources": ["trainingpipelines/status"], "verbs": ["get", "patch"]}
    return role("pipeline-editor", [edit], EDITOR) + role("status-writer", [edit, status], STATUS_WRITER)


def as_user(cluster: Cluster, user: str, *args: str, input: str | None = None) -> Any:
    return kubectl(cluster.admin, "--as", user, "--as-group", "system:authenticated", *args, input=input,
                   check=False)


def approve(cluster: Cluster, user: str, name: str, run_id: str) -> Any:
    return as_user(cluster, user, "annotate", "tp", name, "-n", "default", f"{APPROVE_ANNOTATION}={run_id}")


def refused(result: Any, *fragments: str) -> str:
    assert result.returncode != 0, f"not refused: {result.stdout}"
    assert "denied the request" in result.stderr, result.stderr  # by the webhook, not by RBAC
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return str(result.stderr)


def test_an_approval_in_the_manifest_at_creation_is_refused(cluster: Cluster,
                                                            webhook_operator: OperatorProcess) -> None:
    for annotation, value in ((APPROVE_ANNOTATION, "anything"), (LEGACY_ANNOTATION, "true"),
                              (RECORD_ANNOTATION, json.dumps({"user": APPROVER}))):
        manifest = pipeline_manifest("born-approved", cluster.ray_address, TOKEN_SECRET, approval={"required": True})
        manifest["metadata"]["annotations"] = {annotation: value}
        # Even by a cluster admin (who may approve anything).
        refused(kubectl(cluster.admin, "create", "-n", "default", "-f", "-", input=yaml.safe_dump(manifest),
                        check=False), "born-approved", annotation)
    assert kubectl(cluster.admin, "get", "tp", "born-approved", check=False).returncode != 0


def test_spec_rules_refuse_at_admission_naming_the_field(cluster: Cluster,
                                                         webhook_operator: OperatorProcess) -> None:
    cases = [({"runtime": {"type": "local"}}, "spec.runtime.type: 'local'"),
             ({"data": {"split": {"train": 0.5, "val": 0.1, "test": 0.1}}}, "spec.data.split: train + val + test"),
             ({"gates": {"gpuUtilWarn": 90, "gpuUtilMin": 50}}, "spec.gates: gpuUtilWarn (90)"),
             ({"runtime": {"type": "rayjob", "ray": {"address": cluster.ray_address}}},
              "spec.runtime.ray.address: only read when")]
    for spec, message in cases:
        manifest = pipeline_manifest("bad-spec", cluster.ray_address, TOKEN_SECRET)
        manifest["spec"] = {**manifest["spec"], **spec}
        refused(kubectl(cluster.admin, "create", "-f", "-", input=yaml.safe_dump(manifest), check=False), message)
    assert kubectl(cluster.admin, "get", "tp", "bad-spec", check=False).returncode != 0


def test_only_a_person_allowed_to_approve_approves_this_run_after_its_results_exist(
        cluster: Cluster, webhook_operator: OperatorProcess) -> None:
    name = "approval"
    manifest = pipeline_manifest(name, cluster.ray_address, TOKEN_SECRET, approval={"required": True})
    apply(cluster.admin, manifest)
    started = wait_for("the pipeline started", lambda: (get(cluster.admin, name).get("status") or {}).get("runId")
                       and get(cluster.admin, name), timeout=120)
    run_id = started["status"]["runId"]

    # Before the results exist: refused, even for a person allowed to approve.
    if phase_of(cluster, name) != "AwaitingApproval":
        refused(approve(cluster, APPROVER, name, run_id), "not AwaitingApproval")
    # Editing a pipeline never approves it (and a running one keeps its spec).
    apply(cluster.admin, pipeline_manifest(name, cluster.ray_address, TOKEN_SECRET, approval={"required": True},
                                           baseline={"epochs": 3}))
    obj = wait_phase(cluster, webhook_operator, name, ("AwaitingApproval", "Failed"), timeout=600)
    status = obj["status"]
    assert status["phase"] == "AwaitingApproval", status.get("message")
    spec_applied = next(c for c in status["conditions"] if c["type"] == "SpecApplied")
    assert spec_applied["status"] == "False" and spec_applied["reason"] == "ChangedWhileRunning"
    baseline_job = yaml.safe_load((cluster.run_dir(name) / "02_baseline" / "job.yaml").read_text())
    assert baseline_job["train"]["epochs"] == 2  # the spec it started with
    assert f"{APPROVE_ANNOTATION}={run_id}" in status["message"], status["message"]

    # Who may not approve, or not this: refused, and nothing recorded.
    refused(approve(cluster, EDITOR, name, run_id), f"user '{EDITOR}' may not approve", "verb 'approve'")
    refused(approve(cluster, APPROVER, name, "another-run"), "names run 'another-run'", run_id)
    forged = json.dumps({"user": APPROVER, "user_uid": "", "run_id": run_id, "time": "2026-01-01T00:00:00+00:00",
                         "namespace": "default", "name": name, "object_uid": obj["metadata"]["uid"],
                         "signature": "0" * 64})
    refused(as_user(cluster, APPROVER, "annotate", "tp", name, f"{RECORD_ANNOTATION}={forged}"),
            "written by the trainpipe webhook only")
    refused(as_user(cluster, APPROVER, "annotate", "tp", name, f"{LEGACY_ANNOTATION}=true"), "no longer approves")
    refused(as_user(cluster, STATUS_WRITER, "patch", "tp", name, "--subresource=status", "--type=merge", "-p",
                    json.dumps({"status": {"phase": "Succeeded", "approval": {"by": STATUS_WRITER, "at": "now",
                                                                              "runId": run_id}}})),
            "written by the trainpipe operator")
    obj = get(cluster.admin, name)
    assert obj["status"]["phase"] == "AwaitingApproval" and "approval" not in obj["status"]
    assert RECORD_ANNOTATION not in obj["metadata"].get("annotations", {})

    # The person the RoleBinding names approves this run: recorded by name.
    result = approve(cluster, APPROVER, name, run_id)
    assert result.returncode == 0, result.stderr
    annotations = get(cluster.admin, name)["metadata"]["annotations"]
    assert APPROVE_ANNOTATION not in annotations  # consumed by the webhook
    record = json.loads(annotations[RECORD_ANNOTATION])
    assert (record["user"], record["run_id"]) == (APPROVER, run_id)
    obj = wait_phase(cluster, webhook_operator, name, ("Succeeded", "Failed"), timeout=120)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["approval"]["by"] == APPROVER and status["approval"]["runId"] == run_id
    assert status["approval"]["at"] == record["time"]
    check = next(c for c in status["gates"]["finalization"]["checks"] if c["id"] == "approval")
    assert check["result"] == "pass"
    assert status["decisions"][-1]["decision"] == "approved" and APPROVER in status["decisions"][-1]["reason"]
    approval_file = json.loads((cluster.run_dir(name) / "approval.json").read_text())
    assert approval_file["by"] == APPROVER
    kubectl(cluster.admin, "delete", "tp", name, "--timeout=120s", check=False)


def test_the_operator_writes_status_through_its_own_webhook(cluster: Cluster,
                                                            webhook_operator: OperatorProcess) -> None:
    """The status guard lets the operator's own user through: a new pipeline
    gets its first status, and deletion (finalizer removal) is not refused."""
    name = "own-status"
    apply(cluster.admin, pipeline_manifest(name, cluster.ray_address, TOKEN_SECRET))
    wait_for("the first status", lambda: phase_of(cluster, name) != "", timeout=60)
    result = kubectl(cluster.admin, "delete", "tp", name, "--timeout=180s", check=False)
    assert result.returncode == 0, result.stderr + webhook_operator.log_tail()
    assert kubectl(cluster.admin, "get", "tp", name, check=False).returncode != 0


def test_the_example_grants_approve_and_nothing_on_status(cluster: Cluster,
                                                          webhook_operator: OperatorProcess) -> None:
    def can(user: str, *args: str) -> str:
        return kubectl(cluster.admin, "auth", "can-i", "--as", user, *args, "-n", "default",
                       check=False).stdout.strip()

    assert can(APPROVER, "approve", "trainingpipelines.trainpipe.io") == "yes"
    assert can(APPROVER, "patch", "trainingpipelines.trainpipe.io", "--subresource=status") == "no"
    assert can(STATUS_WRITER, "patch", "trainingpipelines.trainpipe.io", "--subresource=status") == "yes"
    assert can(EDITOR, "approve", "trainingpipelines.trainpipe.io") == "no"
