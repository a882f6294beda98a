"""The dataset layer: ``data.source`` in, three datasets and a ``DataReport`` out.

``build_datasets`` resolves the source (``sources``), scans its layout
(``folder``), splits it from the seed when it is not pre-split (``splits``),
decodes every file once for the report (``report``), and wraps the usable
files in ``SampleDataset``s with their transforms (``dataset``,
``transforms``). The caller writes ``bundle.report`` for the Planning gate.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainpipe_trainer.contract.data_report import SPLITS, DataReport
from trainpipe_trainer.contract.job_config import DataConfig
from trainpipe_trainer.data.dataset import EpochSampler, SampleDataset
from trainpipe_trainer.data.decode import DecodeError
from trainpipe_trainer.data.folder import FolderScan, scan_folder
from trainpipe_trainer.data.report import build_report, usable_samples
from trainpipe_trainer.data.sources import DataSourceError, resolve_source
from trainpipe_trainer.data.splits import split_by_class
from trainpipe_trainer.data.transforms import build_transform

__all__ = [
    "DataBundle",
    "DataSourceError",
    "DecodeError",
    "EpochSampler",
    "SampleDataset",
    "build_datasets",
]


@dataclass
class DataBundle:
    train: SampleDataset
    val: SampleDataset
    test: SampleDataset
    classes: list[str]
    report: DataReport


def _assign(scan: FolderScan, cfg: DataConfig, seed: int) -> tuple[dict, list[str], list[str]]:
    """split -> class -> files, the splits every class should appear in, and notes."""
    fractions = cfg.split.model_dump()
    if scan.layout == "split":
        expected = [s for s in SPLITS if fractions[s] > 0]
        return split_by_class(scan.by_class, fractions, seed), expected, []
    assignment = {split: dict(scan.by_split.get(split, {})) for split in SPLITS}
    expected = [s for s in SPLITS if s in scan.by_split]
    missing = [s for s in SPLITS[1:] if s not in scan.by_split and fractions[s] > 0]
    if not missing:
        return assignment, expected, []
    # A pre-split tree without val/ or test/: carve them out of train/ by the
    # configured fractions, renormalised over train and the missing splits.
    carved = split_by_class(
        assignment["train"],
        {"train": fractions["train"], **{s: fractions[s] for s in missing}},
        seed,
    )
    for split in ["train", *missing]:
        assignment[split] = carved[split]
    notes = [
        f"pre-split layout without {s}/: carved from train/ with data.split.{s}={fractions[s]} "
        f"(relative to train and the missing splits), seed {seed}"
        for s in missing
    ]
    return assignment, expected + missing, notes


def build_datasets(cfg: DataConfig, seed: int) -> DataBundle:
    """Open ``cfg.source`` and return the train/val/test datasets with their report.

    Raises ``DataSourceError`` when the source cannot be opened or holds no usable
    file. Unreadable files do not raise: they are listed in the report and left out.
    """
    root = resolve_source(cfg.source, cfg.cache_dir)
    scan = scan_folder(root)
    assignment, expected, carve_notes = _assign(scan, cfg, seed)
    report = build_report(
        source=cfg.source,
        root=root,
        layout=scan.layout,
        classes=scan.classes,
        assignment=assignment,
        requested_fractions=cfg.split.model_dump() if scan.layout == "split" else None,
        seed=seed if (scan.layout == "split" or carve_notes) else None,
        expected_splits=expected,
        problems=scan.problems,
        notes=scan.notes + carve_notes,
        files_scanned=scan.files_scanned,
    )
    usable = usable_samples(report, assignment, scan.classes)
    datasets = {
        split: SampleDataset(
            usable[split],
            build_transform(cfg.image_size, cfg.augment, train=(split == "train")),
            seed=seed,
            classes=scan.classes,
        )
        for split in SPLITS
    }
    return DataBundle(
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        classes=list(scan.classes),
        report=report,
    )
