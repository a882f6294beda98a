"""A real training job into a real MLflow server, read back with MLflow's own
client: metric histories equal metrics.json, the params, the artifacts; a
resumed job continues its run without a duplicated or rewound step; a server
that stops mid-run and comes back gets everything, the job never waits."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.integration.mlflow_server import MlflowServer, running_mlflow
from trainpipe_trainer.contract.evidence import EpochRecord
from trainpipe_trainer.contract.tracking import TRACKING_STATUS_FILE
from trainpipe_trainer.engine.stop import StopSignal
from trainpipe_trainer.job import run_job
from trainpipe_trainer.tracking.job_tracker import epoch_metrics
from trainpipe_trainer.tracking.mlflow_rest import MlflowRest

pytestmark = pytest.mark.integration

STEP_EVERY = 5
STEPS_PER_EPOCH = math.ceil(1437 / 64)  # digits: 1,437 training samples at a 0.8 split


def child_run(uri: str, name: str) -> tuple[str, str]:
    """A job's run (experiment, run id), made as the control plane makes it."""
    rest = MlflowRest(uri)
    experiment = rest.get_or_create_experiment("itest-tracking-job")
    return experiment, rest.create_run(experiment, name, {"trainpipe.phase": name})


def tracked_job(make_job, uri: str, name: str, **overrides: Any):
    experiment, run_id = child_run(uri, name)
    return make_job(name, tracking={
        "stepEvery": STEP_EVERY, "logCheckpoints": True,
        "mlflow": {"trackingUri": uri, "experimentId": experiment, "runId": run_id},
    }, **overrides), run_id


def metrics_json(run_dir: Path) -> list[EpochRecord]:
    data = json.loads((run_dir / "logs" / "metrics.json").read_text())
    return [EpochRecord.model_validate(e) for e in data["epochs"]]


def history(reader: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(reader.get_metric_history(run_id, key), key=lambda m: m.timestamp)]


def assert_histories_equal_metrics_json(reader: MlflowClient, run_id: str, run_dir: Path) -> None:
    """Every tracked epoch metric's history is its column of metrics.json, in
    logging order: no step twice, none rewound."""
    records = metrics_json(run_dir)
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for key, value in epoch_metrics(record).items():
            expected.setdefault(key, []).append((record.num, value))
    assert {"train_loss", "val_loss", "val_acc", "val_top5", "lr", "grad_norm", "samples_per_second"} <= set(expected)
    logged = set(reader.get_run(run_id).data.metrics)
    assert {k for k in logged if not k.startswith("step/")} == set(expected)
    for key, values in expected.items():
        assert history(reader, run_id, key) == values, key


def assert_steps_strictly_increase(reader: MlflowClient, run_id: str) -> list[int]:
    steps = [step for step, _ in history(reader, run_id, "step/train_loss")]
    assert steps and all(s % STEP_EVERY == 0 for s in steps)
    assert steps == sorted(set(steps)), f"repeated or rewound steps: {steps}"
    for key in ("step/lr", "step/grad_norm"):
        assert [step for step, _ in history(reader, run_id, key)] == steps
    return steps


@pytest.fixture(scope="module")
def reader(mlflow_server: MlflowServer) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.uri)


def test_a_job_logs_metrics_params_and_artifacts_into_its_mlflow_run(
        make_job, mlflow_server: MlflowServer, reader: MlflowClient) -> None:
    config, run_id = tracked_job(make_job, mlflow_server.uri, "02_baseline")
    evidence = run_job(config, stop=StopSignal())
    assert evidence.status == "completed"
    run_dir = Path(config.run_dir)

    assert_histories_equal_metrics_json(reader, run_id, run_dir)
    assert assert_steps_strictly_increase(reader, run_id) == list(range(5, 2 * STEPS_PER_EPOCH + 1, 5))
    run = reader.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.003"
    assert run.data.params["data.imageSize"] == "8"
    assert run.data.params["model.name"] == "smallcnn"
    assert run.data.params["config_hash"] == config.config_hash()
    assert run.data.tags["trainpipe.phase"] == "02_baseline"  # the control plane's tag kept

    artifacts = {a.path for a in reader.list_artifacts(run_id)}
    assert {"confusion_matrix", "learning_curves.png", "checkpoints"} <= artifacts
    assert {a.path for a in reader.list_artifacts(run_id, "confusion_matrix")} == {
        "confusion_matrix/epoch_1.png", "confusion_matrix/epoch_2.png"}
    assert {a.path for a in reader.list_artifacts(run_id, "checkpoints")} == {
        "checkpoints/best_model.pt", "checkpoints/last_model.pt"}
    downloaded = Path(reader.download_artifacts(run_id, "confusion_matrix/epoch_2.png", str(run_dir / "dl")))
    assert downloaded.read_bytes() == (run_dir / "plots" / "confusion_matrix_epoch_002.png").read_bytes()
    assert not (run_dir / TRACKING_STATUS_FILE).exists()


