"""The trainer's heartbeat: written by rank 0, throttled, at each epoch's
end, atomically; a training run leaves one that says where it stands."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.test_engine import linear_parts
from trainpipe_trainer.contract.heartbeat import HEARTBEAT_FILE, Heartbeat
from trainpipe_trainer.engine.heartbeat import HeartbeatWriter
from trainpipe_trainer.engine.stop import StopSignal
from trainpipe_trainer.job import run_job


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_steps_are_throttled_and_epoch_ends_always_written(tmp_path: Path) -> None:
    clock = Clock()
    writer = HeartbeatWriter(tmp_path, epochs=4, steps_per_epoch=10, every=2.0, clock=clock)
    writer.started(0, 0, 0)
    for step in range(1, 11):  # ten steps 0.5 s apart: a beat every 2 s at most
        clock.now += 0.5
        writer.step(step, 0, step, samples=8)
    assert writer.writes == 1 + 2  # the start, then at 2 s and 4 s
    clock.now += 0.1
    writer.epoch_end(10, 1, epoch_seconds=5.2)
    assert writer.writes == 4
    beat = Heartbeat.read(tmp_path / HEARTBEAT_FILE)
    assert beat is not None
    assert (beat.global_step, beat.completed_epochs, beat.epochs, beat.steps_per_epoch) == (10, 1, 4, 10)
    assert beat.epoch_seconds == 5.2 and beat.time == clock.now and beat.started_at == 1000.0
    assert beat.step_seconds is not None and abs(beat.step_seconds - 0.5) < 0.05
    assert beat.samples_per_second is not None and beat.samples_per_second > 0
    assert list(tmp_path.iterdir()) == [tmp_path / HEARTBEAT_FILE]  # no temporary file left behind


def test_a_heartbeat_that_cannot_be_read_is_none(tmp_path: Path) -> None:
    assert Heartbeat.read(tmp_path / HEARTBEAT_FILE) is None
    (tmp_path / HEARTBEAT_FILE).write_text("{not json")
    assert Heartbeat.read(tmp_path / HEARTBEAT_FILE) is None


def test_a_training_run_leaves_its_heartbeat_finished(make_job) -> None:  # type: ignore[no-untyped-def]
    config = make_job("beat", data={"batchSize": 8}, train={"epochs": 2})
    evidence = run_job(config, parts=linear_parts(n=32), stop=StopSignal())
    assert evidence.status == "completed"
    data = json.loads((Path(config.run_dir) / HEARTBEAT_FILE).read_text())
    assert data["state"] == "finished"
    assert data["completed_epochs"] == 2 and data["epochs"] == 2
    assert data["global_step"] == 8 and data["steps_per_epoch"] == 4  # 32 samples, batches of 8
    assert data["epoch_seconds"] is not None
