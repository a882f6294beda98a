"""The operator enforces the tenancy rules itself (the webhook can be off):
a refused pipeline ends Failed naming the field, with nothing written or
sent; RayJob pods mount their namespace's folder only; the Ray client
carries its own token; RBAC grants only the verbs the code calls; the
chart passes the allow-list to the operator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.chart_render import one, render
from trainpipe_operator.controller.reconcile import Reconciler
from trainpipe_operator.controller.settings import OperatorSettings
from trainpipe_operator.kuberay.rayjob import build_rayjob
from trainpipe_operator.pipeline.launchers import auth_headers
from trainpipe_operator.rbac import operator_rules
from trainpipe_operator.spec.pipeline import ResourcesSpec


def body(namespace: str = "team-a", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
            "metadata": {"name": "p", "namespace": namespace, "uid": "0123456789ab", "generation": 1},
            "spec": {"data": {"source": "builtin:digits"}, **spec}}


def reconciler(tmp_path: Path, **settings: Any) -> Reconciler:
    # No API clients: a refusal must not need (or call) any.
    return Reconciler(OperatorSettings(artifact_root=tmp_path, **settings), core_api=None, custom_api=None)


@pytest.mark.parametrize(("spec", "field"), [
    ({"data": {"source": "../team-b/data"}, "runtime": {"type": "rayjob"}}, "spec.data.source"),
    ({"data": {"source": "/etc"}, "runtime": {"type": "rayjob"}}, "spec.data.source"),
    ({"model": {"pretrained": "file:///root/.ssh/id_rsa"}, "runtime": {"type": "rayjob"}}, "spec.model.pretrained"),
    ({"runtime": {"type": "ray", "ray": {"address": "http://attacker:8265", "tokenSecret": "s"}}},
     "spec.runtime.ray.address"),
])
def test_a_refused_pipeline_fails_naming_the_field_before_anything_is_written(
        tmp_path: Path, spec: dict, field: str) -> None:
    result = reconciler(tmp_path).reconcile(body(**spec))
    assert result.status.phase == "Failed"
    assert result.status.message.startswith(f"refused: {field}: ")
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "Refused")]
    assert not (tmp_path / "team-a").exists()  # no run directory, no job config
    again = reconciler(tmp_path).reconcile({**body(**spec), "status": result.status.model_dump(by_alias=True)})
    assert again.status.phase == "Failed" and again.events == []  # terminal: no retry loop


def test_a_symbolic_link_to_another_teams_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "team-b" / "data").mkdir(parents=True)
    (tmp_path / "team-a").mkdir()
    (tmp_path / "team-a" / "data").symlink_to(tmp_path / "team-b" / "data")
    result = reconciler(tmp_path).reconcile(body(data={"source": "data"}, runtime={"type": "rayjob"}))
    assert result.status.message.startswith("refused: spec.data.source: 'data' leads through a symbolic link")


def test_paths_resolve_under_the_namespaces_root_for_the_jobs(tmp_path: Path) -> None:
    rec = reconciler(tmp_path)
    from trainpipe_operator.spec.pipeline import TrainingPipeline

    pipeline = TrainingPipeline.model_validate(body(data={"source": "./sets/jersey"},
                                                    model={"pretrained": "w/r18.pt"}))
    resolved = rec._with_resolved_paths(pipeline, "team-a")
    assert resolved.spec.data.source == f"{tmp_path}/team-a/sets/jersey"
    assert resolved.spec.model.pretrained == f"{tmp_path}/team-a/w/r18.pt"
    assert pipeline.spec.data.source == "./sets/jersey"  # the pinned spec stays as written


def test_rayjob_pods_mount_only_their_namespaces_folder(tmp_path: Path) -> None:
    rec = reconciler(tmp_path)
    from trainpipe_operator.spec.pipeline import TrainingPipeline

    launcher = rec._launcher(TrainingPipeline.model_validate(body(runtime={"type": "rayjob"})))
    assert launcher.storage == {"claimName": "trainpipe-artifacts", "mountPath": f"{tmp_path}/team-a",
                                "subPath": "team-a"}
    job = build_rayjob("j", "team-a", {"apiVersion": "v1", "kind": "K", "name": "p", "uid": "u"}, "img",
                       f"{tmp_path}/team-a/p-01234567/job.yaml", ResourcesSpec(), launcher.storage, None)
    for group in [job["spec"]["rayClusterSpec"]["headGroupSpec"], *job["spec"]["rayClusterSpec"]["workerGroupSpecs"]]:
        mounts = group["template"]["spec"]["containers"][0]["volumeMounts"]
        artifacts = [m for m in mounts if m["mountPath"].startswith(str(tmp_path))]
        assert artifacts == [{"name": artifacts[0]["name"], "mountPath": f"{tmp_path}/team-a", "subPath": "team-a"}]


def test_the_ray_client_carries_its_own_token_and_nothing_else() -> None:
    before = {k: v for k, v in os.environ.items() if k.startswith("RAY_AUTH")}
    assert auth_headers("tok") == {"Authorization": "Bearer tok"}
    # No token: an explicit empty header, so Ray's client adds no ambient one.
    assert auth_headers(None) == {"Authorization": ""}
    assert {k: v for k, v in os.environ.items() if k.startswith("RAY_AUTH")} == before


def test_rbac_grants_only_the_verbs_the_code_calls() -> None:
    rules = {(group, resource): set(rule["verbs"]) for rule in operator_rules("all")
             for group in rule["apiGroups"] for resource in rule["resources"]}
    # rayjob_launcher's calls, and list: the TTL cleanup finds a pipeline's RayJobs by label
    assert rules[("ray.io", "rayjobs")] == {"get", "create", "delete", "list"}
    assert rules[("trainpipe.io", "trainingpipelines")] == {"get", "list", "watch", "patch"}  # kopf never PUTs
    assert rules[("trainpipe.io", "trainingpipelines/status")] == {"get", "patch"}
    assert rules[("", "events")] == {"create"}
    assert rules[("", "secrets")] == {"get"}
    assert not any("update" in verbs or "*" in verbs for verbs in rules.values())


def _allowed_env(docs: list[dict]) -> str:
    env = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    return next(e["value"] for e in env if e["name"] == "TRAINPIPE_RAY_ALLOWED_ADDRESSES")


def test_the_chart_passes_the_ray_allow_list() -> None:
    assert _allowed_env(render()) == ""  # default: rayjob only
    with_cluster = _allowed_env(render(sets={"rayCluster.enabled": "true"}, release="tp", namespace="ml"))
    assert with_cluster == "http://tp-trainpipe-ray-head-svc:8265,http://tp-trainpipe-ray-head-svc.ml.svc:8265"
    listed = _allowed_env(render(sets={"operator.rayAllowedAddresses[0]": "http://ray.team-a.svc:8265"}))
    assert listed == "http://ray.team-a.svc:8265"


def test_a_failed_jobs_output_never_reaches_status() -> None:
    """Ray (and KubeRay) append a failed job's last output to its message;
    the status keeps the sentence, the output stays in job_output.log."""
    from trainpipe_operator.pipeline.launchers import status_message

    ray = ("Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\n"
           "team-b secret line 1\nteam-b secret line 2\n")
    assert status_message(ray) == ("Job entrypoint command failed with exit code 1 (its output: job_output.log "
                                   "in the phase's run directory)")
    assert status_message("DeadlineExceeded: first line\nsecond line") == "DeadlineExceeded: first line"
    assert status_message(None) == ""
