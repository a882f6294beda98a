"""Checkpoint files: atomic writes, checksums, weights_only loads, resume lookup, retention, RNG."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from trainpipe_trainer.engine.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointCorruptError,
    apply_retention,
    checksum_path,
    discard_checkpoints,
    find_resume_checkpoint,
    inspect_checkpoint,
    load_checkpoint,
    periodic_checkpoint_path,
    save_checkpoint,
)
from trainpipe_trainer.engine.rng import capture_rng_state, restore_rng_state


def _state(epoch: int, step: int, numel: int = 1024) -> dict:
    model = {"w": torch.full((numel,), float(epoch))}
    return {
        "model_state_dict": model,
        "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "epoch": epoch,
        "global_step": step,
        "val_loss": 1.0 / epoch,
        "rng": capture_rng_state(),
    }


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _age(path: Path, seconds_ago: float) -> None:
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


# ----------------------------------------------------------------------------- atomicity

_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import torch
    from trainpipe_trainer.engine import checkpoint

    target, marker, point = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def block():
        marker.write_text("blocked")
        time.sleep(3600)

    if point == "mid_write":  # block once torch.save has written a few MB of the temp file
        write = checkpoint._HashingWriter.write
        def slow_write(self, data):
            if self.bytes > 8 << 20:
                block()
            return write(self, data)
        checkpoint._HashingWriter.write = slow_write
    elif point == "before_replace":  # temp file complete, blocked in its fsync
        real_fsync = os.fsync
        def fsync(fd):
            if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(".last_model.pt."):
                block()
            real_fsync(fd)
        os.fsync = fsync
    elif point == "before_sidecar":  # new data renamed in place, old sidecar still there
        real_replace = os.replace
        def replace(src, dst):
            if str(dst).endswith(".sha256"):
                block()
            real_replace(src, dst)
        os.replace = replace

    big = {"w": torch.randn(8 << 20)}  # 32 MiB
    checkpoint.save_checkpoint({"model_state_dict": big, "epoch": 99, "global_step": 9900}, target)
    """
)


def _kill_writer_mid_save(ckpt_dir: Path, point: str) -> None:
    marker = ckpt_dir.parent / "blocked"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(ckpt_dir / LAST_NAME), str(marker), point],
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, f"writer exited ({proc.returncode}) before reaching {point}"
            assert time.monotonic() < deadline, "writer never reached the kill point"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("point", ["mid_write", "before_replace"])