def test_a_resumed_job_continues_its_mlflow_run_without_duplicated_or_rewound_steps(
        make_job, mlflow_server: MlflowServer, reader: MlflowClient) -> None:
    config, run_id = tracked_job(make_job, mlflow_server.uri, "03_resumed")
    run_dir = Path(config.run_dir)
    stop = StopSignal()
    stop_at = STEPS_PER_EPOCH + 7  # mid-way through epoch 2

    def request_stop(step: int) -> None:
        if step == stop_at:
            stop.request("test")

    first = run_job(config, stop=stop, on_step=request_stop)
    assert first.status == "interrupted"
    assert reader.get_run(run_id).info.status == "KILLED"
    # As if the job had died at step 30 without its interrupt checkpoint: the
    # next attempt resumes from the end of epoch 1 and replays steps 24-30,
    # two of which (25, 30) the run already holds.
    checkpoints = run_dir / "checkpoints"
    shutil.copyfile(checkpoints / "checkpoint_epoch_1.pt", checkpoints / "last_model.pt")
    second = run_job(config, stop=StopSignal())
    assert second.status == "completed" and second.resumed_from_epoch == 1

    assert_histories_equal_metrics_json(reader, run_id, run_dir)
    assert assert_steps_strictly_increase(reader, run_id) == list(range(5, 2 * STEPS_PER_EPOCH + 1, 5))
    run = reader.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["config_hash"] == config.config_hash()
    assert not (run_dir / TRACKING_STATUS_FILE).exists()  # no call was refused (e.g. a param logged twice)


def test_a_server_that_stops_mid_run_gets_everything_once_it_is_back(make_job, tmp_path: Path) -> None:
    with running_mlflow(tmp_path / "server") as server:
        config, run_id = tracked_job(make_job, server.uri, "04_outage")
        port = int(server.uri.rsplit(":", 1)[1])
        restarted: list[MlflowServer] = []

        def outage(step: int) -> None:
            if step == 8:
                server.stop()  # down for the rest of epoch 1
            elif step == STEPS_PER_EPOCH + 3:
                restarted.append(MlflowServer.start(server.workdir, binary=server.binary, port=port))

        try:
            evidence = run_job(config, stop=StopSignal(), on_step=outage)
            assert evidence.status == "completed"
            run_dir = Path(config.run_dir)
            status = json.loads((run_dir / TRACKING_STATUS_FILE).read_text())
            assert status["degraded"] is True and status["server"] == server.uri
            assert status["sinks"]["mlflow"]["reachable"] is True  # back before the job ended
            assert status["sinks"]["mlflow"]["pending"] == 0 and status["sinks"]["mlflow"]["dropped"] == 0

            reader = MlflowClient(tracking_uri=server.uri)
            assert_histories_equal_metrics_json(reader, run_id, run_dir)
            assert assert_steps_strictly_increase(reader, run_id) == list(range(5, 2 * STEPS_PER_EPOCH + 1, 5))
            assert reader.get_run(run_id).info.status == "FINISHED"
            assert {a.path for a in reader.list_artifacts(run_id, "confusion_matrix")} == {
                "confusion_matrix/epoch_1.png", "confusion_matrix/epoch_2.png"}
        finally:
            for again in restarted:
                again.stop()
