"""``python -m trainpipe_trainer.run``: signals, exit codes, config errors,
the DDP launcher, and the control plane's independence from torch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainpipe_trainer.contract.evidence import Evidence
from trainpipe_trainer.engine import checkpoint as ckpt
from trainpipe_trainer.engine import exit_codes
from trainpipe_trainer.launch import launch

REPO = Path(__file__).resolve().parents[2]


def _start(config_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainpipe_trainer.run", "--config", str(config_path), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait_for_line(path: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        if proc.poll() is not None:
            pytest.fail(f"trainer exited early ({proc.returncode}): {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{text!r} never appeared in {path}")


@pytest.mark.slow
def test_sigterm_checkpoints_at_a_step_boundary_and_exits_resumable(tmp_path: Path, make_job) -> None:
    config = make_job("sigterm", train={"epochs": 40, "logEverySteps": 1})
    config_path = tmp_path / "job.yaml"
    config_path.write_text(config.to_yaml())
    log_path = Path(config.run_dir) / "logs" / "training.log"

    proc = _start(config_path)
    _wait_for_line(log_path, "step 30 ", proc)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == exit_codes.INTERRUPTED_RESUMABLE, output
    saved = ckpt.load_checkpoint(Path(config.run_dir) / "checkpoints" / "last_model.pt")
    assert saved["global_step"] >= 30
    evidence = Evidence.read(Path(config.run_dir) / "evidence.json")
    assert evidence.status == "interrupted" and "SIGTERM" in evidence.reason
    assert "Interrupted (SIGTERM): checkpoint written" in log_path.read_text()

    # Starting again resumes where it stopped.
    proc = _start(config_path)
    _wait_for_line(log_path, "Resumed from", proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    resumed = Evidence.read(Path(config.run_dir) / "evidence.json")
    assert resumed.resumed_from_step == saved["step_in_epoch"]
    assert resumed.resumed_from_epoch == saved["epoch"]


def test_an_invalid_job_config_exits_2_naming_each_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "runDir: /tmp/x\n"
        "train: {epochs: 0, optimizer: adam, lerningRate: 0.1}\n"
        "data: {augment: [mixup]}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "trainpipe_trainer.run", "--config", str(bad)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == exit_codes.CONFIG_ERROR
    lines = result.stderr.strip().splitlines()
    assert any("train.epochs" in line and "greater than or equal to 1" in line and "got 0" in line for line in lines)
    assert any("train.optimizer" in line and "'adamw'" in line and "'adam'" in line for line in lines)
    assert any("train.lerningRate" in line and "unknown field" in line for line in lines)
    assert any("data.augment" in line and "mixup" in line and "hflip" in line for line in lines)
    assert not Path("/tmp/x/evidence.json").exists()


@pytest.mark.slow
def test_two_process_ddp_without_ray_trains_and_agrees(make_job) -> None:
    config = make_job("ddp", resources={"workers": 2}, train={"epochs": 2})
    evidence = launch(config)
    assert evidence.status == "completed", evidence.reason
    assert evidence.world_size == 2
    assert evidence.epochs[-1].val_acc > 0.5
    log_text = (Path(config.run_dir) / "logs" / "training.log").read_text()
    assert "EPOCH 2/2" in log_text


def test_fresh_start_discards_checkpoints(make_job) -> None:
    config = make_job("fresh", train={"epochs": 1})
    launch(config)
    again = launch(config.model_copy(update={"fresh": True}))
    assert again.resumed_from_epoch is None
    assert again.status == "completed"
    resumed = launch(config)
    assert resumed.resumed_from_epoch == 1


def test_the_control_plane_imports_without_torch() -> None:
    code = (
        "import sys; import trainpipe_operator.cli, trainpipe_trainer.contract; "
        "bad = [m for m in ('torch', 'torchvision', 'ray') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ}, timeout=60)


def test_the_embedded_default_job_is_the_example_file() -> None:
    from trainpipe_operator.cli import default_job_path

    assert default_job_path().read_text() == (REPO / "examples" / "digits-job.yaml").read_text()


def test_trainpipe_train_runs_a_job_config_and_reports_bad_ones(tmp_path: Path, make_job) -> None:
    trainpipe = Path(sys.executable).parent / "trainpipe"
    config = make_job("cli", train={"epochs": 1})
    config_path = tmp_path / "job.yaml"
    config_path.write_text(config.to_yaml())
    ok = subprocess.run([str(trainpipe), "train", "--config", str(config_path)], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert Evidence.read(Path(config.run_dir) / "evidence.json").status == "completed"

    config_path.write_text(config_path.read_text().replace("epochs: 1", "epochs: -3"))
    bad = subprocess.run([str(trainpipe), "train", "--config", str(config_path)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == exit_codes.CONFIG_ERROR
    assert "train.epochs" in bad.stderr and "-3" in bad.stderr