def test_killed_writer_leaves_old_last_checkpoint_valid(tmp_path: Path, point: str) -> None:
    ckpt_dir = tmp_path / "checkpoints"
    save_checkpoint(_state(1, 100), periodic_checkpoint_path(ckpt_dir, 1))
    save_checkpoint(_state(2, 200), ckpt_dir / LAST_NAME)
    old_digest = checksum_path(ckpt_dir / LAST_NAME).read_text()

    _kill_writer_mid_save(ckpt_dir, point)

    leftovers = [p for p in ckpt_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the writer should have been killed with its temp file on disk"
    assert checksum_path(ckpt_dir / LAST_NAME).read_text() == old_digest
    assert load_checkpoint(ckpt_dir / LAST_NAME)["epoch"] == 2
    found = find_resume_checkpoint(ckpt_dir)
    assert found is not None
    assert found[0] == ckpt_dir / LAST_NAME and found[1]["global_step"] == 200

    # The next save of that file removes the crashed writer's temp file.
    save_checkpoint(_state(3, 300), ckpt_dir / LAST_NAME)
    assert not [p for p in ckpt_dir.iterdir() if p.name.endswith(".tmp")]


def test_killed_between_data_and_checksum_rename_is_detected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt_dir = tmp_path / "checkpoints"
    save_checkpoint(_state(1, 100), periodic_checkpoint_path(ckpt_dir, 1))
    save_checkpoint(_state(1, 100), ckpt_dir / LAST_NAME)

    _kill_writer_mid_save(ckpt_dir, "before_sidecar")

    with pytest.raises(CheckpointCorruptError, match="checksum mismatch"):
        load_checkpoint(ckpt_dir / LAST_NAME)
    with caplog.at_level(logging.WARNING):
        found = find_resume_checkpoint(ckpt_dir)
    assert found is not None and found[0] == periodic_checkpoint_path(ckpt_dir, 1)
    assert "last_model.pt is corrupt (checksum mismatch)" in caplog.text


# ----------------------------------------------------------------------------- checksums


def test_save_records_sha256_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / LAST_NAME
    info = save_checkpoint(_state(1, 10), path)
    assert info.path == path and info.bytes == path.stat().st_size and info.seconds >= 0
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert checksum_path(path).read_text() == f"{info.sha256}  {LAST_NAME}\n"  # sha256sum -c format
    assert load_checkpoint(path)["epoch"] == 1


def test_flipped_byte_is_rejected_and_resume_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt_dir = tmp_path / "checkpoints"
    for epoch in (1, 2):
        save_checkpoint(_state(epoch, epoch * 100), periodic_checkpoint_path(ckpt_dir, epoch))
        _age(periodic_checkpoint_path(ckpt_dir, epoch), 100 - epoch)
    last = ckpt_dir / LAST_NAME
    save_checkpoint(_state(3, 300, numel=1 << 16), last)
    _flip_middle_byte(last)

    with pytest.raises(CheckpointCorruptError, match="checksum mismatch") as err:
        load_checkpoint(last)
    assert str(last) in str(err.value) and "delete it" in str(err.value)

    with caplog.at_level(logging.WARNING):
        found = find_resume_checkpoint(ckpt_dir)
    assert found is not None
    path, state = found
    assert path == periodic_checkpoint_path(ckpt_dir, 2) and state["epoch"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"{last} is corrupt (checksum mismatch); falling back to {path}" in m for m in warnings
    ), warnings


def test_missing_checksum_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / LAST_NAME
    save_checkpoint(_state(1, 1), path)
    checksum_path(path).unlink()
    with pytest.raises(CheckpointCorruptError, match="sha256 missing"):
        load_checkpoint(path)


def test_truncated_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / LAST_NAME
    save_checkpoint(_state(1, 1, numel=1 << 16), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointCorruptError, match="checksum mismatch"):
        load_checkpoint(path)
    # Even with a checksum that matches the truncated bytes, torch.load's failure is reported.
    checksum_path(path).write_text(
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"
    )
    with pytest.raises(CheckpointCorruptError) as err:
        load_checkpoint(path)
    assert "checksum" not in err.value.reason
    assert find_resume_checkpoint(tmp_path) is None


class Payload:
    """An arbitrary Python object: plain pickle would run its class's code on load."""

    def __init__(self) -> None:
        self.value = 42


def test_weights_only_refuses_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / LAST_NAME
    torch.save({"model_state_dict": {"w": torch.zeros(2)}, "epoch": 1, "extra": Payload()}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    checksum_path(path).write_text(f"{digest}  {path.name}\n")

    with pytest.raises(CheckpointCorruptError, match="weights_only") as err:
        load_checkpoint(path)
    assert "Payload" in str(err.value) and str(path) in str(err.value)
    check = inspect_checkpoint(path)
    assert check.exists and not check.loads and "weights_only" in (check.error or "")


def test_save_refuses_state_that_would_not_load(tmp_path: Path) -> None:
    path = tmp_path / LAST_NAME
    save_checkpoint(_state(1, 1), path)
    with pytest.raises(ValueError, match="weights_only"):
        save_checkpoint({"epoch": 2, "extra": Payload()}, path)
    assert load_checkpoint(path)["epoch"] == 1  # the previous file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST_NAME, LAST_NAME + ".sha256"]


# ----------------------------------------------------------------------------- resume lookup


def test_resume_order_is_decided_by_content_not_mtime(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "checkpoints"
    save_checkpoint(_state(1, 100), periodic_checkpoint_path(ckpt_dir, 1))
    save_checkpoint(_state(2, 250), ckpt_dir / LAST_NAME)  # mid-epoch interrupt
    save_checkpoint(_state(2, 200), periodic_checkpoint_path(ckpt_dir, 2))
    _age(ckpt_dir / LAST_NAME, 50)  # e.g. restored from a copy: mtimes lie
    found = find_resume_checkpoint(ckpt_dir)
    assert found is not None and found[0] == ckpt_dir / LAST_NAME and found[1]["global_step"] == 250


def test_resume_ignores_best_and_temps_unless_nothing_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt_dir = tmp_path / "checkpoints"
    assert find_resume_checkpoint(ckpt_dir) is None
    save_checkpoint(_state(5, 500), ckpt_dir / BEST_NAME)
    save_checkpoint(_state(3, 300), ckpt_dir / LAST_NAME)
    (ckpt_dir / ".last_model.pt.1.abcd.tmp").write_bytes(b"half a checkpoint")
    found = find_resume_checkpoint(ckpt_dir)
    assert found is not None and found[0] == ckpt_dir / LAST_NAME

    _flip_middle_byte(ckpt_dir / LAST_NAME)
    with caplog.at_level(logging.WARNING):
        found = find_resume_checkpoint(ckpt_dir)
    assert found is not None and found[0] == ckpt_dir / BEST_NAME
    assert "resuming from" in caplog.text

    _flip_middle_byte(ckpt_dir / BEST_NAME)
    assert find_resume_checkpoint(ckpt_dir) is None


# ----------------------------------------------------------------------------- housekeeping


def test_retention_keeps_three_newest_periodic_plus_best_and_last(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "checkpoints"
    for epoch in range(1, 7):
        save_checkpoint(_state(epoch, epoch), periodic_checkpoint_path(ckpt_dir, epoch))
    save_checkpoint(_state(2, 2), ckpt_dir / BEST_NAME)
    save_checkpoint(_state(6, 6), ckpt_dir / LAST_NAME)
    save_checkpoint(
        _state(10, 10), periodic_checkpoint_path(ckpt_dir, 10)
    )  # 10 sorts before 2 as text

    removed = apply_retention(ckpt_dir, keep=3)

    assert removed == [periodic_checkpoint_path(ckpt_dir, e) for e in (1, 2, 3, 4)]
    names = sorted(p.name for p in ckpt_dir.iterdir())
    kept = [
        BEST_NAME,
        "checkpoint_epoch_10.pt",
        "checkpoint_epoch_5.pt",
        "checkpoint_epoch_6.pt",
        LAST_NAME,
    ]
    assert names == sorted(kept + [n + ".sha256" for n in kept])
    assert apply_retention(ckpt_dir, keep=3) == []
    with pytest.raises(ValueError):
        apply_retention(ckpt_dir, keep=-1)


def test_discard_removes_checkpoints_sidecars_and_temps(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "checkpoints"
    save_checkpoint(_state(1, 1), ckpt_dir / LAST_NAME)
    save_checkpoint(_state(1, 1), periodic_checkpoint_path(ckpt_dir, 1))
    (ckpt_dir / ".best_model.pt.7.beef.tmp").write_bytes(b"x")
    (ckpt_dir / "notes.txt").write_text("keep me")
    assert len(discard_checkpoints(ckpt_dir)) == 5
    assert [p.name for p in ckpt_dir.iterdir()] == ["notes.txt"]
    assert find_resume_checkpoint(ckpt_dir) is None


def test_inspect_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / BEST_NAME
    assert inspect_checkpoint(path).model_dump() == {
        "path": str(path),
        "exists": False,
        "loads": False,
        "has_model_state": False,
        "has_optimizer_state": False,
        "epoch": None,
        "val_loss": None,
        "error": "file does not exist",
    }
    save_checkpoint(_state(4, 40), path)
    check = inspect_checkpoint(path)
    assert (check.exists, check.loads, check.has_model_state, check.has_optimizer_state) == (
        True,
    ) * 4
    assert (check.epoch, check.val_loss, check.error) == (4, 0.25, None)
    _flip_middle_byte(path)
    check = inspect_checkpoint(path)
    assert check.exists and not check.loads and "checksum mismatch" in (check.error or "")


# ----------------------------------------------------------------------------- RNG


def _draw() -> tuple:
    return (
        [random.random() for _ in range(3)],
        random.gauss(0, 1),
        np.random.rand(3).tolist(),
        np.random.randn(),
        torch.rand(3).tolist(),
        torch.randn(2).tolist(),
    )


@pytest.mark.parametrize("through_torch_save", [False, True])
def test_rng_round_trip(through_torch_save: bool) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in both python and numpy
    np.random.randn()
    state = capture_rng_state()
    if through_torch_save:
        buf = io.BytesIO()
        torch.save({"rng": state}, buf)
        buf.seek(0)
        state = torch.load(buf, weights_only=True)["rng"]
    expected = _draw()
    _draw()  # move every generator on
    restore_rng_state(state)
    assert _draw() == expected


def test_rng_restore_tolerates_missing_or_foreign_cuda_states() -> None:
    state = capture_rng_state()
    expected = _draw()
    state.pop("cuda", None)
    restore_rng_state(state)
    assert _draw() == expected
    restore_rng_state(
        {**state, "cuda": [torch.zeros(16, dtype=torch.uint8)] * 9}
    )  # 9 devices elsewhere
    assert _draw() == expected
