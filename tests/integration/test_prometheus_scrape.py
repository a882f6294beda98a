"""The real Prometheus scrapes a TrainingTelemetry and PromQL returns the values the trainer set."""

from __future__ import annotations

import pytest

from trainpipe_trainer.engine.telemetry import TrainingTelemetry

from .prometheus_server import running_prometheus, values

pytestmark = pytest.mark.integration

JOB = "trainpipe-trainer"
SELECTOR = 'pipeline="itest-digits",phase="baseline"'


@pytest.fixture
def telemetry():
    t = TrainingTelemetry({"pipeline": "itest-digits", "phase": "baseline", "job": "raysubmit_42"})
    yield t
    t.close()


def test_prometheus_scrapes_trainer_metrics(telemetry, tmp_path):
    for step in range(3):
        telemetry.on_step(
            loss=0.5 - 0.1 * step, lr=1e-3, grad_norm=2.5, samples_per_second=640.0, samples=64
        )
    telemetry.on_skip()
    telemetry.on_epoch(
        num=4,
        train_loss=0.31,
        val_loss=0.42,
        train_acc=0.91,
        val_acc=0.875,
        epoch_seconds=12.5,
        eta_seconds=180.0,
        val_top5=0.99,
    )
    telemetry.on_gpu(util_percent=87.0, memory_bytes=12_300_000_000, device="cuda:0")
    port = telemetry.serve(0, addr="127.0.0.1")

    with running_prometheus([f"127.0.0.1:{port}"], tmp_path, job=JOB) as prom:
        up = prom.wait_for(f'up{{job="{JOB}"}} == 1', timeout=30)
        assert values(up) == [1.0]

        def one_value(expr: str) -> float:
            result = prom.wait_for(expr, lambda r: len(r) == 1, timeout=10)
            return values(result)[0]

        assert one_value(f"trainpipe_val_accuracy{{{SELECTOR}}}") == pytest.approx(0.875)
        assert one_value(f"trainpipe_val_loss{{{SELECTOR}}}") == pytest.approx(0.42)
        assert one_value(f"trainpipe_epoch{{{SELECTOR}}}") == 4
        assert one_value(f"trainpipe_train_step_loss{{{SELECTOR}}}") == pytest.approx(0.3)
        assert one_value(f"trainpipe_train_steps_total{{{SELECTOR}}}") == 3
        assert one_value(f"trainpipe_train_samples_total{{{SELECTOR}}}") == 192
        assert one_value(f"trainpipe_skipped_steps_total{{{SELECTOR}}}") == 1
        assert one_value(f"trainpipe_epoch_duration_seconds_count{{{SELECTOR}}}") == 1
        assert one_value(f"trainpipe_epoch_duration_seconds_sum{{{SELECTOR}}}") == pytest.approx(
            12.5
        )
        assert one_value(
            f'trainpipe_gpu_utilization_percent{{{SELECTOR},device="cuda:0"}}'
        ) == pytest.approx(87.0)

        # Prometheus owns the `job` label (the scrape job); the trainer's is kept as exported_job.
        [series] = prom.query(f"trainpipe_val_accuracy{{{SELECTOR}}}")
        assert series["metric"]["job"] == JOB
        assert series["metric"]["exported_job"] == "raysubmit_42"
        assert series["metric"]["instance"] == f"127.0.0.1:{port}"

        # A value set later shows up on a later scrape.
        telemetry.on_epoch(
            num=5,
            train_loss=0.2,
            val_loss=0.3,
            train_acc=0.95,
            val_acc=0.9,
            epoch_seconds=11.0,
            eta_seconds=150.0,
        )
        prom.wait_for(
            f"trainpipe_val_accuracy{{{SELECTOR}}}",
            lambda r: len(r) == 1 and float(r[0]["value"][1]) == pytest.approx(0.9),
            timeout=15,
        )
