"""The runner's tracking against a real MLflow server (issue 13), read back
with MLflow's own client: the pipeline run and a folder's run with their
tags and params, the job's tracking config, the gate's outcome and reports,
the registered version with alias candidate, then champion with the
approver; a restarted runner finds the same runs and registers no second
version.

Finalization on files laid out as the trainer leaves them (the VAE's, from
test_vae_runner): no job is launched, nothing imports torch. The server is
real (tests/integration/mlflow_server.py), hence the integration mark."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.artifacts
import pytest
from mlflow import MlflowClient

from tests.integration.mlflow_server import MlflowServer, running_mlflow
from tests.unit.test_vae_runner import VAE_SPEC, _finalization_files
from trainpipe_operator.pipeline import rundir
from trainpipe_operator.pipeline.launchers import ProcessLauncher
from trainpipe_operator.pipeline.runner import LocalRunner
from trainpipe_operator.spec.pipeline import TrainingPipeline
from trainpipe_operator.spec.status import PipelineStatus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = "2026-01-01T00:00:00+00:00"
FOLDER = rundir.FINALIZATION


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with running_mlflow(tmp_path_factory.mktemp("mlflow")) as running:
        yield running


def _pipeline(uri: str, name: str, **spec: Any) -> TrainingPipeline:
    return TrainingPipeline.model_validate({
        "apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline", "metadata": {"name": name},
        "spec": {**VAE_SPEC, "tracking": {"mlflow": {"trackingUri": uri}}, **spec}})


def _runner(run_dir: Path, pipeline: TrainingPipeline) -> LocalRunner:
    return LocalRunner(pipeline, run_dir, ProcessLauncher(), "local")


def _finalized(runner: LocalRunner) -> PipelineStatus:
    """A run at Finalization: its job's tracking config asked for (as
    _run_job does), the gate evaluated, the runner's sync at the end of a step."""
    evidence = _finalization_files(runner)
    (runner.run_dir / FOLDER / "decoder.onnx").write_bytes(b"onnx")  # the exported file export.json names
    status = PipelineStatus(phase="Finalization", run_id="r1", started_at=T0)
    status.metrics.best_target_metric = 40.0
    assert runner.tracker is not None
    runner.tracker.sync(status)  # after Pending's start: the pipeline run
    config = runner.tracker.job_tracking(status, "Finalization", FOLDER, attempt=1, new_attempt=True)
    assert config is not None and config.mlflow is not None
    status.job.phase = "Finalization"
    runner._finalize_documents_and_gate(status, evidence)
    runner.tracker.sync(status)
    return status


def _tags(client: MlflowClient, run_id: str) -> dict[str, str]:
    return client.get_run(run_id).data.tags


