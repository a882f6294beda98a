"""A job whose MLflow server is down: the real client against a closed
loopback port. The job trains to the end, records the degradation (naming
the server, never the credentials) and tries the server only now and then."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from trainpipe_operator.devcluster._proc import free_port
from trainpipe_trainer.contract.tracking import TRACKING_STATUS_FILE, MlflowJobTarget
from trainpipe_trainer.engine.stop import StopSignal
from trainpipe_trainer.job import run_job
from trainpipe_trainer.tracking.mlflow_rest import MlflowCredentials
from trainpipe_trainer.tracking.mlflow_sink import MlflowSink
from trainpipe_trainer.tracking.sink import SinkFanout

PASSWORD = "pw-SECRET-2718"


def test_a_job_whose_mlflow_server_is_down_trains_on_and_records_the_server(
        make_job, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = make_job("down", train={"epochs": 1}, tracking={
        "stepEvery": 5, "logCheckpoints": True,
        "mlflow": {"trackingUri": uri, "experimentId": "1", "runId": "0123456789abcdef"},
    })
    evidence = run_job(config, stop=StopSignal())
    assert evidence.status == "completed"

    run_dir = Path(config.run_dir)
    status = json.loads((run_dir / TRACKING_STATUS_FILE).read_text())
    assert status["degraded"] is True and status["sink"] == "mlflow" and status["server"] == uri
    assert f"MLflow server {uri} did not answer" in status["error"]
    assert status["sinks"]["mlflow"]["reachable"] is False
    log_text = (run_dir / "logs" / "training.log").read_text()
    assert f"Tracking: mlflow ({uri}) unreachable" in log_text and "training continues" in log_text
    for path in run_dir.rglob("*"):  # the credentials are nowhere in the run directory
        if path.is_file() and path.suffix in (".json", ".log", ".yaml", ".md", ".txt"):
            assert PASSWORD not in path.read_text(errors="replace"), path


def test_a_down_server_is_tried_once_per_cooldown_not_once_per_call(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    sink = MlflowSink(MlflowJobTarget(tracking_uri=uri, experiment_id="1", run_id="r"),
                      MlflowCredentials(token="tok-SECRET"), timeout=1.0, retries=0)
    fanout = SinkFanout([sink], tmp_path, first_cooldown=60.0)
    began = time.monotonic()
    fanout.start({"train.lr": "0.01"})
    for step in range(5, 500, 5):
        fanout.step(step, {"step/train_loss": 1.0})
    assert time.monotonic() - began < 5.0  # one refused connection, then no request for 60 s
    (guarded,) = fanout.guarded
    assert guarded.failures == 1 and len(guarded.deferred) == 99
    assert "tok-SECRET" not in (tmp_path / TRACKING_STATUS_FILE).read_text()
