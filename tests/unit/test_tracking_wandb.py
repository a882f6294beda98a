"""A real training job into an offline W&B run, read back from wandb's own
transaction log (``<dir>/wandb/offline-run-*/run-<id>.wandb``: wandb's
record framing, decoded with wandb's own protobuf ``Record``): the epoch
metrics equal metrics.json, the confusion matrices are images of their
epoch's row, a resumed job continues the run without a repeated or rewound
step, and the model artifact carries its aliases."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from trainpipe_trainer.contract.evidence import EpochRecord
from trainpipe_trainer.contract.tracking import TRACKING_STATUS_FILE, WandbJobTarget
from trainpipe_trainer.engine.stop import StopSignal
from trainpipe_trainer.job import run_job
from trainpipe_trainer.tracking.job_tracker import epoch_metrics

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

RUN_ID = "digits-02-baseline"
STEP_EVERY = 5


@pytest.fixture(autouse=True)
def wandb_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """wandb's own files (config, cache) in the test's folder, no key, and its
    service ended afterwards (the session's leak check would see it)."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    yield
    wandb.teardown()


# ------------------------------------------------------- the offline reader
HEADER = struct.Struct("<4sHB")  # ":W&B", 0xBEE1, version
CHUNK = struct.Struct("<IHB")  # crc32, length, type
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[Any]:
    """Every record of one ``.wandb`` transaction log (leveldb-log framing:
    32 KiB blocks of CRC-checked chunks), as wandb's protobuf ``Record``."""
    data = path.read_bytes()
    ident, magic, _ = HEADER.unpack_from(data)
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B transaction log"
    pos, pending, records = HEADER.size, b"", []
    while pos + CHUNK.size <= len(data):
        if BLOCK - pos % BLOCK < CHUNK.size:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        if kind == 0 and length == 0:
            break
        chunk = data[pos + CHUNK.size: pos + CHUNK.size + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"{path}: bad chunk at {pos}"
        pos += CHUNK.size + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            record.ParseFromString(pending)
            records.append(record)
    return records


def _items(items: Any) -> dict[str, Any]:
    """History/config items to a dict; a ``nested_key`` path becomes nested dicts
    (an image is ``{"_type": "image-file", "path": ...}``)."""
    out: dict[str, Any] = {}
    for item in items:
        path = list(item.nested_key) or [item.key]
        if path[0].startswith("_"):
            continue  # wandb's own (_step, _runtime, _timestamp, _wandb)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


@dataclass
class OfflineRun:
    """What the offline attempts of one run hold, in order."""

    folders: list[Path]
    rows: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    step_metric: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    artifacts: list[Any] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)

    @property
    def epoch_rows(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if "epoch" in row]

    @property
    def step_rows(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if "global_step" in row]


def read_offline_run(directory: Path, run_id: str) -> OfflineRun:
    """Every attempt's records of ``run_id`` under ``<directory>/wandb``. Ends
    wandb's service first: ``run.finish()`` returns before the service has
    flushed the transaction log (it does so by exit)."""
    wandb.teardown()
    # Two attempts started within one second share a timestamp: wandb then
    # names the later folder with a "-1" (, "-2", ...) suffix.
    root = directory / "wandb"
    folders = sorted([*root.glob(f"offline-run-*-{run_id}"), *root.glob(f"offline-run-*-{run_id}-[0-9]*")])
    run = OfflineRun(folders)
    for folder in folders:
        for record in read_records(folder / f"run-{run_id}.wandb"):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                run.rows.append(_items(record.history.item))
            elif kind in ("run", "config"):
                run.config.update(_items(record.run.config.update if kind == "run" else record.config.update))
            elif kind == "metric" and record.metric.step_metric:
                run.step_metric[record.metric.name or record.metric.glob_name] = record.metric.step_metric
            elif kind == "files":
                run.files += [f.path for f in record.files.files]
            elif kind == "artifact":
                run.artifacts.append(record.artifact)
            elif kind == "exit":
                run.exit_codes.append(record.exit.exit_code)
    return run


# ------------------------------------------------------------------- tests
_recording: list[list[Any]] = []


def _record_connects(event: str, args: tuple) -> None:
    if _recording and event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
        _recording[-1].append(args[1])


@contextlib.contextmanager
def network_connections() -> Iterator[list[Any]]:
    """The IP addresses this process connects to inside the block (an audit
    hook: installed once, as hooks cannot be removed; idle outside a block)."""
    if not getattr(network_connections, "installed", False):
        sys.addaudithook(_record_connects)
        network_connections.installed = True  # type: ignore[attr-defined]
    _recording.append([])
    try:
        yield _recording[-1]
    finally:
        _recording.pop()


def wandb_job(make_job, name: str = "wb", **overrides: Any):
    return make_job(name, tracking={
        "stepEvery": STEP_EVERY, "tags": {"phase": "02_baseline"},
        "wandb": {"project": "trainpipe-test", "runId": RUN_ID, "runName": "02_baseline", "group": "digits-1",
                  "tags": ["baseline"]},
    }, **overrides)


def metrics_json(run_dir: Path) -> list[EpochRecord]:
    data = json.loads((run_dir / "logs" / "metrics.json").read_text())
    return [EpochRecord.model_validate(e) for e in data["epochs"]]


def assert_epoch_rows_equal_metrics_json(run: OfflineRun, run_dir: Path) -> None:
    expected = metrics_json(run_dir)
    rows = run.epoch_rows
    assert [row["epoch"] for row in rows] == [e.num for e in expected]
    for row, record in zip(rows, expected, strict=True):
        tracked = {k: v for k, v in row.items() if k != "epoch" and not isinstance(v, dict)}
        assert tracked == epoch_metrics(record)


def assert_steps_strictly_increase(run: OfflineRun) -> None:
    steps = [row["global_step"] for row in run.step_rows]
    assert steps and all(s % STEP_EVERY == 0 for s in steps)
    assert steps == sorted(set(steps)), f"repeated or rewound steps: {steps}"


def test_an_offline_wandb_run_holds_the_jobs_metrics_and_confusion_matrices(make_job) -> None:
    config = wandb_job(make_job)
    run_dir = Path(config.run_dir)
    with network_connections() as connects:
        evidence = run_job(config, stop=StopSignal())
    assert evidence.status == "completed"
    assert connects == []  # offline: no network connection from this process

    run = read_offline_run(run_dir, RUN_ID)
    assert len(run.folders) == 1
    assert_epoch_rows_equal_metrics_json(run, run_dir)
    assert run.step_metric["train_loss"] == "epoch" and run.step_metric["val_acc"] == "epoch"
    assert run.step_metric["step/*"] == "global_step"
    assert_steps_strictly_increase(run)
    assert {"step/train_loss", "step/lr", "step/grad_norm"} <= set(run.step_rows[0])

    for row in run.epoch_rows:  # the epoch's confusion matrix, an image of the same row
        image = row["confusion_matrix"]
        assert image["_type"] == "image-file"
        stored = run.folders[0] / "files" / image["path"]
        assert stored.read_bytes() == (run_dir / "plots" / f"confusion_matrix_epoch_{row['epoch']:03d}.png").read_bytes()
    assert "learning_curves.png" in run.files
    assert run.config["train.lr"] == "0.003" and run.config["config_hash"] == config.config_hash()
    assert run.config["trainpipe.phase"] == "02_baseline"
    assert run.exit_codes == [0]
    assert not (run_dir / TRACKING_STATUS_FILE).exists()


def test_a_resumed_job_continues_its_wandb_run_without_repeating_a_step(make_job) -> None:
    config = wandb_job(make_job, "wb-resume")
    run_dir = Path(config.run_dir)
    stop = StopSignal()
    stop_at = 30  # digits: 23 steps per epoch, so mid-way through epoch 2

    def request_stop(step: int) -> None:
        if step == stop_at:
            stop.request("test")

    first = run_job(config, stop=stop, on_step=request_stop)
    assert first.status == "interrupted"
    # As if the job had died at step 30 without its interrupt checkpoint: the
    # next attempt resumes from the end of epoch 1 and replays steps 24-30,
    # which the run already holds (25 and 30 were logged).
    checkpoints = run_dir / "checkpoints"
    shutil.copyfile(checkpoints / "checkpoint_epoch_1.pt", checkpoints / "last_model.pt")
    second = run_job(config, stop=StopSignal())
    assert second.status == "completed" and second.resumed_from_epoch == 1

    run = read_offline_run(run_dir, RUN_ID)
    assert len(run.folders) == 2  # one offline run folder per attempt, one run id
    assert_epoch_rows_equal_metrics_json(run, run_dir)
    assert_steps_strictly_increase(run)
    assert [row["global_step"] for row in run.step_rows][:6] == [5, 10, 15, 20, 25, 30]
    assert run.exit_codes == [75, 0]


def test_log_model_artifact_gives_the_model_its_aliases(tmp_path: Path) -> None:
    from trainpipe_trainer.tracking.wandb_sink import init_run, log_model_artifact

    model = tmp_path / "export" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(b"onnx bytes")
    guide = tmp_path / "export" / "deployment_guide.md"
    guide.write_text("# Deploy\n")
    target = WandbJobTarget(project="trainpipe-test", run_id="digits-05-finalization", run_name="05_finalization",
                            group="digits-1")
    run = init_run(target, tmp_path, job_type="finalization")
    log_model_artifact(run, [model, guide], ["candidate"], name="digits-classifier",
                       metadata={"runId": "digits-1"})
    # the approval: the same files again, now champion: the same version (digest)
    log_model_artifact(run, {"model.onnx": model, "deployment_guide.md": guide}, ["champion"],
                       name="digits-classifier", metadata={"runId": "digits-1"})
    run.finish()

    offline = read_offline_run(tmp_path, "digits-05-finalization")
    candidate, champion = offline.artifacts
    assert (candidate.name, candidate.type) == ("digits-classifier", "model")
    assert set(candidate.aliases) == {"candidate", "latest"}  # wandb adds latest
    assert sorted(entry.path for entry in candidate.manifest.contents) == ["deployment_guide.md", "model.onnx"]
    assert json.loads(candidate.metadata) == {"runId": "digits-1"}
    assert "champion" in champion.aliases and champion.digest == candidate.digest


def test_an_online_run_without_an_api_key_is_refused_and_the_job_trains_on(make_job) -> None:
    config = wandb_job(make_job, "wb-online", train={"epochs": 1})
    assert config.tracking is not None and config.tracking.wandb is not None
    config.tracking.wandb.mode = "online"
    evidence = run_job(config, stop=StopSignal())
    assert evidence.status == "completed"
    status = json.loads((Path(config.run_dir) / TRACKING_STATUS_FILE).read_text())
    assert status["sink"] == "wandb" and status["sinks"]["wandb"]["disabled"] is True
    assert "WANDB_API_KEY is not set" in status["error"]
    assert not (Path(config.run_dir) / "wandb").exists()  # wandb was never started
