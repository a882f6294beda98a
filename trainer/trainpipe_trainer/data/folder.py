"""Scan an ImageFolder root and tell its layout.

Two layouts are accepted:

* pre-split: the root holds ``train/`` (with class sub-folders) and
  optionally ``val/`` and ``test/``. They are used as they are. The classes are
  the sorted class folder names of ``train/``; a class folder in ``val/`` or
  ``test/`` that ``train/`` lacks cannot be labelled: its files are excluded
  and reported as an ``unknown`` class problem.
* split: the class folders are at the root; the files are split later
  (``splits.py``) from the seed.

A class folder's files are collected recursively. Supported extensions
(case-insensitive): ``.png .jpg .jpeg .bmp .gif .tif .tiff .webp`` and ``.npy``
(float arrays shaped HxW or HxWxC with C in 1 or 3, see ``decode.py``).
Hidden files and folders (name starting with ``.``) are skipped; other files
are skipped too but counted in the notes, never silently. Every list is sorted
by relative path so the same folder always gives the same order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from trainpipe_trainer.contract.data_report import SPLITS, ClassProblem
from trainpipe_trainer.data.sources import DataSourceError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_EXTENSIONS = (".npy",)
SUPPORTED_EXTENSIONS = IMAGE_EXTENSIONS + ARRAY_EXTENSIONS


@dataclass
class FolderScan:
    """What was found under ``root``. Exactly one of ``by_class`` / ``by_split`` is filled."""

    root: Path
    layout: Literal["presplit", "split"]
    classes: list[str]
    by_class: dict[str, list[Path]] = field(default_factory=dict)
    by_split: dict[str, dict[str, list[Path]]] = field(default_factory=dict)
    problems: list[ClassProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files_scanned: int = 0


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _loose_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def list_files(class_dir: Path) -> tuple[list[Path], list[Path]]:
    """Return (supported files, skipped files) under ``class_dir``, recursively and sorted."""
    kept: list[Path] = []
    skipped: list[Path] = []
    for current, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(current) / name
            (kept if path.suffix.lower() in SUPPORTED_EXTENSIONS else skipped).append(path)
    return sorted(kept), sorted(skipped)


def is_presplit(root: Path) -> bool:
    """Pre-split when ``root/train`` is a folder holding at least one class folder."""
    train = root / "train"
    return train.is_dir() and bool(_visible_dirs(train))


def _scan_classes(folder: Path, scan: FolderScan) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for class_dir in _visible_dirs(folder):
        kept, skipped = list_files(class_dir)
        found[class_dir.name] = kept
        scan.files_scanned += len(kept)
        if skipped:
            example = skipped[0].relative_to(scan.root).as_posix()
            scan.notes.append(
                f"skipped {len(skipped)} file(s) with unsupported extensions in "
                f"{class_dir.relative_to(scan.root).as_posix()}/ (e.g. {example}); "
                f"supported: {' '.join(SUPPORTED_EXTENSIONS)}"
            )
    loose = _loose_files(folder)
    if loose:
        scan.notes.append(
            f"ignored {len(loose)} file(s) directly in {folder.relative_to(scan.root).as_posix() or '.'}/: "
            "files must be inside a class folder"
        )
    return found


def scan_folder(root: Path) -> FolderScan:
    """Scan ``root``; raise ``DataSourceError`` when it holds no class folder or no usable file."""
    root = Path(root)
    if is_presplit(root):
        scan = FolderScan(root=root, layout="presplit", classes=[])
        for split in SPLITS:
            if (root / split).is_dir():
                scan.by_split[split] = _scan_classes(root / split, scan)
        extra = [p.name for p in _visible_dirs(root) if p.name not in SPLITS]
        if extra:
            scan.notes.append(
                f"pre-split layout: ignored folder(s) {extra} at the root; only train/ val/ test/ are read"
            )
        scan.classes = sorted(scan.by_split["train"])
        for split, classes in scan.by_split.items():
            for name in [c for c in classes if c not in scan.classes]:
                files = classes.pop(name)
                scan.problems.append(
                    ClassProblem(
                        kind="unknown",
                        class_name=name,
                        split=split,
                        detail=f"{len(files)} file(s) in {split}/{name}/ excluded: train/ has no "
                        f"class {name!r}; add train/{name}/ or remove the folder",
                    )
                )
        total = sum(len(files) for classes in scan.by_split.values() for files in classes.values())
    else:
        scan = FolderScan(root=root, layout="split", classes=[])
        scan.by_class = _scan_classes(root, scan)
        scan.classes = sorted(scan.by_class)
        total = sum(len(files) for files in scan.by_class.values())
    if not scan.classes:
        raise DataSourceError(
            f"data.source: {str(root)!r} holds no class folder; expected <root>/<class>/<file> "
            "or <root>/train/<class>/<file> (with optional val/ and test/)"
        )
    if total == 0:
        raise DataSourceError(
            f"data.source: {str(root)!r} holds class folders {scan.classes[:5]} but no file with a "
            f"supported extension ({' '.join(SUPPORTED_EXTENSIONS)})"
        )
    return scan
