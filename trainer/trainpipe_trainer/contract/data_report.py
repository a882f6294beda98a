"""The data report: what the trainer found when it opened the dataset.

The Planning gate (data-reachable, split-proportions, split-integrity,
samples-finite) is a pure function of this document, so it is pure pydantic
and importing it never imports torch. The trainer writes it with
``DataReport.write``; the control plane reads it with ``DataReport.read``.

Paths inside the report are relative to ``root`` (POSIX separators), so a
report stays readable when the dataset is mounted elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trainpipe_trainer.contract.json_file import write_model_json

SPLITS = ("train", "val", "test")

ClassProblemKind = Literal["empty", "missing", "unknown"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileRef(_Model):
    split: str
    path: str = Field(description="relative to the report's root")


class DuplicateGroup(_Model):
    """Files whose decoded content is identical and that lie in more than one split."""

    hash: str = Field(description="sha256 of the decoded array's shape, dtype and bytes")
    files: list[FileRef]


class UnreadableFile(_Model):
    """A file that failed to decode; it is excluded from every dataset."""

    path: str
    error: str
    split: str | None = None


class NonFiniteSample(_Model):
    """A decoded sample holding NaN or Inf values (it stays in its dataset)."""

    path: str
    split: str
    nan_count: int
    inf_count: int


class ClassProblem(_Model):
    """A class with no samples where samples are expected.

    ``empty``: the class folder holds no usable file at all.
    ``missing``: the class has no sample in ``split`` although that split is used.
    ``unknown``: a pre-split val/test folder holds a class that train/ lacks;
    its files cannot be labelled and are excluded.
    """

    kind: ClassProblemKind
    class_name: str
    split: str | None = None
    detail: str = ""


class AudioFileNote(_Model):
    """An audio file worth a look: silent, clipped, shorter than one chunk."""

    path: str
    split: str | None = None
    detail: str = ""
    value: float | None = Field(None, description="the measured figure (dBFS, clipped fraction, seconds)")


class ChunkLeak(_Model):
    """A file whose chunks lie in more than one split (leakage)."""

    path: str
    splits: list[str]


class AudioDataReport(_Model):
    """What the ``vae`` task found in a folder of audio files. The split is
    by file; ``chunk_leakage`` lists any file whose chunks ended up in more
    than one split (the split-integrity check fails on it)."""

    sample_rate: int = Field(description="data.audio.sampleRate: every file is resampled to it")
    chunk_seconds: float
    files: dict[str, int] = Field(description="split -> usable files")
    chunks: dict[str, int] = Field(description="split -> chunks (training samples)")
    source_sample_rates: dict[str, int] = Field(default_factory=dict, description="rate (Hz) -> files")
    channels: dict[str, int] = Field(default_factory=dict, description="channel count -> files")
    durations_seconds: dict[str, float] = Field(
        default_factory=dict, description="min, max, mean, total over usable files"
    )
    silent_files: list[AudioFileNote] = Field(default_factory=list)
    clipped_files: list[AudioFileNote] = Field(default_factory=list)
    short_files: list[AudioFileNote] = Field(default_factory=list, description="shorter than one chunk: padded")
    chunk_leakage: list[ChunkLeak] = Field(default_factory=list)
    min_files: int = Field(5, description="fewer usable files fail Planning")
    max_files: int = Field(500, description="more are allowed and noted")


class DataReport(_Model):
    source: str = Field(description="data.source as configured")
    root: str = Field(description="the resolved local folder the files were read from")
    layout: Literal["presplit", "split"]
    seed: int | None = Field(
        None, description="seed of the split (layout 'split' or carved splits)"
    )
    classes: list[str]
    counts: dict[str, dict[str, int]] = Field(
        description="split -> class -> number of usable samples"
    )
    requested_fractions: dict[str, float] | None = Field(
        None, description="data.split as configured; None for a pre-split layout"
    )
    actual_fractions: dict[str, float]
    total_samples: int = Field(description="usable samples over all splits (unreadable excluded)")
    files_scanned: int = Field(0, description="files with a supported extension, usable or not")
    split_fingerprint: str = Field(
        "", description="sha256 of the sorted (split, path) assignment: same seed, same value"
    )
    duplicates_across_splits: list[DuplicateGroup] = Field(default_factory=list)
    unreadable_files: list[UnreadableFile] = Field(default_factory=list)
    nonfinite_samples: list[NonFiniteSample] = Field(default_factory=list)
    class_problems: list[ClassProblem] = Field(default_factory=list)
    notes: list[str] = Field(
        default_factory=list,
        description="what was ignored or inferred (skipped files, carved splits)",
    )
    audio: AudioDataReport | None = Field(None, description="the vae task's audio findings")

    def max_fraction_deviation(self) -> float | None:
        """Largest |actual - requested| over the splits; None for a pre-split layout."""
        if self.requested_fractions is None:
            return None
        return max(
            (
                abs(self.actual_fractions.get(split, 0.0) - wanted)
                for split, wanted in self.requested_fractions.items()
            ),
            default=0.0,
        )

    def write(self, path: str | Path) -> Path:
        """Write as JSON through a temporary file and a rename: never half-written."""
        return write_model_json(self, path)

    @classmethod
    def read(cls, path: str | Path) -> DataReport:
        with open(path, encoding="utf-8") as handle:
            return cls.model_validate(json.load(handle))
