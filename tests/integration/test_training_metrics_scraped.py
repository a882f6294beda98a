"""A real training run, scraped by a real Prometheus while it trains: the
trainpipe_* series PromQL returns are the numbers the run reports.

Prometheus scrapes once a second, so any one query may still show an earlier
scrape: every assertion waits (with a deadline) until PromQL shows the value
the run ended with, and a timeout names what was last seen."""

from __future__ import annotations

import math

import pytest

from trainpipe_trainer.engine.stop import StopSignal
from trainpipe_trainer.engine.telemetry import TrainingTelemetry
from trainpipe_trainer.job import run_job

from .prometheus_server import running_prometheus, values

pytestmark = pytest.mark.integration

LABELS = {"pipeline": "scrape-digits", "phase": "baseline", "job": "scrape-job"}
EXPECTED_STEPS = 2 * -(-1437 // 64)  # two epochs of the 1,437 training digits, batch 64
SELECTOR = '{pipeline="scrape-digits",phase="baseline"}'


def _close_to(expected: float):  # noqa: ANN202 - a predicate for wait_for
    return lambda result: len(result) == 1 and math.isclose(values(result)[0], expected, rel_tol=1e-6)


def test_prometheus_scrapes_a_training_run(tmp_path, make_job) -> None:
    telemetry = TrainingTelemetry(LABELS)
    port = telemetry.serve(0, addr="127.0.0.1")
    try:
        with running_prometheus([f"127.0.0.1:{port}"], tmp_path / "prom") as prom:
            evidence = run_job(make_job("scraped", train={"epochs": 2}), stop=StopSignal(), telemetry=telemetry)
            assert evidence.status == "completed"
            last = evidence.epochs[-1]
            # What the run itself counted: one checkpoint write per epoch (best
            # and periodic are links to last's bytes, not writes of their own).
            saves = telemetry.registry.get_sample_value(
                "trainpipe_checkpoint_save_seconds_count", telemetry.labels)
            assert saves == len(evidence.epochs) == 2
            samples_per_second = telemetry.registry.get_sample_value(
                "trainpipe_samples_per_second", telemetry.labels)
            assert samples_per_second and samples_per_second > 0

            prom.wait_for(f"trainpipe_train_steps_total{SELECTOR}", _close_to(EXPECTED_STEPS))
            prom.wait_for(f"trainpipe_epoch{SELECTOR}", _close_to(2.0))
            prom.wait_for(f"trainpipe_val_accuracy{SELECTOR}", _close_to(last.val_acc))
            prom.wait_for(f"trainpipe_val_loss{SELECTOR}", _close_to(last.val_loss))
            prom.wait_for(f"trainpipe_checkpoint_save_seconds_count{SELECTOR}", _close_to(saves))
            prom.wait_for(f"trainpipe_samples_per_second{SELECTOR}", _close_to(samples_per_second))
    finally:
        telemetry.close()
