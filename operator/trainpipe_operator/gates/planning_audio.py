"""Phase 1's data checks for the ``vae`` task: a folder of audio files,
split by file and cut into chunks (seed 004; docs/gates.md, "The VAE task").

They replace the classifier's data-reachable, split-integrity and
samples-finite (which count classes and samples per class) and add
``audio-quality``. Pure functions of the data report
(``DataReport.audio``, written by the trainer's preflight).

* ``data-reachable``: at least ``AUDIO_MIN_FILES`` usable files (fewer fails
  naming the count); over ``AUDIO_MAX_FILES`` passes with a note; the sample
  rates, channels and durations are quoted.
* ``audio-quality``: silent, clipped and shorter-than-a-chunk files listed;
  they warn (a person decides whether to keep them), never fail.
* ``split-integrity``: identical content in two splits fails (as for
  images), and so does any file whose chunks lie in two splits: the split
  is by file, never by chunk, or neighbouring chunks of one recording grade
  the model on what it trained on.
* ``samples-finite``: NaN/Inf samples fail; unreadable files are listed and
  warn (they are excluded, the rest trains), unless no file is usable.
"""

from __future__ import annotations

from trainpipe_operator.gates.checks import Check, failed, first_few, passed, warned
from trainpipe_operator.gates.thresholds import AUDIO_MAX_FILES, AUDIO_MIN_FILES
from trainpipe_trainer.contract.data_report import AudioDataReport, AudioFileNote, DataReport

NO_AUDIO = "the data report has no audio section: the vae task's preflight did not describe the audio files"


def usable_files(audio: AudioDataReport) -> int:
    """Usable audio files over all splits (unreadable ones are already excluded)."""
    return sum(audio.files.values())


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}s"


def describe_audio(audio: AudioDataReport) -> str:
    """``16000 Hz mono chunks of 1.00s; sources 44100 Hz x3, 16000 Hz x4;
    1 channel x7; durations 0.50s-12.00s (mean 3.10s, total 21.70s)``."""
    rates = ", ".join(f"{rate} Hz x{n}" for rate, n in sorted(audio.source_sample_rates.items(),
                                                                 key=lambda kv: -kv[1])) or "not recorded"
    channels = ", ".join(f"{c} channel{'s' if str(c) != '1' else ''} x{n}"
                         for c, n in sorted(audio.channels.items())) or "not recorded"
    d = audio.durations_seconds
    durations = (f"{_seconds(d.get('min'))}-{_seconds(d.get('max'))} (mean {_seconds(d.get('mean'))}, "
                 f"total {_seconds(d.get('total'))})") if d else "not recorded"
    return (f"resampled to {audio.sample_rate} Hz, chunks of {audio.chunk_seconds:g}s; source rates {rates}; "
            f"{channels}; durations {durations}")


def _per_split(counts: dict[str, int]) -> str:
    return ", ".join(f"{split} {n}" for split, n in counts.items()) or "none"


def check_audio_data_reachable(report: DataReport | None, evidence: str) -> Check:
    threshold = f"at least {AUDIO_MIN_FILES} usable audio files (more than {AUDIO_MAX_FILES} noted)"
    if report is None:
        return failed("data-reachable", None, threshold, evidence, "No data report: the dataset did not open.")
    audio = report.audio
    if audio is None:
        return failed("data-reachable", None, threshold, evidence, NO_AUDIO.capitalize() + ".")
    usable = usable_files(audio)
    where = (f"files per split: {_per_split(audio.files)}; chunks per split: {_per_split(audio.chunks)}; "
             f"{describe_audio(audio)}")
    unreadable = len(report.unreadable_files)
    dropped = f" ({unreadable} more unreadable, excluded)" if unreadable else ""
    if usable < AUDIO_MIN_FILES:
        return failed("data-reachable", usable, threshold, evidence,
                      f"{usable} usable audio file{'s' if usable != 1 else ''}{dropped}; the vae task needs at "
                      f"least {AUDIO_MIN_FILES} (seed 004: 5-500 files). Add recordings to data.source. {where}.")
    if audio.chunks.get("train", 0) <= 0:
        return failed("data-reachable", usable, threshold, evidence,
                      f"{usable} usable audio files but no training chunk: nothing to train on. {where}.")
    if usable > AUDIO_MAX_FILES:
        return passed("data-reachable", usable, threshold, evidence,
                      f"{usable} usable audio files{dropped}: more than the {AUDIO_MAX_FILES} the vae task was "
                      f"designed for (seed 004); allowed, noted: epochs take longer. {where}.")
    return passed("data-reachable", usable, threshold, evidence, f"{usable} usable audio files{dropped}; {where}.")


