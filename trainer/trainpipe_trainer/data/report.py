"""Build the ``DataReport``: decode every file once and record what is wrong.

Why decode everything before training: a corrupt file or a NaN found in
epoch 7 wastes a run, and a sample copied into both train and val inflates the
val metric silently. The Planning gate reads the result:

* content hash (sha256 of the decoded array's dtype, shape and bytes) finds
  the same sample in two splits, even under another file name or format;
* files that fail to decode are listed by path with the error and are
  excluded from the datasets (``usable_samples``), never dropped silently;
* decoded samples holding NaN/Inf are listed with their counts (they stay in
  their dataset: the samples-finite check fails the gate instead);
* counts per split and class, actual fractions, classes with no sample.

Decoding runs in a small thread pool: PIL and numpy release the GIL while
they read and decode.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from trainpipe_trainer.contract.data_report import (
    SPLITS,
    ClassProblem,
    DataReport,
    DuplicateGroup,
    FileRef,
    NonFiniteSample,
    UnreadableFile,
)
from trainpipe_trainer.data.decode import DecodeError, decode_array

Assignment = Mapping[str, Mapping[str, Sequence[Path]]]


@dataclass(frozen=True)
class _Decoded:
    hash: str | None = None
    nan_count: int = 0
    inf_count: int = 0
    error: str | None = None


def content_hash(array: np.ndarray) -> str:
    digest = hashlib.sha256(f"{array.dtype.str}{tuple(array.shape)}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _inspect(path: Path) -> _Decoded:
    try:
        array = decode_array(path)
    except DecodeError as exc:
        return _Decoded(error=str(exc))
    nan = int(np.isnan(array).sum())
    inf = int(np.isinf(array).sum())
    return _Decoded(hash=content_hash(array), nan_count=nan, inf_count=inf)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def build_report(
    *,
    source: str,
    root: Path,
    layout: Literal["presplit", "split"],
    classes: Sequence[str],
    assignment: Assignment,
    requested_fractions: Mapping[str, float] | None,
    seed: int | None,
    expected_splits: Iterable[str] | None = None,
    problems: Iterable[ClassProblem] = (),
    notes: Iterable[str] = (),
    files_scanned: int | None = None,
    workers: int | None = None,
) -> DataReport:
    """Decode every assigned file and summarise. ``expected_splits``: splits every class should
    appear in (default: the splits holding any file)."""
    root = Path(root)
    entries = [
        (split, name, Path(path))
        for split in SPLITS
        for name in sorted(assignment.get(split, {}))
        for path in assignment[split][name]
    ]
    threads = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        decoded = list(pool.map(_inspect, (path for _, _, path in entries)))

    counts = {split: dict.fromkeys(classes, 0) for split in SPLITS}
    unreadable: list[UnreadableFile] = []
    nonfinite: list[NonFiniteSample] = []
    by_hash: dict[str, list[FileRef]] = defaultdict(list)
    for (split, name, path), result in zip(entries, decoded, strict=True):
        rel = _relative(path, root)
        if result.error is not None:
            unreadable.append(UnreadableFile(path=rel, error=result.error, split=split))
            continue
        counts[split][name] = counts[split].get(name, 0) + 1
        if result.nan_count or result.inf_count:
            nonfinite.append(
                NonFiniteSample(
                    path=rel, split=split, nan_count=result.nan_count, inf_count=result.inf_count
                )
            )
        assert result.hash is not None
        by_hash[result.hash].append(FileRef(split=split, path=rel))
    duplicates = [
        DuplicateGroup(hash=digest, files=files)
        for digest, files in by_hash.items()
        if len({f.split for f in files}) > 1
    ]
    duplicates.sort(key=lambda group: (group.files[0].split, group.files[0].path))

    split_totals = {split: sum(counts[split].values()) for split in SPLITS}
    total = sum(split_totals.values())
    actual = {split: (split_totals[split] / total if total else 0.0) for split in SPLITS}
    if expected_splits is None:
        expected_splits = [s for s in SPLITS if any(assignment.get(s, {}).values())]
    class_problems = list(problems) + _class_problems(classes, counts, list(expected_splits))

    listing = sorted(f"{split}\t{_relative(path, root)}" for split, _, path in entries)
    fingerprint = hashlib.sha256("\n".join(listing).encode()).hexdigest()
    return DataReport(
        source=source,
        root=str(root),
        layout=layout,
        seed=seed,
        classes=list(classes),
        counts=counts,
        requested_fractions=dict(requested_fractions) if requested_fractions is not None else None,
        actual_fractions=actual,
        total_samples=total,
        files_scanned=len(entries) if files_scanned is None else files_scanned,
        split_fingerprint=fingerprint,
        duplicates_across_splits=duplicates,
        unreadable_files=unreadable,
        nonfinite_samples=nonfinite,
        class_problems=class_problems,
        notes=list(notes),
    )


def _class_problems(
    classes: Sequence[str], counts: Mapping[str, Mapping[str, int]], expected: Sequence[str]
) -> list[ClassProblem]:
    found: list[ClassProblem] = []
    for name in classes:
        if not any(counts[split].get(name, 0) for split in SPLITS):
            found.append(
                ClassProblem(
                    kind="empty",
                    class_name=name,
                    detail=f"class {name!r} has no readable file in any split; add files or "
                    "remove the folder",
                )
            )
            continue
        for split in expected:
            if counts[split].get(name, 0) == 0:
                found.append(
                    ClassProblem(
                        kind="missing",
                        class_name=name,
                        split=split,
                        detail=f"class {name!r} has no readable sample in {split}; add files "
                        "(a class needs at least 3 files to appear in train, val and test)",
                    )
                )
    return found


def usable_samples(
    report: DataReport, assignment: Assignment, classes: Sequence[str]
) -> dict[str, list[tuple[Path, int]]]:
    """split -> [(path, class index)] without the files the report lists as unreadable."""
    root = Path(report.root)
    bad = {item.path for item in report.unreadable_files}
    index = {name: i for i, name in enumerate(classes)}
    return {
        split: [
            (Path(path), index[name])
            for name in sorted(assignment.get(split, {}))
            for path in assignment[split][name]
            if _relative(Path(path), root) not in bad
        ]
        for split in SPLITS
    }
