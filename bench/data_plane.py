"""The data plane's distributed costs, measured side by side in one run.

(a) load: the vae task's data build (``build_audio_data``: header probe,
    split, decode, chunk) in fresh rank processes: 1 rank; 2 ranks that each
    decode every file (unsharded: what every rank did before sharded
    decoding); 2 ranks that each decode their own shard. Per rank: load
    seconds and peak RSS (``resource.getrusage``, the process's high-water
    mark, also read just before the load so the load's own share shows).
    The two ranks of a 2-rank case run at the same time, as in a job.
(b) Ray Train against plain torch.distributed: trainpipe's own entry point
    (``python -m trainpipe_trainer.run``) with ``ray.enabled: true`` (a local
    Ray, started by that run for itself) and with ``ray.enabled: false``
    (torch DDP spawn, gloo), 2 CPU workers, the same job config otherwise.
    Time per epoch = the evidence's ``epoch_seconds`` (training and
    validation; Ray's start-up and per-epoch report are outside it), the
    first epoch dropped as warm-up.
(c) 2 workers against 1: the evidence's ``samples_per_second`` of the same
    job config (torch DDP path; 1 worker trains in the launching process).

(b) and (c) run interleaved, ``--rounds`` rounds (the order rotates each
round so drift does not favour one mode); the figures are medians. Every
run is a fresh process with ``OMP_NUM_THREADS=--threads-per-worker`` (1: one
core per worker, so 2 workers on 2 cores measure data parallelism rather than
two workers' intra-op threads fighting over the same cores; Ray Train gives
its workers that setting by itself).

The data: ``builtin:tones`` is 36 clips (about 60 s of audio; 58 train chunks
of 1 s): at batch 16 and 2 workers an epoch is 2 steps per rank, so fixed
per-epoch costs (validation, all-reduces, the checkpoint) would be the
measurement. The bench therefore trains on a synthetic folder it writes
(``--files`` clips of ``--seconds`` s at 22.05 kHz, resampled to 16 kHz on
load, as recorded audio usually is), and measures (a) on tones and on a
larger synthetic folder (``--load-files`` x ``--load-seconds``), where
decoding, not process start-up, is what a rank waits for.

    .venv/bin/python bench/data_plane.py [--rounds 3] [--epochs 4] [--files 200] [--seconds 3]
        [--load-files 400] [--load-seconds 6] [--batch-size 16] [--threads-per-worker 1]
        [--skip-ray] [--skip-load] [--output bench/results/data_plane.json]

Targets: Ray <= 1.05x the plain run's time per epoch; 2 workers >= 1.6x the
samples/s of 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "data_plane.json"
RAY_TARGET = 1.05
SCALING_TARGET = 1.6
SYNTH_RATE = 22050
SEED = 42


# ------------------------------------------------------------------ the data
def write_synthetic_audio(root: Path, files: int, seconds: float, rate: int = SYNTH_RATE) -> Path:
    """``files`` distinct 16-bit mono wav clips: a few random partials with a
    slow tremolo plus coloured noise, from one seeded generator."""
    import numpy as np
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240613)
    t = np.arange(int(seconds * rate)) / rate
    for index in range(files):
        partials = sum(
            rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * rng.uniform(80.0, 4000.0) * t + rng.uniform(0, 6.3))
            for _ in range(int(rng.integers(1, 5)))
        )
        tremolo = 1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 4.0) * t)
        noise = np.convolve(rng.standard_normal(t.shape[0]), np.ones(8) / 8, mode="same") * rng.uniform(0.0, 0.2)
        wave = np.asarray(partials) * tremolo + noise
        wave = 0.8 * wave / (np.max(np.abs(wave)) + 1e-9)
        sf.write(str(root / f"clip_{index:04d}.wav"), wave.astype(np.float32), rate, subtype="PCM_16")
    return root


def dataset_summary(source: str, cache_dir: str) -> dict[str, Any]:
    from trainpipe_trainer.contract.job_config import DataConfig
    from trainpipe_trainer.tasks.vae.audio_data import build_audio_data

    data = build_audio_data(DataConfig(source=source, cache_dir=cache_dir), SEED)
    audio = data.report.audio
    assert audio is not None
    return {"source": source, "files": audio.files, "chunks": audio.chunks,
            "seconds_of_audio": audio.durations_seconds.get("total"),
            "source_sample_rates": audio.source_sample_rates, "sample_rate": audio.sample_rate,
            "chunk_seconds": audio.chunk_seconds}


# ---------------------------------------------------------------- (a) load
def _load_rank(source: str, cache_dir: str, rank: int, world_size: int, sharded: bool, queue: Any) -> None:
    """One rank process: import everything and warm the decoder first, then
    time the data build.

    Peak RSS is the process's own high-water mark, ``VmHWM``. ``getrusage``'s
    ``ru_maxrss`` is recorded too but does not measure the rank on Linux: it
    survives ``execve``, so a process forked from a large parent (this
    bench, or a launcher that imported torch) starts at the parent's size."""
    import resource

    import librosa
    import numpy as np

    from trainpipe_trainer.contract.job_config import DataConfig
    from trainpipe_trainer.tasks.vae.audio_data import build_audio_data

    # librosa's first resample costs seconds (lazy imports, numba): once per
    # process, whatever the shard. Paid here, timed apart from the load.
    started = time.perf_counter()
    librosa.resample(np.zeros(4096, dtype=np.float32), orig_sr=SYNTH_RATE, target_sr=16000, res_type="soxr_hq")
    warmup = time.perf_counter() - started

    cfg = DataConfig(source=source, cache_dir=cache_dir)
    before = proc_status_mib()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    data = build_audio_data(cfg, SEED, rank=rank, world_size=world_size) if sharded else build_audio_data(cfg, SEED)
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    after = proc_status_mib()
    # CPU seconds (every thread): the rank's work, whatever else the cores run
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    held = sum(int(data.split(s).waves.numel()) * 4 for s in ("train", "val", "test"))
    files = sum(len(data.split(s).files) for s in ("train", "val", "test"))
    queue.put({"rank": rank, "load_seconds": seconds, "load_cpu_seconds": cpu, "decoder_warmup_seconds": warmup,
               "peak_rss_mib": after["VmHWM"], "peak_rss_before_load_mib": before["VmHWM"],
               "rss_before_load_mib": before["VmRSS"], "rss_after_load_mib": after["VmRSS"],
               "rss_held_by_data_mib": after["VmRSS"] - before["VmRSS"],
               "getrusage_ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "files_decoded": files, "chunk_mib_held": held / 2**20})


def proc_status_mib() -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (this process's peak) in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def measure_load(source: str, cache_dir: str, ranks: int, sharded: bool) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_load_rank, args=(source, cache_dir, r, ranks, sharded, queue)) for r in range(ranks)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        if proc.exitcode != 0:
            raise RuntimeError(f"a load rank exited with {proc.exitcode}")
    return sorted(results, key=lambda r: r["rank"])


def worst_ratio(sharded: list[dict[str, Any]], unsharded: list[dict[str, Any]], key: str) -> float | None:
    """Sharded / unsharded, each case's slowest or largest rank (a job waits for its slowest rank)."""
    low, high = max(r[key] for r in sharded), max(r[key] for r in unsharded)
    return low / high if high > 0 else None


LOAD_CASES = (("1 rank", 1, False), ("2 ranks, unsharded", 2, False), ("2 ranks, sharded", 2, True))


def load_bench(sources: dict[str, str], cache_dir: str, rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, source in sources.items():
        raw: dict[str, list] = {case: [] for case, _, _ in LOAD_CASES}
        for round_ in range(rounds):
            for case, ranks, sharded in LOAD_CASES:
                raw[case].append(measure_load(source, cache_dir, ranks, sharded))
                print(f"  round {round_ + 1} {name}, {case}: "
                      + ", ".join(f"rank {r['rank']} {r['load_seconds']:.2f} s ({r['load_cpu_seconds']:.2f} s CPU) "
                                            f"{r['peak_rss_mib']:.0f} MiB peak"
                                  for r in raw[case][-1]), flush=True)
        cases = {}
        for case, ranks, _ in LOAD_CASES:
            per_rank = []
            for rank in range(ranks):
                runs = [run[rank] for run in raw[case]]
                per_rank.append({
                    "rank": rank,
                    "load_seconds_median": statistics.median(r["load_seconds"] for r in runs),
                    "peak_rss_mib_median": statistics.median(r["peak_rss_mib"] for r in runs),
                    "load_cpu_seconds_median": statistics.median(r["load_cpu_seconds"] for r in runs),
                    "decoder_warmup_seconds_median": statistics.median(r["decoder_warmup_seconds"] for r in runs),
                    "rss_held_by_data_mib_median": statistics.median(r["rss_held_by_data_mib"] for r in runs),
                    "files_decoded": runs[0]["files_decoded"],
                    "chunk_mib_held": runs[0]["chunk_mib_held"],
                })
            cases[case] = {"per_rank": per_rank, "raw": raw[case]}
        unsharded = cases["2 ranks, unsharded"]["per_rank"]
        sharded = cases["2 ranks, sharded"]["per_rank"]

        out[name] = {
            "cases": cases,
            "sharded_vs_unsharded_2_ranks": {
                key: worst_ratio(sharded, unsharded, field)
                for key, field in (("load_seconds_ratio", "load_seconds_median"),
                                   ("load_cpu_seconds_ratio", "load_cpu_seconds_median"),
                                   ("peak_rss_ratio", "peak_rss_mib_median"),
                                   ("rss_held_by_data_ratio", "rss_held_by_data_mib_median"),
                                   ("chunk_mib_held_ratio", "chunk_mib_held"))
            } | {
                "note": ("sharded / unsharded, the slowest or largest rank of each case (a job waits for its "
                         "slowest rank); peak RSS (VmHWM) includes the interpreter, torch and librosa (the "
                         "same in every case); rss_held_by_data is VmRSS after the load minus before it; "
                         "load time excludes librosa's one-time first-call cost (decoder_warmup_seconds); load_cpu "
                         "is the rank's CPU time (all threads), which other load on the cores does not inflate"),
            },
        }
    return out


# ------------------------------------------------------- (b), (c) training
MODES = {
    "ray_2_workers": {"workers": 2, "ray": True},
    "ddp_2_workers": {"workers": 2, "ray": False},
    "one_worker": {"workers": 1, "ray": False},
}


def job_yaml(path: Path, run_dir: Path, source: str, cache_dir: str, mode: dict[str, Any],
             args: argparse.Namespace) -> Path:
    import yaml

    config = {
        "name": run_dir.name, "runDir": str(run_dir), "seed": SEED, "task": "vae", "fresh": True,
        "data": {"source": source, "batchSize": args.batch_size, "cacheDir": cache_dir, "numWorkers": 0},
        "model": {"name": "vae-small"},
        "vae": {"previewEvery": 100000, "previewClips": 1, "priorSamples": 0, "griffinLimIters": 4},
        "train": {"epochs": args.epochs, "lr": 1e-3, "logEverySteps": 100000},
        "resources": {"workers": mode["workers"], "cpusPerWorker": 1},
        "ray": {"enabled": mode["ray"], "maxFailures": 0},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_training(name: str, mode: dict[str, Any], source: str, cache_dir: str, work: Path,
                 args: argparse.Namespace) -> dict[str, Any]:
    from trainpipe_trainer.contract.evidence import Evidence

    run_dir = work / name
    run_dir.mkdir(parents=True, exist_ok=True)
    config = job_yaml(work / f"{name}.yaml", run_dir, source, cache_dir, mode, args)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(OMP_NUM_THREADS=str(args.threads_per_worker), MKL_NUM_THREADS=str(args.threads_per_worker),
               PYTHONUNBUFFERED="1")
    load = list(os.getloadavg())
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "trainpipe_trainer.run", "--config", str(config)],
                          capture_output=True, text=True, env=env, timeout=args.run_timeout)
    wall = time.perf_counter() - started
    (work / f"{name}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    evidence_path = run_dir / "evidence.json"
    if proc.returncode != 0 or not evidence_path.exists():
        raise RuntimeError(f"{name}: exit {proc.returncode}; see the tail:\n{(proc.stdout + proc.stderr)[-3000:]}")
    evidence = Evidence.read(evidence_path)
    return {
        "run": name, "workers": mode["workers"], "ray": mode["ray"], "world_size": evidence.world_size,
        "status": evidence.status, "wall_seconds": wall, "load_average_before": load,
        "epoch_seconds": [e.epoch_seconds for e in evidence.epochs],
        "samples_per_second": [e.samples_per_second for e in evidence.epochs],
        "train_loss": [e.train_loss for e in evidence.epochs],
    }


def training_bench(source: str, cache_dir: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    modes = [m for m in MODES if not (args.skip_ray and MODES[m]["ray"])]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for round_ in range(args.rounds):
        order = modes[round_ % len(modes):] + modes[: round_ % len(modes)]
        for mode in order:
            result = run_training(f"{mode}-{round_}", MODES[mode], source, cache_dir, work, args)
            runs[mode].append(result)
            print(f"  round {round_ + 1} {mode}: epochs {[round(s, 2) for s in result['epoch_seconds']]} s, "
                  f"wall {result['wall_seconds']:.1f} s", flush=True)

    def kept(mode: str, key: str) -> list[float]:  # the first epoch of every run is warm-up
        return [v for run in runs[mode] for v in run[key][1:]]

    medians = {m: {"epoch_seconds": statistics.median(kept(m, "epoch_seconds")),
                   "samples_per_second": statistics.median(kept(m, "samples_per_second")),
                   "wall_seconds": statistics.median(r["wall_seconds"] for r in runs[m])} for m in modes}
    out: dict[str, Any] = {"runs": runs, "medians": medians}
    if "ray_2_workers" in medians:
        ratio = medians["ray_2_workers"]["epoch_seconds"] / medians["ddp_2_workers"]["epoch_seconds"]
        per_round = [statistics.median(r["epoch_seconds"][1:]) / statistics.median(d["epoch_seconds"][1:])
                     for r, d in zip(runs["ray_2_workers"], runs["ddp_2_workers"], strict=True)]
        out["ray_vs_torch_ddp"] = {"epoch_seconds_ratio": ratio, "per_round_ratios": per_round,
                                   "target": RAY_TARGET, "met": ratio <= RAY_TARGET}
    scaling = medians["ddp_2_workers"]["samples_per_second"] / medians["one_worker"]["samples_per_second"]
    per_round = [statistics.median(d["samples_per_second"][1:]) / statistics.median(o["samples_per_second"][1:])
                 for d, o in zip(runs["ddp_2_workers"], runs["one_worker"], strict=True)]
    out["two_workers_vs_one"] = {"samples_per_second_ratio": scaling, "per_round_ratios": per_round,
                                 "target": SCALING_TARGET, "met": scaling >= SCALING_TARGET}
    return out


def _stopped_by(signum: int, _frame: Any) -> None:
    """Say which signal ended the bench (a shared machine's cleanups can)."""
    print(f"data_plane: stopped by signal {signal.Signals(signum).name} at "
          f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def machine() -> dict[str, Any]:
    import torch

    return {"machine": platform.machine(), "node": platform.node(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "ray": _version("ray"), "cuda_available": torch.cuda.is_available(),
            "load_average_at_start": list(os.getloadavg())}


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="per training run; the first is dropped")
    parser.add_argument("--files", type=int, default=200, help="synthetic clips")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each synthetic clip")
    parser.add_argument("--load-files", type=int, default=400, help="synthetic clips for (a)")
    parser.add_argument("--load-seconds", type=float, default=6.0, help="their length")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--skip-ray", action="store_true", help="no Ray Train runs (no (b))")
    parser.add_argument("--skip-load", action="store_true", help="no load measurement (no (a))")
    parser.add_argument("--run-timeout", type=int, default=900)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _stopped_by)

    result: dict[str, Any] = {
        "bench": "data_plane", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **machine(), "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="trainpipe-bench-") as tmp:
        work = Path(tmp)
        cache = str(work / "cache")
        synthetic = write_synthetic_audio(work / "synthetic", args.files, args.seconds)
        sources = {"builtin:tones": "builtin:tones", "synthetic": str(synthetic)}
        if not args.skip_load:
            large = write_synthetic_audio(work / "synthetic-large", args.load_files, args.load_seconds)
            sources["synthetic-large"] = str(large)
        result["datasets"] = {name: dataset_summary(src, cache) for name, src in sources.items()}
        print("datasets:", json.dumps(result["datasets"]), flush=True)
        if not args.skip_load:
            print("(a) load time and peak RSS per rank", flush=True)
            result["load"] = load_bench({k: v for k, v in sources.items() if k != "synthetic"}, cache, args.rounds)
            write(args.output.with_suffix(".partial.json"), result)  # kept if the training runs fail
        print("(b)/(c) training runs on the synthetic folder", flush=True)
        result["training"] = training_bench(str(synthetic), cache, work / "runs", args)
    targets = {}
    if "ray_vs_torch_ddp" in result["training"]:
        targets["ray_epoch_seconds_le_1.05x_torch_ddp"] = result["training"]["ray_vs_torch_ddp"]["met"]
    targets["two_workers_samples_per_second_ge_1.6x_one"] = result["training"]["two_workers_vs_one"]["met"]
    result["targets_met"] = targets
    write(args.output, result)
    args.output.with_suffix(".partial.json").unlink(missing_ok=True)
    summary = {k: v for k, v in result.items() if k not in ("load", "training")}
    summary["load"] = {name: section["sharded_vs_unsharded_2_ranks"] for name, section in result.get("load", {}).items()}
    summary["training"] = {k: v for k, v in result["training"].items() if k != "runs"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
