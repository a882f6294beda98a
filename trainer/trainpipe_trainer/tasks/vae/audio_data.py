"""The ``vae`` task's data layer: ``data.source`` in, three chunk datasets and a report out.

``build_audio_data`` resolves the source (``audio_source``: ``builtin:tones``
or a folder), scans it for audio files (``audio_files``), reads each file's
header, splits the files whose header reads BY FILE from the seed
(``data.splits``, the classifier's seeded largest-remainder split, with one
pseudo-class ``audio``), decodes each file once (mono, resampled to
``data.audio.sampleRate``), cuts it into chunks (``chunks``) and keeps them
in memory (``chunk_dataset``).

Sharded decoding (``world_size > 1``, a DDP rank of a training job): every
rank draws the same split from the headers, then decodes only its shard of
each split (``shard_files``: every N-th file of the split's sorted list), so
a rank's memory and load time are about 1/N of the whole. The engine trains
on such per-rank datasets as they are (``TaskData.sharded``).

Why by file: chunks of one recording are nearly the same sample; a chunk in
train and its neighbour in val would make validation measure memory. The
report's ``audio.chunk_leakage`` is computed from what the datasets hold,
so the split-integrity check reads a measurement, not a promise.

Nothing here raises for a bad dataset: an unreadable file is listed and left
out, fewer than 5 usable files shows in ``audio.files`` (the Planning gate
fails on it), more than 500 is noted. Only a source that cannot be opened at
all raises ``DataSourceError``.

Report conventions: ``counts`` is ``{split: {"files": n}}`` and
``actual_fractions`` are fractions of usable FILES (what the split divides);
``total_samples`` counts chunks (the training samples). ``classes`` is
empty. Content hashes (duplicates) are of the decoded wave at the target
rate, so the same audio under another name or format is found.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from trainpipe_trainer.contract.data_report import (
    SPLITS,
    AudioDataReport,
    AudioFileNote,
    DataReport,
    NonFiniteSample,
    UnreadableFile,
)
from trainpipe_trainer.contract.job_config import DataConfig
from trainpipe_trainer.data.report import content_hash
from trainpipe_trainer.data.splits import split_by_class
from trainpipe_trainer.tasks.vae.audio_files import (
    AUDIO_EXTENSIONS,
    AudioDecodeError,
    AudioInfo,
    DecodedAudio,
    decode_audio,
    list_audio,
    probe_audio,
)
from trainpipe_trainer.tasks.vae.audio_report import (
    duration_summary,
    find_chunk_leakage,
    find_duplicates,
    is_clipped,
    is_silent,
    rms_dbfs,
)
from trainpipe_trainer.tasks.vae.audio_source import resolve_audio_source
from trainpipe_trainer.tasks.vae.chunk_dataset import AudioChunkDataset
from trainpipe_trainer.tasks.vae.chunks import chunk_count, chunk_samples_for, chunk_wave

__all__ = ["AudioData", "build_audio_data", "find_chunk_leakage", "shard_files"]

MIN_FILES = 5
MAX_FILES = 500
SPLIT_GROUP = "audio"  # the one pseudo-class the seeded split is drawn for


@dataclass
class AudioData:
    train: AudioChunkDataset
    val: AudioChunkDataset
    test: AudioChunkDataset
    report: DataReport
    sample_rate: int
    chunk_samples: int
    shard: tuple[int, int] = (0, 1)  # (rank, world size): the datasets hold this shard's files

    def split(self, name: str) -> AudioChunkDataset:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _decode_all(
    paths: list[Path], sample_rate: int
) -> list[DecodedAudio | AudioDecodeError]:
    import librosa  # noqa: F401  (imported once here, not concurrently by the threads)

    def one(path: Path) -> DecodedAudio | AudioDecodeError:
        try:
            return decode_audio(path, sample_rate)
        except AudioDecodeError as exc:
            return exc

    threads = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, paths))


def _probe_all(paths: list[Path]) -> list[AudioInfo | AudioDecodeError]:
    def one(path: Path) -> AudioInfo | AudioDecodeError:
        try:
            return probe_audio(path)
        except AudioDecodeError as exc:
            return exc

    return [one(path) for path in paths]


def shard_files(files: list[str], rank: int, world_size: int) -> list[str]:
    """Rank ``rank``'s files of one split: every ``world_size``-th file of the
    split's sorted list, starting at ``rank``. Deterministic, disjoint across
    ranks, their union is the split, and shard sizes differ by one file at
    most (chunk counts may differ more: the engine pads the train shards)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return list(files[rank::world_size])