def _notes(kind: str, notes: list[AudioFileNote]) -> str:
    items = [f"{n.split + '/' if n.split else ''}{n.path}" + (f" ({n.detail})" if n.detail else "") for n in notes]
    return f"{len(notes)} {kind}: {first_few(items)}"


def check_audio_quality(report: DataReport | None, evidence: str) -> Check:
    """Silent, clipped and short files: listed, warned, never fatal."""
    threshold = "no silent, clipped or shorter-than-a-chunk file (warn only)"
    if report is None or report.audio is None:
        return failed("audio-quality", None, threshold, evidence,
                      "No data report: the files were not inspected." if report is None else NO_AUDIO.capitalize() + ".")
    audio = report.audio
    parts = []
    if audio.silent_files:
        parts.append(_notes("silent", audio.silent_files))
    if audio.clipped_files:
        parts.append(_notes("clipped", audio.clipped_files))
    if audio.short_files:
        parts.append(_notes(f"shorter than one {audio.chunk_seconds:g}s chunk (padded)", audio.short_files))
    count = len(audio.silent_files) + len(audio.clipped_files) + len(audio.short_files)
    if parts:
        return warned("audio-quality", count, threshold, evidence,
                      "Audio worth a look (kept in training; remove or fix them if they are not meant to be "
                      "there): " + "; ".join(parts) + ".")
    return passed("audio-quality", 0, threshold, evidence,
                  f"No silent, clipped or short file among the {usable_files(audio)} usable ones.")


def check_audio_split_integrity(report: DataReport | None, evidence: str) -> Check:
    threshold = 0
    if report is None:
        return failed("split-integrity", None, threshold, evidence, "No data report: the splits are unknown.")
    if report.audio is None:
        return failed("split-integrity", None, threshold, evidence, NO_AUDIO.capitalize() + ".")
    problems = []
    leaks = report.audio.chunk_leakage
    if leaks:
        names = [f"{leak.path} ({', '.join(leak.splits)})" for leak in leaks]
        problems.append(f"{len(leaks)} file(s) with chunks in more than one split: {first_few(names, 3)}; chunks "
                        "of one file in two splits is leakage (neighbouring chunks of one recording are nearly "
                        "the same sound): the split must be by file")
    dups = report.duplicates_across_splits
    if dups:
        groups = [" = ".join(f"{f.split}/{f.path}" for f in g.files) for g in dups]
        problems.append(f"{len(dups)} file(s) with identical content in more than one split (leakage): "
                        f"{first_few(groups, 3)}")
    if problems:
        return failed("split-integrity", len(leaks) + len(dups), threshold, evidence, "; ".join(problems) + ".")
    return passed("split-integrity", 0, threshold, evidence,
                  "The split is by file: no file's chunks in two splits, no content (by hash) in two splits.")


def check_audio_samples_finite(report: DataReport | None, evidence: str) -> Check:
    threshold = 0
    if report is None:
        return failed("samples-finite", None, threshold, evidence, "No data report: samples were not checked.")
    nonfinite = [f"{s.split}/{s.path} ({s.nan_count} NaN, {s.inf_count} Inf)" for s in report.nonfinite_samples]
    unreadable = [f"{u.path} ({u.error})" for u in report.unreadable_files]
    usable = usable_files(report.audio) if report.audio is not None else 0
    if nonfinite:
        return failed("samples-finite", len(nonfinite), threshold, evidence,
                      f"{len(nonfinite)} audio file(s) decode to NaN/Inf samples: {first_few(nonfinite)}. "
                      "Fix or remove them.")
    if usable == 0:
        what = f"all {len(unreadable)} unreadable: {first_few(unreadable)}" if unreadable else "no audio file found"
        return failed("samples-finite", len(unreadable), threshold, evidence, f"No usable audio file ({what}).")
    if unreadable:
        return warned("samples-finite", len(unreadable), threshold, evidence,
                      f"{len(unreadable)} unreadable file(s), excluded from every split: {first_few(unreadable)}; "
                      f"the {usable} others decode and are finite.")
    return passed("samples-finite", 0, threshold, evidence, f"All {usable} audio files decode and are finite.")
