"""The tracking guard: a sink that raises never breaks the job or the other
sinks; an unreachable server is left alone for a cooldown, its calls kept
and replayed in order; the degradation is recorded in tracking_status.json
without credentials."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from trainpipe_trainer.contract.tracking import TRACKING_STATUS_FILE
from trainpipe_trainer.tracking.sink import (
    JobStatus,
    MediaFile,
    Sink,
    SinkFanout,
    cooldown_seconds,
    describe_error,
)


class ServerDown(ConnectionError):
    """What the test sinks raise while their 'server' is down."""


class RecordingSink(Sink):
    """A sink whose server can be switched off; records what reached it."""

    name = "recording"
    unavailable = (ServerDown,)

    def __init__(self, name: str = "recording", server: str = "http://tracking.example:5000") -> None:
        self.name = name  # type: ignore[misc]
        self.server = server
        self.down = False
        self.attempts = 0
        self.received: list[tuple] = []

    def _reach(self, *call: object) -> None:
        self.attempts += 1
        if self.down:
            raise ServerDown(f"{self.server}: connection refused")
        self.received.append(call)

    def start(self, params: Mapping[str, str]) -> None:
        self._reach("start", dict(params))

    def epoch(self, epoch: int, metrics: Mapping[str, float], media: Sequence[MediaFile] = ()) -> None:
        self._reach("epoch", epoch, dict(metrics))

    def step(self, step: int, metrics: Mapping[str, float]) -> None:
        self._reach("step", step, dict(metrics))

    def artifact(self, path: Path, artifact_path: str = "") -> None:
        self._reach("artifact", Path(path).name, artifact_path)

    def finish(self, status: JobStatus) -> None:
        self._reach("finish", status)


class BrokenSink(RecordingSink):
    """Every call fails with an error that is not unavailability (a bug, a refusal)."""

    def __init__(self, fail_start: bool = False) -> None:
        super().__init__("broken", "http://broken.example")
        self.fail_start = fail_start

    def start(self, params: Mapping[str, str]) -> None:
        self.attempts += 1
        if self.fail_start:
            raise PermissionError("401 Unauthorized for http://user:hunter2@broken.example")

    def _reach(self, *call: object) -> None:
        self.attempts += 1
        raise ValueError(f"cannot log {call[0]}")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def read_status(run_dir: Path) -> dict:
    return json.loads((run_dir / TRACKING_STATUS_FILE).read_text())


def test_a_sink_that_raises_never_breaks_the_job_nor_the_other_sinks(tmp_path: Path) -> None:
    broken, good = BrokenSink(), RecordingSink()
    fanout = SinkFanout([broken, good], tmp_path)
    fanout.start({"train.lr": "0.01"})
    fanout.step(50, {"step/train_loss": 1.0})
    fanout.epoch(1, {"train_loss": 1.0})
    fanout.artifact(tmp_path / "learning_curves.png", "")
    fanout.finish("completed")

    assert [c[0] for c in good.received] == ["start", "step", "epoch", "artifact", "finish"]
    assert broken.attempts == 5  # each call tried once, none kept for a retry
    status = read_status(tmp_path)
    assert status["degraded"] is True and status["sink"] == "broken"
    assert status["server"] == "http://broken.example"
    assert "ValueError: cannot log step" in status["error"]
    assert status["sinks"]["broken"]["failedCalls"] == 4
    assert "recording" not in status["sinks"]  # a healthy sink is not reported degraded


def test_a_sink_whose_start_fails_is_disabled_and_its_error_has_no_credentials(tmp_path: Path) -> None:
    broken = BrokenSink(fail_start=True)
    fanout = SinkFanout([broken], tmp_path)
    fanout.start({})
    fanout.epoch(1, {"train_loss": 1.0})
    fanout.finish("completed")
    assert broken.attempts == 1  # nothing after the failed start
    status = read_status(tmp_path)
    assert status["sinks"]["broken"]["disabled"] is True
    assert "401 Unauthorized" in status["error"]
    assert "hunter2" not in json.dumps(status) and "user:" not in json.dumps(status)


def test_an_unreachable_server_is_left_alone_for_a_cooldown_then_gets_every_call_in_order(tmp_path: Path) -> None:
    clock = Clock()
    sink = RecordingSink()
    fanout = SinkFanout([sink], tmp_path, clock=clock, first_cooldown=5.0, max_cooldown=60.0)
    fanout.start({"a": "1"})
    fanout.epoch(1, {"train_loss": 1.0})

    sink.down = True
    fanout.step(100, {"step/train_loss": 0.9})  # fails: 5 s cooldown
    attempts = sink.attempts
    for step in (150, 200, 250):
        clock.now += 1.0
        fanout.step(step, {"step/train_loss": 0.8})
    assert sink.attempts == attempts  # no request at all during the cooldown
    status = read_status(tmp_path)
    assert status["degraded"] is True and status["server"] == sink.server
    assert "connection refused" in status["error"]
    assert status["sinks"]["recording"]["reachable"] is False

    clock.now += 5.0  # cooldown over, but still down: one attempt, then 10 s
    fanout.epoch(2, {"train_loss": 0.7})
    assert sink.attempts == attempts + 1
    assert read_status(tmp_path)["sinks"]["recording"]["pending"] == 5  # updated on each failed attempt
    clock.now += 9.0
    fanout.step(300, {"step/train_loss": 0.6})
    assert sink.attempts == attempts + 1

    sink.down = False
    clock.now += 1.0
    fanout.step(350, {"step/train_loss": 0.5})
    assert [c[:2] for c in sink.received] == [
        ("start", {"a": "1"}), ("epoch", 1), ("step", 100), ("step", 150), ("step", 200), ("step", 250),
        ("epoch", 2), ("step", 300), ("step", 350),
    ]
    status = read_status(tmp_path)  # the outage stays recorded, now reachable, nothing pending
    assert status["degraded"] is True
    assert status["sinks"]["recording"]["reachable"] is True
    assert status["sinks"]["recording"]["pending"] == 0


def test_a_server_down_at_start_gets_the_start_first_once_it_is_back(tmp_path: Path) -> None:
    clock = Clock()
    sink = RecordingSink()
    sink.down = True
    fanout = SinkFanout([sink], tmp_path, clock=clock)
    fanout.start({"a": "1"})
    fanout.epoch(1, {"train_loss": 1.0})
    sink.down = False
    clock.now += 10.0
    fanout.epoch(2, {"train_loss": 0.5})
    assert [c[:2] for c in sink.received] == [("start", {"a": "1"}), ("epoch", 1), ("epoch", 2)]


def test_finish_tries_once_more_despite_the_cooldown_and_counts_what_is_lost(tmp_path: Path) -> None:
    clock = Clock()
    sink = RecordingSink()
    fanout = SinkFanout([sink], tmp_path, clock=clock, first_cooldown=300.0)
    fanout.start({})
    sink.down = True
    fanout.epoch(1, {"train_loss": 1.0})
    sink.down = False  # back, but the cooldown has not passed
    fanout.finish("completed")
    assert [c[0] for c in sink.received] == ["start", "epoch", "finish"]

    other = RecordingSink()
    fanout = SinkFanout([other], tmp_path / "other", clock=clock)
    fanout.start({})
    other.down = True
    fanout.epoch(1, {"train_loss": 1.0})
    fanout.finish("failed")
    status = read_status(tmp_path / "other")
    assert status["sinks"]["recording"]["dropped"] == 2  # the epoch and the finish
    assert status["sinks"]["recording"]["pending"] == 0


def test_calls_kept_for_an_unreachable_server_are_bounded(tmp_path: Path) -> None:
    clock = Clock()
    sink = RecordingSink()
    fanout = SinkFanout([sink], tmp_path, clock=clock, max_deferred=3)
    fanout.start({})
    sink.down = True
    for step in range(1, 6):
        fanout.step(step, {"step/train_loss": 1.0})
    sink.down = False
    clock.now += 10.0
    fanout.step(6, {"step/train_loss": 1.0})
    assert [c[1] for c in sink.received[1:]] == [4, 5, 6]  # the oldest were dropped
    assert read_status(tmp_path)["sinks"]["recording"]["dropped"] == 3


def test_no_status_file_while_every_sink_is_healthy(tmp_path: Path) -> None:
    fanout = SinkFanout([RecordingSink()], tmp_path)
    fanout.start({})
    fanout.epoch(1, {"train_loss": 1.0})
    fanout.finish("completed")
    assert not (tmp_path / TRACKING_STATUS_FILE).exists()


@pytest.mark.parametrize(("failures", "expected"), [(1, 5.0), (2, 10.0), (3, 20.0), (7, 300.0), (30, 300.0)])
def test_the_cooldown_doubles_per_failure_and_is_capped(failures: int, expected: float) -> None:
    assert cooldown_seconds(failures, first=5.0, cap=300.0) == expected


def test_describe_error_removes_userinfo_and_bounds_the_length() -> None:
    text = describe_error(ConnectionError("https://alice:s3cret@mlflow.example/api failed " + "x" * 500))
    assert "s3cret" not in text and "alice" not in text
    assert text.startswith("ConnectionError: https://mlflow.example/api failed")
    assert len(text) == 300
