"""``builtin:tones`` (``tasks/vae/tones.py``) and the vae task's source resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from tests.vae_audio import write_tones
from trainpipe_trainer.data.sources import DataSourceError, resolve_source
from trainpipe_trainer.tasks.vae.audio_source import resolve_audio_source
from trainpipe_trainer.tasks.vae.tones import TONES_DIRNAME, TONES_FILES, TONES_RATE, ensure_tones


@pytest.fixture(scope="module")
def tones_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tones(tmp_path_factory.mktemp("cache"))


def test_tones_are_short_mono_16k_clips_of_four_kinds(tones_root: Path) -> None:
    files = sorted(tones_root.glob("*.wav"))
    assert len(files) == TONES_FILES == 36
    assert {f.name.split("_")[0] for f in files} == {"tone", "chord", "sweep", "burst"}
    for path in files:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (TONES_RATE, 1, "PCM_16")
        assert 1.5 <= info.duration <= 2.0
        data, _ = sf.read(str(path))
        assert 0.2 < abs(data).max() <= 1.0


def test_two_generations_are_byte_identical(tones_root: Path, tmp_path: Path) -> None:
    again = ensure_tones(tmp_path)
    assert again != tones_root
    first = {p.name: p.read_bytes() for p in tones_root.iterdir()}
    second = {p.name: p.read_bytes() for p in again.iterdir()}
    assert first == second


def test_tones_are_written_once_and_leave_no_staging_folder(tmp_path: Path) -> None:
    root = ensure_tones(tmp_path)
    assert root == tmp_path / TONES_DIRNAME
    marker = root / "tone_00.wav"
    marker.write_bytes(b"changed")
    assert ensure_tones(tmp_path) == root
    assert marker.read_bytes() == b"changed"  # the existing set was not rewritten
    assert [p.name for p in tmp_path.iterdir()] == [TONES_DIRNAME]


def test_cache_dir_defaults_to_the_trainpipe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINPIPE_CACHE", str(tmp_path / "env-cache"))
    assert ensure_tones(None) == tmp_path / "env-cache" / TONES_DIRNAME


def test_audio_source_resolves_tones_and_folders(tones_root: Path, tmp_path: Path) -> None:
    assert resolve_audio_source("builtin:tones", tones_root.parent) == tones_root
    write_tones(tmp_path / "mine", 1)
    assert resolve_audio_source(str(tmp_path / "mine")) == (tmp_path / "mine").absolute()
    assert resolve_audio_source((tmp_path / "mine").as_uri()) == (tmp_path / "mine").absolute()


def test_audio_source_refuses_image_builtins_naming_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="builtin:digits.*allowed: builtin:tones"):
        resolve_audio_source("builtin:digits", tmp_path)
    with pytest.raises(DataSourceError, match="does not exist.*allowed: builtin:tones, a local folder of audio"):
        resolve_audio_source(str(tmp_path / "missing"))


def test_classification_sources_do_not_know_tones(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="not a known builtin"):
        resolve_source("builtin:tones", tmp_path)
