"""The vae task's data layer (``tasks/vae/audio_data.py``) and its report."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.vae_audio import tone, write_audio, write_tones
from trainpipe_trainer.contract.data_report import SPLITS, DataReport
from trainpipe_trainer.contract.job_config import AudioConfig, DataConfig, SplitFractions
from trainpipe_trainer.tasks.vae.audio_data import build_audio_data, find_chunk_leakage
from trainpipe_trainer.tasks.vae.chunks import chunk_wave


def config(root: Path, **audio: object) -> DataConfig:
    return DataConfig(source=str(root), audio=AudioConfig(**audio))


def chunk_files(data) -> dict[str, list[str]]:
    return {split: data.split(split).chunk_sources for split in SPLITS}


# ------------------------------------------------------------- chunking


def test_chunks_do_not_overlap_and_a_tail_of_half_a_chunk_is_padded() -> None:
    wave = np.arange(250, dtype=np.float32) + 1
    chunks, dropped = chunk_wave(wave, 100)
    assert dropped == 0 and len(chunks) == 3
    np.testing.assert_array_equal(np.concatenate(chunks)[:250], wave)
    assert (chunks[2][50:] == 0).all()


def test_a_tail_under_half_a_chunk_is_dropped() -> None:
    chunks, dropped = chunk_wave(np.ones(249, dtype=np.float32), 100)
    assert len(chunks) == 2 and dropped == 49


def test_a_file_shorter_than_one_chunk_is_padded_to_one() -> None:
    chunks, dropped = chunk_wave(np.ones(30, dtype=np.float32), 100)
    assert len(chunks) == 1 and dropped == 0 and chunks[0].sum() == 30


# ------------------------------------------------------------- the split


def test_the_split_is_by_file_and_reported_without_leakage(tmp_path: Path) -> None:
    write_tones(tmp_path, 12, seconds=3.2)  # 3 full chunks each
    data = build_audio_data(config(tmp_path), seed=1)
    report = data.report
    files = {split: set(data.split(split).chunk_sources) for split in SPLITS}
    assert not files["train"] & files["val"] and not files["train"] & files["test"]
    assert not files["val"] & files["test"]
    assert report.audio is not None
    assert report.audio.files == {"train": 10, "val": 1, "test": 1} == {s: len(files[s]) for s in SPLITS}
    assert report.audio.chunks == {"train": 30, "val": 3, "test": 3}
    assert report.counts == {s: {"files": report.audio.files[s]} for s in SPLITS}
    assert report.audio.chunk_leakage == []
    assert report.layout == "split" and report.classes == [] and report.seed == 1
    assert report.total_samples == 36 and report.files_scanned == 12
    assert report.requested_fractions == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert report.actual_fractions == pytest.approx({"train": 10 / 12, "val": 1 / 12, "test": 1 / 12})
    assert data.sample_rate == 16000 and data.chunk_samples == 16000
    DataReport.model_validate_json(report.model_dump_json())  # round-trips through JSON


def test_the_split_follows_the_seed(tmp_path: Path) -> None:
    write_tones(tmp_path, 10, seconds=1.0)
    one = build_audio_data(config(tmp_path), seed=3)
    again = build_audio_data(config(tmp_path), seed=3)
    other = build_audio_data(config(tmp_path), seed=4)
    assert chunk_files(one) == chunk_files(again)
    assert one.report.split_fingerprint == again.report.split_fingerprint
    assert one.report.split_fingerprint != other.report.split_fingerprint


def test_every_split_gets_a_file_from_three_files(tmp_path: Path) -> None:
    write_tones(tmp_path, 3, seconds=1.0)
    data = build_audio_data(config(tmp_path), seed=0)
    assert data.report.audio.files == {"train": 1, "val": 1, "test": 1}


def test_a_zero_fraction_split_stays_empty(tmp_path: Path) -> None:
    write_tones(tmp_path, 6, seconds=1.0)
    cfg = DataConfig(source=str(tmp_path), split=SplitFractions(train=0.8, val=0.2, test=0.0))
    data = build_audio_data(cfg, seed=0)
    assert len(data.test) == 0 and data.report.audio.files["test"] == 0


def test_chunk_leakage_flags_a_file_in_two_splits() -> None:
    leaky = {"train": ["a.wav", "a.wav", "b.wav"], "val": ["c.wav", "a.wav"], "test": ["b.wav", "d.wav"]}
    leaks = find_chunk_leakage(leaky)
    assert [(leak.path, leak.splits) for leak in leaks] == [
        ("a.wav", ["train", "val"]),
        ("b.wav", ["train", "test"]),
    ]
    assert find_chunk_leakage({"train": ["a.wav", "a.wav"], "val": ["b.wav"], "test": []}) == []


# ------------------------------------------------------------- what the report finds


def test_a_corrupt_file_is_listed_and_excluded_not_fatal(tmp_path: Path) -> None:
    write_tones(tmp_path, 6, seconds=1.0)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "garbage.wav").write_bytes(b"\x00\x01garbage" * 100)
    (tmp_path / "readme.txt").write_text("not audio")
    data = build_audio_data(config(tmp_path), seed=0)
    report = data.report
    assert [u.path for u in report.unreadable_files] == ["sub/garbage.wav"]
    assert "sub/garbage.wav" in report.unreadable_files[0].error
    assert sum(report.audio.files.values()) == 6 and report.files_scanned == 7
    assert all("garbage" not in src for split in SPLITS for src in data.split(split).chunk_sources)
    assert any("readme.txt" in note for note in report.notes)


def test_fewer_than_five_files_report_the_count_without_raising(tmp_path: Path) -> None:
    write_tones(tmp_path, 3, seconds=1.0)
    (tmp_path / "bad.flac").write_bytes(b"nope")
    report = build_audio_data(config(tmp_path), seed=0).report
    assert sum(report.audio.files.values()) == 3 and report.audio.min_files == 5
    assert len(report.unreadable_files) == 1
    assert any("only 3 usable audio file(s)" in note for note in report.notes)


def test_an_empty_folder_reports_zero_files(tmp_path: Path) -> None:
    data = build_audio_data(config(tmp_path), seed=0)
    assert data.report.audio.files == {"train": 0, "val": 0, "test": 0}
    assert len(data.train) == 0 and data.report.total_samples == 0


def test_more_than_five_hundred_files_are_allowed_and_noted(tmp_path: Path) -> None:
    wave = tone(0.05, freq=300.0)
    for i in range(501):
        write_audio(tmp_path / f"{i:03d}.wav", np.roll(wave, i))
    report = build_audio_data(config(tmp_path, chunk_seconds=0.1), seed=0).report
    assert sum(report.audio.files.values()) == 501
    assert any("more than 500" in note and "allowed" in note for note in report.notes)


def test_duplicates_across_splits_are_found_under_another_name_and_format(tmp_path: Path) -> None:
    write_tones(tmp_path, 6, seconds=1.0)
    original = "f000.wav"
    shutil.copy(tmp_path / original, tmp_path / "renamed.wav")
    samples, rate = sf.read(str(tmp_path / original), dtype="int16")
    write_audio(tmp_path / "copy.flac", samples, rate=rate)  # the same samples, losslessly re-encoded
    seen_across = seen_together = False
    for seed in range(30):
        data = build_audio_data(config(tmp_path), seed=seed)
        split_of = {src: s for s in SPLITS for src in data.split(s).chunk_sources}
        copies = {original, "renamed.wav", "copy.flac"}
        groups = data.report.duplicates_across_splits
        if len({split_of[name] for name in copies}) > 1:
            seen_across = True
            assert len(groups) == 1
            assert {ref.path for ref in groups[0].files} == copies
            assert {ref.split for ref in groups[0].files} == {split_of[name] for name in copies}
        else:
            seen_together = True
            assert groups == []
        if seen_across and seen_together:
            break
    assert seen_across and seen_together


def test_silent_and_clipped_files_are_listed_and_kept(tmp_path: Path) -> None:
    write_tones(tmp_path, 5, seconds=1.0)
    write_audio(tmp_path / "silent.wav", np.zeros(16000, dtype=np.float32))
    write_audio(tmp_path / "quiet.wav", tone(1.0, amplitude=1e-4))  # -83 dBFS
    clipped = np.clip(tone(1.0, amplitude=3.0), -1.0, 1.0)
    write_audio(tmp_path / "clipped.wav", clipped)
    data = build_audio_data(config(tmp_path, silence_dbfs=-60.0), seed=0)
    audio = data.report.audio
    assert sorted(n.path for n in audio.silent_files) == ["quiet.wav", "silent.wav"]
    by_path = {n.path: n for n in audio.silent_files}
    assert by_path["quiet.wav"].value == pytest.approx(-83.0, abs=0.5)
    assert by_path["silent.wav"].value == -200.0
    assert [n.path for n in audio.clipped_files] == ["clipped.wav"]
    assert audio.clipped_files[0].value > 0.5
    assert sum(audio.files.values()) == 8  # listed, not removed
    split_of = {src: s for s in SPLITS for src in data.split(s).chunk_sources}
    assert {n.split for n in audio.silent_files} == {split_of["quiet.wav"], split_of["silent.wav"]}


def test_short_files_are_padded_and_listed_and_tails_noted(tmp_path: Path) -> None:
    write_tones(tmp_path, 5, seconds=1.2)  # 0.2 s tails: dropped
    write_audio(tmp_path / "short.wav", tone(0.3))
    data = build_audio_data(config(tmp_path), seed=0)
    audio = data.report.audio
    assert [(n.path, n.value) for n in audio.short_files] == [("short.wav", 0.3)]
    assert sum(audio.chunks.values()) == 6
    assert any("dropped the trailing partial chunk" in n and "5 file(s)" in n for n in data.report.notes)


def test_rates_channels_and_durations_are_summarised(tmp_path: Path) -> None:
    write_tones(tmp_path, 4, seconds=1.0)
    write_audio(tmp_path / "stereo44.wav", np.stack([tone(2.0, rate=44100)] * 2, axis=1), rate=44100)
    audio = build_audio_data(config(tmp_path), seed=0).report.audio
    assert audio.source_sample_rates == {"16000": 4, "44100": 1}
    assert audio.channels == {"1": 4, "2": 1}
    assert audio.durations_seconds == pytest.approx({"min": 1.0, "max": 2.0, "mean": 1.2, "total": 6.0})


def test_nonfinite_samples_are_listed_with_their_split(tmp_path: Path) -> None:
    write_tones(tmp_path, 5, seconds=1.0)
    wave = tone(1.0)
    wave[5] = np.nan
    write_audio(tmp_path / "nan.wav", wave, subtype="FLOAT")
    data = build_audio_data(config(tmp_path), seed=0)
    [entry] = data.report.nonfinite_samples
    assert (entry.path, entry.nan_count, entry.inf_count) == ("nan.wav", 1, 0)
    assert entry.split in SPLITS and "nan.wav" in data.split(entry.split).chunk_sources


def test_builtin_tones_builds(tmp_path: Path) -> None:
    data = build_audio_data(DataConfig(source="builtin:tones", cache_dir=str(tmp_path)), seed=42)
    assert sum(data.report.audio.files.values()) == 36
    assert min(data.report.audio.files.values()) >= 3
    assert data.report.audio.chunk_leakage == [] and data.report.unreadable_files == []