def test_one_parent_a_child_per_folder_gate_records_and_the_registry(server: MlflowServer, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = _pipeline(server.uri, "tones", approval={"required": True}, baseline={"lr": 0.002})
    runner = _runner(tmp_path / "run", pipeline)
    status = _finalized(runner)
    assert status.phase == "AwaitingApproval"
    tracking = status.tracking
    assert tracking is not None and tracking.degraded is None and not tracking.pending
    client = MlflowClient(server.uri)

    experiment = client.get_experiment_by_name("tones")  # default: the pipeline's name (no namespace)
    assert experiment is not None and experiment.experiment_id == tracking.experiment_id
    runs = client.search_runs([experiment.experiment_id])
    assert tracking.mlflow_parent_run_id is not None
    parent = client.get_run(tracking.mlflow_parent_run_id)
    child_id = tracking.child_runs[FOLDER]
    assert {r.info.run_id for r in runs} == {parent.info.run_id, child_id}

    tags = parent.data.tags
    assert tags["trainpipe.pipeline"] == "tones" and tags["trainpipe.runId"] == "r1"
    assert parent.data.params["spec.baseline.lr"] == "0.002"
    assert parent.data.params["spec.task"] == "vae"
    assert parent.data.params["spec_hash"] == tags["trainpipe.specHash"]
    assert tags["gate.finalization.passed"] == "false"  # waiting for the approval check
    assert tags["gate.finalization.failed"] == "approval"
    assert tags["trainpipe.finalPhase"] == "AwaitingApproval" and parent.info.status == "FINISHED"

    child = _tags(client, child_id)
    assert child["mlflow.parentRunId"] == parent.info.run_id
    assert (child["trainpipe.phase"], child["trainpipe.jobKey"], child["trainpipe.attempt"],
            child["trainpipe.iteration"]) == ("Finalization", FOLDER, "1", "0")
    top = {a.path for a in client.list_artifacts(child_id)}
    assert {"gate.json", "gate_report.md", "test_results.md", "deployment_guide.md",
            "production_ready.md"} <= top
    model_files = {a.path for a in client.list_artifacts(child_id, "model")}
    assert {"model/decoder.onnx", "model/deployment_guide.md", "model/test_results.md"} <= model_files

    version = client.get_model_version_by_alias("tones", "candidate")
    assert version.version == tracking.model_version and version.run_id == child_id
    assert version.tags["pipeline"] == "tones" and version.tags["runId"] == "r1"
    assert version.tags["test_recon"] == "41.25"
    assert version.tags["evidenceDigest"].startswith("sha256:")
    assert "Deployment" in (version.description or "") or "deploy" in (version.description or "").lower()
    with pytest.raises(Exception, match="champion"):
        client.get_model_version_by_alias("tones", "champion")
    # what a user deploys: the version's files, by alias
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    got = Path(mlflow.artifacts.download_artifacts("models:/tones@candidate", dst_path=str(tmp_path / "dl")))
    assert {"decoder.onnx", "deployment_guide.md", "test_results.md"} <= {p.name for p in got.iterdir()}

    status = runner.approve(status, "alice")
    assert status.phase == "Succeeded"
    champion = client.get_model_version_by_alias("tones", "champion")
    assert champion.version == version.version and champion.tags["approved_by"] == "alice"
    tags = _tags(client, parent.info.run_id)
    assert tags["gate.finalization.passed"] == "true" and tags["gate.finalization.failed"] == ""
    assert tags["trainpipe.finalPhase"] == "Succeeded"
    assert set(status.tracking.aliases) == {"candidate", "champion"}  # type: ignore[union-attr]


def test_a_restarted_runner_finds_its_runs_and_registers_no_second_version(server: MlflowServer,
                                                                           tmp_path: Path) -> None:
    pipeline = _pipeline(server.uri, "again", tracking={"mlflow": {"trackingUri": server.uri,
                                                                   "experiment": "team/again",
                                                                   "registeredModel": "again-model"}})
    status = _finalized(_runner(tmp_path / "run", pipeline))
    assert status.phase == "Succeeded"  # no approval required: Succeeded moves champion
    first = status.tracking
    assert first is not None and first.model_version is not None

    # A runner restarted from nothing but the run (the ids lost): found by their tags.
    again = status.model_copy(update={"tracking": None}, deep=True)
    runner = _runner(tmp_path / "run", pipeline)
    config = runner.tracker.job_tracking(again, "Finalization", FOLDER, attempt=2, new_attempt=True)  # type: ignore[union-attr]
    runner.tracker.sync(again)  # type: ignore[union-attr]
    second = again.tracking
    assert second is not None and second.degraded is None
    assert config is not None and config.mlflow is not None and config.mlflow.run_id == first.child_runs[FOLDER]
    assert (second.mlflow_parent_run_id, second.model_version) == (first.mlflow_parent_run_id, first.model_version)

    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("team/again")
    assert experiment is not None and len(client.search_runs([experiment.experiment_id])) == 2
    assert len(client.search_model_versions("name='again-model'")) == 1
    assert client.get_model_version_by_alias("again-model", "champion").version == first.model_version
    assert "approved_by" not in client.get_model_version_by_alias("again-model", "champion").tags
    assert _tags(client, first.child_runs[FOLDER])["trainpipe.attempt"] == "2"  # the resumed attempt


def test_a_job_gets_its_folders_run_and_the_spec_settings(server: MlflowServer, tmp_path: Path) -> None:
    pipeline = _pipeline(server.uri, "jobs", tracking={"mlflow": {"trackingUri": server.uri},
                                                       "wandb": {"project": "tones"}, "stepEvery": 5,
                                                       "logCheckpoints": True})
    runner = _runner(tmp_path / "run", pipeline)
    status = PipelineStatus(phase="Optimization", run_id="r9", started_at=T0)
    config = runner.tracker.job_tracking(status, "Optimization", "04_optimization/iter_2", 1, True)  # type: ignore[union-attr]
    assert config is not None and config.mlflow is not None and config.wandb is not None
    assert config.mlflow.tracking_uri == server.uri and config.mlflow.experiment_id == status.tracking.experiment_id  # type: ignore[union-attr]
    assert (config.step_every, config.log_checkpoints) == (5, True)
    assert config.tags["trainpipe.iteration"] == "2" and config.tags["trainpipe.phase"] == "Optimization"
    assert config.wandb.run_id == "r9-04_optimization-iter_2" and config.wandb.group == "jobs-r9"
    assert config.wandb.mode == "offline"
    child = MlflowClient(server.uri).get_run(config.mlflow.run_id)
    assert child.data.tags["trainpipe.jobKey"] == "04_optimization/iter_2"
    assert child.data.tags["mlflow.parentRunId"] == status.tracking.mlflow_parent_run_id  # type: ignore[union-attr]
