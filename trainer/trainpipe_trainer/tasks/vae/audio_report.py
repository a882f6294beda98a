"""Pure pieces of the audio data report: leakage, duplicates, silence and clipping.

Each takes plain values (paths, splits, measured figures) and returns the
contract's report entries, so a test can feed it a hand-made case (a leaky
chunk assignment, two splits holding the same content) without building a
dataset.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from trainpipe_trainer.contract.data_report import SPLITS, ChunkLeak, DuplicateGroup, FileRef

CLIPPED_FRACTION = 0.001  # a file with at least 0.1% of its samples clipped is listed
DBFS_FLOOR = -200.0  # the RMS level reported for digital silence (log of 0)


def _split_order(split: str) -> tuple[int, str]:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def find_chunk_leakage(chunk_files: Mapping[str, Sequence[str]]) -> list[ChunkLeak]:
    """Files whose chunks lie in more than one split.

    ``chunk_files``: split -> the source file of each of its chunks (a
    dataset's ``chunk_sources``). The split is by file, so this is empty by
    construction; it is computed anyway, from what the datasets hold.
    """
    splits_of: dict[str, set[str]] = defaultdict(set)
    for split, files in chunk_files.items():
        for path in files:
            splits_of[path].add(split)
    return [
        ChunkLeak(path=path, splits=sorted(splits, key=_split_order))
        for path, splits in sorted(splits_of.items())
        if len(splits) > 1
    ]


def find_duplicates(hashes: Iterable[tuple[str, str, str]]) -> list[DuplicateGroup]:
    """Groups of identical decoded content lying in more than one split.

    ``hashes``: (split, path, content hash) per usable file.
    """
    by_hash: dict[str, list[FileRef]] = defaultdict(list)
    for split, path, digest in hashes:
        by_hash[digest].append(FileRef(split=split, path=path))
    groups = [
        DuplicateGroup(hash=digest, files=sorted(files, key=lambda f: (_split_order(f.split), f.path)))
        for digest, files in by_hash.items()
        if len({f.split for f in files}) > 1
    ]
    return sorted(groups, key=lambda g: (_split_order(g.files[0].split), g.files[0].path))


def rms_dbfs(wave: np.ndarray) -> float:
    """RMS level of the finite samples in dB relative to full scale (floor ``DBFS_FLOOR``)."""
    finite = wave[np.isfinite(wave)]
    if finite.size == 0:
        return DBFS_FLOOR
    rms = math.sqrt(float(np.mean(np.square(finite, dtype=np.float64))))
    return max(DBFS_FLOOR, 20.0 * math.log10(rms) if rms > 0 else DBFS_FLOOR)


def is_silent(level_dbfs: float, threshold_dbfs: float) -> bool:
    return level_dbfs < threshold_dbfs


def is_clipped(clipped_fraction: float) -> bool:
    return clipped_fraction >= CLIPPED_FRACTION


def duration_summary(seconds: Sequence[float]) -> dict[str, float]:
    """min, max, mean and total seconds (empty when there are no files)."""
    if not seconds:
        return {}
    total = float(sum(seconds))
    return {
        "min": float(min(seconds)),
        "max": float(max(seconds)),
        "mean": total / len(seconds),
        "total": total,
    }