def build_audio_data(cfg: DataConfig, seed: int, rank: int = 0, world_size: int = 1) -> AudioData:
    """Open ``cfg.source`` and return the train/val/test chunk datasets with their report.

    ``world_size > 1``: sharded decoding. The split is the same on every rank
    (it is drawn from the files' headers, read by every rank); rank ``rank``
    then decodes only its shard of each split (``shard_files``), so memory
    and decode time are divided by the number of ranks. The datasets hold
    that shard; the report covers it, says so in a note, and keeps the whole
    split's fractions and fingerprint (the Planning preflight, one process,
    reports every file).
    """
    audio = cfg.audio
    root = resolve_audio_source(cfg.source, cfg.cache_dir)
    paths, skipped = list_audio(root)
    chunk_samples = chunk_samples_for(audio)
    sharded = world_size > 1
    notes: list[str] = []
    if skipped:
        notes.append(
            f"skipped {len(skipped)} file(s) that are not audio (e.g. {_relative(skipped[0], root)}); "
            f"supported: {' '.join(AUDIO_EXTENSIONS)}"
        )

    # The split is drawn over the files whose header reads, with or without
    # sharding: the Planning preflight (one process) checks exactly the split
    # a sharded training job trains on. A file whose header reads but whose
    # samples do not decode (rare: a truncated body) is listed as unreadable
    # and leaves its split one file short.
    unreadable: list[UnreadableFile] = []
    headers: dict[str, AudioInfo] = {}
    for path, probed in zip(paths, _probe_all(paths), strict=True):
        rel = _relative(path, root)
        if isinstance(probed, AudioDecodeError):
            unreadable.append(UnreadableFile(path=rel, error=str(probed)))
        else:
            headers[rel] = probed

    fractions = cfg.split.model_dump()
    assignment = {
        split: by_group[SPLIT_GROUP]
        for split, by_group in split_by_class({SPLIT_GROUP: sorted(headers)}, fractions, seed).items()
    }
    mine = {split: shard_files(assignment[split], rank, world_size) for split in SPLITS}

    wanted = [rel for split in SPLITS for rel in mine[split]]
    usable: dict[str, DecodedAudio] = {}
    for rel, result in zip(wanted, _decode_all([root / rel for rel in wanted], audio.sample_rate), strict=True):
        if isinstance(result, AudioDecodeError):
            unreadable.append(UnreadableFile(path=rel, error=str(result)))
        else:
            usable[rel] = result
    unreadable.sort(key=lambda u: u.path)
    split_of = {rel: split for split, rels in mine.items() for rel in rels if rel in usable}

    chunks: dict[str, list] = {split: [] for split in SPLITS}
    sources: dict[str, list[str]] = {split: [] for split in SPLITS}
    ids: dict[str, list[int]] = {split: [] for split in SPLITS}
    short: list[AudioFileNote] = []
    dropped_files, dropped_samples = 0, 0
    for split in SPLITS:
        offset = 0  # the chunk's index in the whole split, predicted from the headers
        for rel in assignment[split]:
            predicted = chunk_count(headers[rel].length_at(audio.sample_rate), chunk_samples)
            decoded = usable.get(rel)
            if decoded is None:  # another rank's file, or one that did not decode
                offset += predicted
                continue
            pieces, dropped = chunk_wave(decoded.wave, chunk_samples)
            chunks[split].extend(pieces)
            sources[split].extend([rel] * len(pieces))
            ids[split].extend(range(offset, offset + len(pieces)))
            offset += predicted
            if decoded.wave.shape[0] < chunk_samples:
                short.append(
                    AudioFileNote(
                        path=rel, split=split, value=round(decoded.seconds, 4),
                        detail=f"{decoded.seconds:.3f} s, shorter than one {audio.chunk_seconds} s chunk: zero-padded",
                    )
                )
            if dropped:
                dropped_files += 1
                dropped_samples += dropped

    datasets = {
        split: AudioChunkDataset(
            chunks[split],
            sources[split],
            chunk_samples,
            augment=cfg.augment if split == "train" else (),
            seed=seed,
            # unsharded: the local index is the split's index (unchanged)
            sample_ids=ids[split] if sharded else None,
        )
        for split in SPLITS
    }

    silent: list[AudioFileNote] = []
    clipped: list[AudioFileNote] = []
    nonfinite: list[NonFiniteSample] = []
    hashes: list[tuple[str, str, str]] = []
    rates: dict[str, int] = {}
    channels: dict[str, int] = {}
    for rel in sorted(usable, key=lambda r: (SPLITS.index(split_of[r]), r)):
        decoded, split = usable[rel], split_of[rel]
        level = rms_dbfs(decoded.wave)
        if is_silent(level, audio.silence_dbfs):
            silent.append(
                AudioFileNote(
                    path=rel, split=split, value=round(level, 2),
                    detail=f"RMS {level:.1f} dBFS, below data.audio.silenceDbfs {audio.silence_dbfs}",
                )
            )
        if is_clipped(decoded.clipped_fraction):
            clipped.append(
                AudioFileNote(
                    path=rel, split=split, value=round(decoded.clipped_fraction, 6),
                    detail=f"{decoded.clipped_fraction:.2%} of samples at full scale (|x| >= 0.999)",
                )
            )
        if decoded.nan_count or decoded.inf_count:
            nonfinite.append(
                NonFiniteSample(path=rel, split=split, nan_count=decoded.nan_count, inf_count=decoded.inf_count)
            )
        hashes.append((split, rel, content_hash(decoded.wave)))
        rates[str(decoded.source_rate)] = rates.get(str(decoded.source_rate), 0) + 1
        channels[str(decoded.channels)] = channels.get(str(decoded.channels), 0) + 1

    files = {split: sum(rel in usable for rel in mine[split]) for split in SPLITS}
    failed = len(wanted) - len(usable)  # header read, samples did not (this rank's files)
    split_files = {split: len(assignment[split]) for split in SPLITS}
    total_files = sum(split_files.values()) - failed
    if total_files < MIN_FILES:
        notes.append(
            f"only {total_files} usable audio file(s) under {root}: the vae task needs at least "
            f"{MIN_FILES}; add files (unreadable ones are listed)"
        )
    if total_files > MAX_FILES:
        notes.append(
            f"{total_files} usable audio files: more than {MAX_FILES} (allowed, noted; the vae "
            "defaults are tuned for small datasets)"
        )
    if dropped_files:
        notes.append(
            f"dropped the trailing partial chunk (under half of {audio.chunk_seconds} s) of "
            f"{dropped_files} file(s), {dropped_samples / audio.sample_rate:.2f} s in all"
        )

    listing = sorted(f"{split}\t{rel}" for split, rels in assignment.items() for rel in rels)
    if sharded:
        decoded_here = sum(files.values())
        notes.append(
            f"sharded decoding: rank {rank} of {world_size} decoded {decoded_here} of the split's "
            f"{sum(split_files.values())} files ({', '.join(f'{s} {files[s]}/{split_files[s]}' for s in SPLITS)}); "
            "counts, chunks, durations and the per-file findings are this shard's, the fractions and the "
            "fingerprint the whole split's; the Planning preflight's data_report.json covers every file"
        )
    report = DataReport(
        source=cfg.source,
        root=str(root),
        layout="split",
        seed=seed,
        classes=[],
        counts={split: {"files": files[split]} for split in SPLITS},
        requested_fractions=fractions,
        actual_fractions={s: (split_files[s] / sum(split_files.values()) if total_files else 0.0) for s in SPLITS},
        total_samples=sum(len(datasets[s]) for s in SPLITS),
        files_scanned=len(paths),
        split_fingerprint=hashlib.sha256("\n".join(listing).encode()).hexdigest(),
        duplicates_across_splits=find_duplicates(hashes),
        unreadable_files=unreadable,
        nonfinite_samples=nonfinite,
        notes=notes,
        audio=AudioDataReport(
            sample_rate=audio.sample_rate,
            chunk_seconds=audio.chunk_seconds,
            files=files,
            chunks={split: len(datasets[split]) for split in SPLITS},
            source_sample_rates=rates,
            channels=channels,
            durations_seconds=duration_summary([usable[r].seconds for r in sorted(usable)]),
            silent_files=silent,
            clipped_files=clipped,
            short_files=short,
            chunk_leakage=find_chunk_leakage({s: datasets[s].chunk_sources for s in SPLITS}),
            min_files=MIN_FILES,
            max_files=MAX_FILES,
        ),
    )
    return AudioData(
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        report=report,
        sample_rate=audio.sample_rate,
        chunk_samples=chunk_samples,
        shard=(rank, world_size),
    )
