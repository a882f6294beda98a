"""The tasks beyond classification through the operator (issue 12: "run
every phase locally AND through the operator"): the VAE on builtin:tones and
a task defined outside trainpipe (examples/custom-task), applied on the real
API server, run by `trainpipe operator` (the chart's ServiceAccount) on a
real Ray head, each to Succeeded with its status matching its run directory;
and a `task: custom` without `customTask` refused at admission (and, with no
webhook installed, failed by the operator), naming the field.

Both pipelines here meet their target at Baseline and go straight to
Finalization: each Ray job costs half a minute of start-up on 2 CPU cores
whatever it trains, and Diagnostics and Optimization on the operator are
test_operator.py's (the digits example). The local runs of the same tasks,
through every phase: test_tasks_local.py, test_tasks_local_collapse_custom.py."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import yaml

from trainpipe_operator.devcluster import RayHead
from trainpipe_trainer.contract.evidence import Evidence
from trainpipe_trainer.contract.results import ExportReport

from .operator_harness import (
    REPO,
    TOKEN_SECRET,
    Cluster,
    OperatorProcess,
    apply,
    install_webhook,
    kubectl,
    remove_webhook,
    wait_phase,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CUSTOM_TASK_DIR = REPO / "examples" / "custom-task"


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """This module's Ray head (it overrides conftest's), with
    examples/custom-task on its jobs' PYTHONPATH: how a platform installs a
    task's module in the trainer image. The operator never imports it."""
    pythonpath = os.pathsep.join(p for p in (str(CUSTOM_TASK_DIR), os.environ.get("PYTHONPATH", "")) if p)
    with RayHead(tmp_path_factory.mktemp("ray-head"), env={"PYTHONPATH": pythonpath}) as head:
        yield head


def on_ray(manifest: dict[str, Any], cluster: Cluster) -> dict[str, Any]:
    manifest["spec"]["runtime"] = {"type": "ray", "ray": {"address": cluster.ray_address,
                                                          "tokenSecret": TOKEN_SECRET}}
    return manifest


def tiny_vae(name: str) -> dict[str, Any]:
    """examples/tones-vae.yaml cut to a few minutes on 2 CPU cores: previews
    every epoch, 4 Griffin-Lim iterations, one prior sample, and a target
    the 3-epoch baseline meets (no optimization job)."""
    manifest = yaml.safe_load((REPO / "examples" / "tones-vae.yaml").read_text())
    manifest["metadata"]["name"] = name
    spec = manifest["spec"]
    spec["baseline"]["epochs"] = 3
    spec["optimization"]["maxIterations"] = 1
    spec["finalization"].update(epochs=3, patience=3)
    spec["vae"].update(previewEvery=1, griffinLimIters=4, priorSamples=1,
                       klAnneal={"schedule": "linear", "warmupEpochs": 2})
    spec["budget"]["maxDuration"] = "30m"
    spec["target"]["value"] = 1000
    return manifest


def check_status_matches_run_directory(status: dict[str, Any], run_dir: Path) -> None:
    """The same gates with the same checks and results, and every artifact there."""
    state = json.loads((run_dir / "state.json").read_text())
    assert status["gates"].keys() == state["gates"].keys()
    for key, gate in status["gates"].items():
        on_disk = json.loads((run_dir / state["artifacts"][f"{key}.gate"]).read_text())
        assert [(c["id"], c["result"]) for c in gate["checks"]] == [(c["id"], c["result"]) for c in on_disk["checks"]]
    for rel in status["artifacts"].values():
        assert (run_dir / rel).exists(), rel
    assert status["metrics"]["targetMetric"] == state["metrics"]["targetMetric"]


def results(status: dict[str, Any], gate: str) -> dict[str, str]:
    return {c["id"]: c["result"] for c in status["gates"][gate]["checks"]}


