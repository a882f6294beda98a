"""A real training run, scraped by a real Prometheus while it trains: the
trainpipe_* series PromQL returns are the numbers the run reports."""

from __future__ import annotations

import pytest

from trainpipe_trainer.engine.stop import StopSignal
from trainpipe_trainer.engine.telemetry import TrainingTelemetry
from trainpipe_trainer.job import run_job

from .prometheus_server import running_prometheus, values

pytestmark = pytest.mark.integration

LABELS = {"pipeline": "scrape-digits", "phase": "baseline", "job": "scrape-job"}
EXPECTED_STEPS = 2 * -(-1437 // 64)  # two epochs of the 1,437 training digits, batch 64
SELECTOR = '{pipeline="scrape-digits",phase="baseline"}'


def test_prometheus_scrapes_a_training_run(tmp_path, make_job) -> None:
    telemetry = TrainingTelemetry(LABELS)
    port = telemetry.serve(0, addr="127.0.0.1")
    try:
        with running_prometheus([f"127.0.0.1:{port}"], tmp_path / "prom") as prom:
            evidence = run_job(make_job("scraped", train={"epochs": 2}), stop=StopSignal(), telemetry=telemetry)
            assert evidence.status == "completed"
            last = evidence.epochs[-1]
            steps = prom.wait_for(
                f"trainpipe_train_steps_total{SELECTOR}", lambda r: values(r) == [float(EXPECTED_STEPS)]
            )
            epoch = prom.wait_for(f"trainpipe_epoch{SELECTOR}", lambda r: values(r) == [2.0])
            val_acc = prom.query(f"trainpipe_val_accuracy{SELECTOR}")
            val_loss = prom.query(f"trainpipe_val_loss{SELECTOR}")
            ckpt_count = prom.query(f"trainpipe_checkpoint_save_seconds_count{SELECTOR}")
            throughput = prom.query(f"trainpipe_samples_per_second{SELECTOR}")
    finally:
        telemetry.close()
    assert values(epoch) == [2.0]
    assert values(val_acc) == [pytest.approx(last.val_acc)]
    assert values(val_loss) == [pytest.approx(last.val_loss)]
    assert values(steps) == [float(EXPECTED_STEPS)]
    assert values(ckpt_count)[0] >= 2  # last + best (+ periodic) each epoch
    assert values(throughput)[0] > 0
