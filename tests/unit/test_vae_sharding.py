"""Sharded decoding for the vae task: each DDP rank decodes only its shard of
each split, the engine trains on per-rank datasets (padded to equal batch
counts), and a 2-process run resumes exactly after a stop."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from tests.vae_audio import write_tones
from trainpipe_trainer.contract.data_report import SPLITS, DataReport
from trainpipe_trainer.contract.job_config import DataConfig, JobConfig
from trainpipe_trainer.engine.sampler import LocalShardSampler
from trainpipe_trainer.tasks.vae import audio_data
from trainpipe_trainer.tasks.vae.audio_data import build_audio_data, shard_files

SEED = 42  # with builtin:tones: train shards of 30 and 28 chunks (the padding is exercised)


# ------------------------------------------------------------------ the data


def test_two_ranks_decode_disjoint_files_whose_union_is_the_split(tmp_path: Path, monkeypatch) -> None:
    write_tones(tmp_path, 13, seconds=1.5)
    (tmp_path / "garbage.wav").write_bytes(b"\x00\x01garbage" * 100)
    cfg = DataConfig(source=str(tmp_path), augment=["gain", "noise"])
    whole = build_audio_data(cfg, seed=SEED)

    decoded: dict[int, list[str]] = {}
    shards = []
    real_decode = audio_data.decode_audio
    for rank in (0, 1):
        seen: list[str] = []

        def spy(path: Path, rate: int, seen: list[str] = seen):  # type: ignore[no-untyped-def]
            seen.append(Path(path).name)
            return real_decode(path, rate)

        monkeypatch.setattr(audio_data, "decode_audio", spy)
        decoded[rank] = seen
        shard = build_audio_data(cfg, seed=SEED, rank=rank, world_size=2)
        assert shard.shard == (rank, 2)
        assert shard.report.split_fingerprint == whole.report.split_fingerprint
        assert shard.report.unreadable_files == whole.report.unreadable_files  # the header probe: every rank
        assert any(f"rank {rank} of 2" in note for note in shard.report.notes)
        for split in SPLITS:
            assert sorted(shard.split(split).files) == sorted(shard_files(whole.split(split).files, rank, 2))
        shards.append(shard)

    assert not set(decoded[0]) & set(decoded[1])
    assert sorted(decoded[0] + decoded[1]) == sorted(Path(f).name for s in SPLITS for f in whole.split(s).files)
    for split in SPLITS:
        full = whole.split(split)
        a, b = (s.split(split) for s in shards)
        assert not set(a.files) & set(b.files)
        assert sorted(a.files + b.files) == full.files
        assert len(a) + len(b) == len(full)
        # each local chunk is the split's chunk of the same index, augmented the same way
        for shard in (a, b):
            for local, index in enumerate(shard.sample_ids or []):
                assert shard.chunk_sources[local] == full.chunk_sources[index]
                assert shard[(local, 3)][0].equal(full[(index, 3)][0])


def test_the_local_shard_sampler_pads_by_wrapping_and_resumes_from_any_sample() -> None:
    longest = 30
    short = LocalShardSampler(28, longest, rank=1, seed=7)
    long = LocalShardSampler(30, longest, rank=0, seed=7)
    for sampler in (short, long):
        sampler.set_epoch(2)
        order = [i for i, _ in sampler]
        assert len(order) == len(sampler) == longest  # every rank: the same batch count
        assert set(order) == set(range(sampler.local_size))  # nothing left out
    assert [i for i, _ in short][28:] == [i for i, _ in short][:2]  # the padding wraps around

    again = LocalShardSampler(28, longest, rank=1, seed=7)
    again.set_epoch(2)
    assert list(again) == list(short)  # (seed, epoch, rank) decide the order
    again.set_epoch(3)
    assert list(again) != list(short)
    assert LocalShardSampler(28, longest, rank=0, seed=7).order() != LocalShardSampler(28, longest, rank=1, seed=7).order()
    again.set_epoch(2)
    short.set_start(17)
    assert len(short) == longest - 17
    assert list(short) == list(again)[17:]  # a resume continues the same epoch's order
    with pytest.raises(ValueError, match="rank 1 holds no sample"):
        LocalShardSampler(0, longest, rank=1, seed=7)


# ------------------------------------------------------ 2-process DDP (gloo)


def _ddp_rank(rank: int, config_json: str, port: int, stop_at: int, out: str) -> None:
    """One DDP rank, as launch._ddp_worker runs it, recording its own steps."""
    import torch.distributed as dist

    from trainpipe_trainer.engine.stop import StopSignal
    from trainpipe_trainer.job import run_job

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        config = JobConfig.model_validate_json(config_json)
        stop = StopSignal()
        steps: list[int] = []

        def on_step(step: int) -> None:
            steps.append(step)
            if rank == 0 and step == stop_at:
                stop.request("test")  # rank 0 only: any_rank stops both at this step

        evidence = run_job(config, stop=stop, on_step=on_step)
        Path(out, f"rank{rank}.json").write_text(json.dumps({"steps": steps, "status": evidence.status}))
    finally:
        dist.destroy_process_group()


def _run_two_ranks(config: JobConfig, out: Path, stop_at: int = -1) -> tuple[list[int], list[int]]:
    from trainpipe_trainer.launch import _free_port

    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_ddp_rank, args=(config.model_dump_json(), _free_port(), stop_at, str(out)), nprocs=2, join=True)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return ranks[0]["steps"], ranks[1]["steps"]


@pytest.mark.slow
def test_two_process_vae_trains_on_shards_with_equal_steps_and_resumes_exactly(tmp_path: Path) -> None:
    from trainpipe_trainer.contract.evidence import Evidence

    cache = tmp_path / "cache"

    def job(name: str) -> JobConfig:
        return JobConfig.model_validate({
            "name": name, "runDir": str(tmp_path / name), "seed": SEED, "task": "vae",
            "data": {"source": "builtin:tones", "batchSize": 8, "cacheDir": str(cache), "augment": ["gain"]},
            "model": {"name": "vae-small"},
            "vae": {"previewEvery": 100, "previewClips": 1, "priorSamples": 0, "griffinLimIters": 2},
            "train": {"epochs": 2, "lr": 0.002, "logEverySteps": 100},
            "resources": {"workers": 2}, "ray": {"enabled": False},
        })

    sizes = [len(build_audio_data(job("probe").data, SEED, rank, 2).train) for rank in (0, 1)]
    assert sizes[0] != sizes[1]  # unequal shards: only the padding keeps the ranks in step
    batches = math.ceil(max(sizes) / 8)

    straight0, straight1 = _run_two_ranks(job("straight"), tmp_path / "steps-straight")
    assert straight0 == straight1 == list(range(1, 2 * batches + 1))
    straight = Evidence.read(tmp_path / "straight" / "evidence.json")
    assert straight.status == "completed" and straight.world_size == 2
    report = DataReport.read(tmp_path / "straight" / "data_report.json")
    assert report.audio is not None and report.audio.chunks["train"] == sizes[0]
    assert any("rank 0 of 2" in note for note in report.notes)
    # every sample counted once per epoch, the padding's repeats included: ranks * padded size
    assert straight.epochs[0].samples_per_second * straight.epochs[0].epoch_seconds == pytest.approx(2 * max(sizes))

    stop_at = batches + 1  # mid-way through epoch 2
    first0, first1 = _run_two_ranks(job("split"), tmp_path / "steps-first", stop_at=stop_at)
    assert first0 == first1 == list(range(1, stop_at + 1))
    assert Evidence.read(tmp_path / "split" / "evidence.json").status == "interrupted"
    rest0, rest1 = _run_two_ranks(job("split"), tmp_path / "steps-rest")
    assert rest0 == rest1 == list(range(stop_at + 1, 2 * batches + 1))
    resumed = Evidence.read(tmp_path / "split" / "evidence.json")
    assert resumed.status == "completed" and (resumed.resumed_from_epoch, resumed.resumed_from_step) == (1, 1)
    for name in ("train_loss", "val_loss", "val_recon", "val_kl"):
        assert [e.metric(name) for e in resumed.epochs] == [e.metric(name) for e in straight.epochs], name