def test_a_custom_task_without_custom_task_is_refused_naming_the_field(cluster: Cluster, tmp_path: Path) -> None:
    manifest = yaml.safe_load((CUSTOM_TASK_DIR / "pipeline.yaml").read_text())
    manifest["metadata"]["name"] = "no-custom-task"
    del manifest["spec"]["customTask"]
    manifest = on_ray(manifest, cluster)

    # At admission: the operator's webhook, as the chart configures it.
    operator = OperatorProcess(cluster.operator_kubeconfig, cluster.artifact_root, tmp_path / "webhook",
                               webhook=True)
    operator.log_path.parent.mkdir()
    operator.start()
    try:
        install_webhook(cluster.admin, operator)
        try:
            result = kubectl(cluster.admin, "create", "-f", "-", input=yaml.safe_dump(manifest), check=False)
        finally:
            remove_webhook(cluster.admin)  # failurePolicy Fail: it would refuse everything once the operator stops
    finally:
        operator.stop()
    assert result.returncode != 0, result.stdout
    assert "denied the request" in result.stderr and "spec.customTask" in result.stderr, result.stderr
    assert kubectl(cluster.admin, "get", "tp", "no-custom-task", check=False).returncode != 0

    # Without the webhook the API server stores it (its schema cannot say
    # "required when task is custom"); the operator fails it, naming the field.
    operator = OperatorProcess(cluster.operator_kubeconfig, cluster.artifact_root, tmp_path).start()
    try:
        apply(cluster.admin, manifest)
        status = wait_phase(cluster, operator, "no-custom-task", ("Failed", "Succeeded"), timeout=120)["status"]
    finally:
        # While the operator runs: its finalizer holds the deletion until it has seen it.
        kubectl(cluster.admin, "delete", "tp", "no-custom-task", "--ignore-not-found", check=False)
        operator.stop()
    assert status["phase"] == "Failed" and "customTask" in status["message"], status
    assert not (status.get("job") or {}).get("submissionId"), status  # nothing was sent to Ray


def test_the_vae_on_ray_reaches_succeeded_with_its_checks_previews_and_decoder(
        cluster: Cluster, operator: OperatorProcess) -> None:
    apply(cluster.admin, on_ray(tiny_vae("tones-vae"), cluster))
    obj = wait_phase(cluster, operator, "tones-vae", ("Succeeded", "Failed"), timeout=1800)
    status = obj["status"]
    assert status["phase"] == "Succeeded", (status.get("message"), operator.log_tail())
    run_dir = cluster.run_dir("tones-vae")
    check_status_matches_run_directory(status, run_dir)

    phases = [d["phase"] for d in status["decisions"]]
    assert phases[:3] == ["Pending", "Planning", "Baseline"] and phases[-1] == "Finalization", phases
    assert status["metrics"]["targetMetric"] == "val_recon"
    baseline = results(status, "baseline")
    for check_id in ("posterior-collapse", "recon-decreased", "previews"):
        assert baseline.get(check_id) == "pass", (check_id, baseline)
    finalization = results(status, "finalization")
    for check_id in ("test-evaluated", "exported", "export-parity"):
        assert finalization.get(check_id) == "pass", (check_id, finalization)

    evidence = Evidence.read(run_dir / "02_baseline/evidence.json")
    assert evidence.task == "vae" and evidence.previews, "no previews listed"
    for preview in evidence.previews:
        wave, rate = sf.read(run_dir / "02_baseline" / preview.wav)
        assert rate == 16000 and len(wave) == 16000
    export = ExportReport.read(run_dir / "05_finalization/export.json")
    assert export.ok and "decoder" in export.parts
    assert (run_dir / "05_finalization/decoder.onnx").exists()
    assert status["job"]["submissionId"].startswith(f"tones-vae-{obj['metadata']['uid']}")
    table = kubectl(cluster.admin, "get", "tp", "tones-vae").stdout
    assert "val_recon" in table.splitlines()[1], table  # the TargetMetric column


def test_a_task_defined_outside_trainpipe_on_ray_reaches_succeeded(
        cluster: Cluster, operator: OperatorProcess) -> None:
    # The data goes where the tenancy rules let the pipeline read: its
    # namespace's folder of the artifact store (a relative source is under it).
    data = cluster.artifact_root / "default" / "custom-task" / "regression.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CUSTOM_TASK_DIR / "regression.csv", data)
    manifest = yaml.safe_load((CUSTOM_TASK_DIR / "pipeline.yaml").read_text())
    manifest["spec"]["data"]["source"] = "custom-task/regression.csv"
    manifest["spec"]["target"]["value"] = 0.1  # met at Baseline (val_mse 0.056): no optimization job
    apply(cluster.admin, on_ray(manifest, cluster))

    obj = wait_phase(cluster, operator, "regression", ("Succeeded", "Failed"), timeout=1200)
    status = obj["status"]
    assert status["phase"] == "Succeeded", (status.get("message"), operator.log_tail())
    run_dir = cluster.run_dir("regression")
    check_status_matches_run_directory(status, run_dir)
    assert status["metrics"]["targetMetric"] == "val_mse"
    assert results(status, "finalization")["target-met-on-test"] in ("pass", "warn")
    evidence = Evidence.read(run_dir / "02_baseline/evidence.json")
    assert evidence.task == "custom"
    # The job read the copy in the namespace's folder, by its absolute path.
    job = yaml.safe_load((run_dir / "02_baseline" / "job.yaml").read_text())
    assert job["data"]["source"] == str(data), job["data"]
    assert ExportReport.read(run_dir / "05_finalization/export.json").ok
