"""A 2-worker DDP job under Ray Train on the CPU: it learns, and after the
job is killed outright (SIGKILL, no chance to checkpoint) running it again
resumes from the last checkpoint instead of starting over."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainpipe_operator.devcluster._proc import descendants
from trainpipe_trainer.contract.evidence import Evidence

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(config_path: Path, log: Path) -> subprocess.Popen:
    # A session of its own: killing the group kills the driver and the local
    # Ray cluster it started, as a node failure would.
    return subprocess.Popen(
        [sys.executable, "-m", "trainpipe_trainer.run", "--config", str(config_path)],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def _epochs_done(run_dir: Path) -> int:
    metrics = run_dir / "logs" / "metrics.json"
    try:
        return len(json.loads(metrics.read_text())["epochs"])
    except (OSError, ValueError, KeyError):
        return 0


def test_ray_train_ddp_learns_and_resumes_after_the_job_is_killed(tmp_path: Path, make_job) -> None:
    config = make_job(
        "ray-digits",
        resources={"workers": 2, "cpusPerWorker": 1},
        ray={"enabled": True, "maxFailures": 1},
        data={"imageSize": 16, "batchSize": 32},
        train={"epochs": 6, "lr": 0.002},
    )
    run_dir = Path(config.run_dir)
    config_path = tmp_path / "job.yaml"
    config_path.write_text(config.to_yaml())

    first = _run(config_path, tmp_path / "first.log")
    deadline = time.monotonic() + 300
    while _epochs_done(run_dir) < 2:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "two epochs did not finish in 300 s"
        time.sleep(0.2)
    # The driver's whole tree at once, its own Ray cluster with it (some of
    # Ray's processes leave the group): a node failure, and nothing else on
    # this machine touched (no `ray stop`, which would stop every Ray here).
    tree = descendants(first.pid)
    os.killpg(first.pid, signal.SIGKILL)
    for pid, _started in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert not (run_dir / "evidence.json").exists()  # it died without a word

    second = _run(config_path, tmp_path / "second.log")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    evidence = Evidence.read(run_dir / "evidence.json")
    assert evidence.status == "completed"
    assert evidence.world_size == 2
    assert evidence.resumed_from_epoch is not None and evidence.resumed_from_epoch >= 2
    assert [e.num for e in evidence.epochs] == [1, 2, 3, 4, 5, 6]
    assert evidence.epochs[-1].val_acc > 0.8  # chance is 0.1
    assert evidence.checkpoints["best"].loads and evidence.checkpoints["last"].epoch == 6
    assert "Resumed from" in (run_dir / "logs" / "training.log").read_text()


def test_sigterm_to_the_ray_driver_checkpoints_every_worker_and_exits_resumable(tmp_path: Path, make_job) -> None:
    """What `ray job stop` does: SIGTERM to the driver. The workers stop at
    the same step, rank 0 checkpoints, the driver exits 75."""
    config = make_job(
        "ray-sigterm",
        resources={"workers": 2, "cpusPerWorker": 1},
        data={"imageSize": 16, "batchSize": 32},
        ray={"enabled": True},
        train={"epochs": 30, "logEverySteps": 1},
    )
    run_dir = Path(config.run_dir)
    config_path = tmp_path / "job.yaml"
    config_path.write_text(config.to_yaml())
    proc = _run(config_path, tmp_path / "driver.log")
    deadline = time.monotonic() + 300
    while _epochs_done(run_dir) < 1:
        assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=180) == 75, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    evidence = Evidence.read(run_dir / "evidence.json")
    assert evidence.status == "interrupted" and "SIGTERM" in evidence.reason
    assert evidence.world_size == 2
    assert "Interrupted (SIGTERM): checkpoint written" in (run_dir / "logs" / "training.log").read_text()
