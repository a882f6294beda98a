"""Deterministic, stratified train/val/test split by file.

Each class's sorted file list is shuffled by a ``random.Random`` seeded from
(seed, class name) and cut by the fractions. Seeding per class (through
sha256, not Python's salted ``hash``) keeps a class's split unchanged when
another class gains or loses files, and the same seed always gives the same
split on every machine and Python process.

Counts per class use the largest-remainder method, so they always add up to
the class's file count exactly; a class with at least 3 files gets at least
one val and one test file whenever those fractions are > 0, and never loses
its last train file.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from typing import TypeVar

from trainpipe_trainer.contract.data_report import SPLITS

T = TypeVar("T")


def class_rng(seed: int, class_name: str) -> random.Random:
    """A generator that depends only on (seed, class name)."""
    digest = hashlib.sha256(f"trainpipe-split:{seed}:{class_name}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """How many of ``n`` files go to each split (keys of ``fractions``, train first)."""
    names = list(fractions)
    total = sum(fractions.values())
    if total <= 0:
        raise ValueError(f"split fractions must add up to more than 0, got {dict(fractions)}")
    raw = {k: n * fractions[k] / total for k in names}
    counts = {k: math.floor(raw[k]) for k in names}
    by_remainder = sorted(names, key=lambda k: (-(raw[k] - counts[k]), names.index(k)))
    for k in by_remainder[: max(0, n - sum(counts.values()))]:
        counts[k] += 1
    if n >= 3:
        for k in names[1:]:
            if fractions[k] > 0 and counts[k] == 0:
                donor = max(names, key=lambda d: (counts[d], -names.index(d)))
                counts[donor] -= 1
                counts[k] += 1
    first = names[0]
    if n >= 1 and counts[first] == 0:
        donor = max(names[1:], key=lambda d: counts[d])
        counts[donor] -= 1
        counts[first] += 1
    assert sum(counts.values()) == n, (n, counts)
    return counts


def split_by_class(
    by_class: Mapping[str, Sequence[T]], fractions: Mapping[str, float], seed: int
) -> dict[str, dict[str, list[T]]]:
    """Return split -> class -> sorted items. ``fractions`` maps split names, train first."""
    names = [s for s in SPLITS if s in fractions] + [s for s in fractions if s not in SPLITS]
    ordered = {k: float(fractions[k]) for k in names}
    out: dict[str, dict[str, list[T]]] = {k: {} for k in names}
    for class_name in sorted(by_class):
        items = sorted(by_class[class_name], key=str)
        class_rng(seed, class_name).shuffle(items)
        counts = split_counts(len(items), ordered)
        start = 0
        for k in names:
            out[k][class_name] = sorted(items[start : start + counts[k]], key=str)
            start += counts[k]
    return out
